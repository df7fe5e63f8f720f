package main

import (
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/u-root/u-root/pkg/cpio"
)

// The test guest is the image's own kernel with a one-program initramfs
// (images/testguest): every VM test boots it, and the node image carries
// it under /usr/share/tandem/testguest for `make run`.

// testGuestModules are what the guest needs: its disk, its NIC, entropy.
var testGuestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "virtio_rng"}

// TestGuestDir is where the node image keeps the test guest.
const testGuestDir = "usr/share/tandem/testguest"

// buildTestGuest writes vmlinuz and initrd.gz for the test guest into dir.
func buildTestGuest(repo, kernelRoot, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "testguest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	initBin := filepath.Join(tmp, "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "./images/testguest")
	cmd.Dir, cmd.Env = repo, append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the test guest: %v\n%s", err, out)
	}
	src := filepath.Join(kernelRoot, "lib/modules", kernelRelease)
	ms, err := readModuleSet(src)
	if err != nil {
		return fmt.Errorf("kernel modules: %w", err)
	}
	mods, err := ms.closure(testGuestModules, "images/mkimage/testguest.go")
	if err != nil {
		return err
	}
	initData, err := os.ReadFile(initBin)
	if err != nil {
		return err
	}
	records := []cpio.Record{cpio.StaticFile("init", string(initData), 0o755)}
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(src, m))
		if err != nil {
			return err
		}
		records = append(records, cpio.StaticFile(filepath.Join("lib/modules", filepath.Base(m)), string(b), 0o644))
	}
	cpio.MakeAllReproducible(records)
	f, err := os.Create(filepath.Join(dir, "initrd.gz"))
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	rw := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecordsAndDirs(rw, records); err != nil {
		return fmt.Errorf("test guest initrd: %w", err)
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return copyFile(filepath.Join(kernelRoot, "boot", "vmlinuz-"+kernelRelease), filepath.Join(dir, "vmlinuz"))
}
