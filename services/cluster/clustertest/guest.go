package clustertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	guestOnce sync.Once
	guestDir  string
	guestErr  error
)

// TestGuest builds the test guest (images/testguest: its kernel and
// initrd) once per test binary, into the checkout's build folder, and
// returns that folder: a VM manager's boot folder.
func TestGuest(tb testing.TB) string {
	tb.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		tb.Skip("qemu-system-x86_64 is not installed (make deps)")
	}
	guestOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			guestErr = err
			return
		}
		// One folder per checkout (one per process would leave a guest
		// behind on every run): built beside it, its files renamed into
		// it, so a QEMU of another test process keeps the files it has.
		base, err := BuildDir(root)
		if err != nil {
			guestErr = err
			return
		}
		guestDir = filepath.Join(base, "testguest")
		if guestErr = os.MkdirAll(guestDir, 0o700); guestErr != nil {
			return
		}
		tmp := filepath.Join(base, fmt.Sprintf("testguest.%d", os.Getpid()))
		defer os.RemoveAll(tmp)
		cmd := exec.Command("go", "run", "./images/mkimage", "-testguest", tmp)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			guestErr = fmt.Errorf("build the test guest: %v\n%s", err, out)
			return
		}
		entries, err := os.ReadDir(tmp)
		if err != nil {
			guestErr = err
			return
		}
		for _, e := range entries {
			if guestErr = os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(guestDir, e.Name())); guestErr != nil {
				return
			}
		}
	})
	if guestErr != nil {
		tb.Fatal(guestErr)
	}
	return guestDir
}

var (
	qemuOnce sync.Once
	qemuBin  string
	qemuErr  error
)

// TandemQEMU is Tandem's own QEMU build (scripts/qemu/build: built once
// per machine, then cached), which the image ships: COLO under TCG needs
// its fixes.
func TandemQEMU(tb testing.TB) string {
	tb.Helper()
	qemuOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			qemuErr = err
			return
		}
		cmd := exec.Command("scripts/qemu/build")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			qemuErr = fmt.Errorf("build Tandem's QEMU: %v\n%s", err, tail(string(out)))
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		qemuBin = filepath.Join(lines[len(lines)-1], "bin", "qemu-system-x86_64")
	})
	if qemuErr != nil {
		tb.Fatal(qemuErr)
	}
	return qemuBin
}

// moduleRoot is the repository's top folder.
func moduleRoot() (string, error) {
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(mod))), nil
}
