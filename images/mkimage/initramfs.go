package main

import (
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// tandemBinary is Tandem's multi-call binary in the image; each of its
// commands is a link to it in the same directory.
const tandemBinary = "/usr/bin/tandem"

// stageTandem builds the multi-call binary into stage and links each of
// its commands to it, returning the command names.
func stageTandem(repo, stage string) ([]string, error) {
	bin := filepath.Join(stage, tandemBinary)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./initramfs/cmd/tandem")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build tandem: %w\n%s", err, out)
	}
	out, err := exec.Command(bin, "-commands").Output()
	if err != nil {
		return nil, fmt.Errorf("tandem -commands: %w", err)
	}
	names := strings.Fields(string(out))
	for _, n := range names {
		if err := os.Symlink(filepath.Base(tandemBinary), filepath.Join(filepath.Dir(bin), n)); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// hostFiles are binaries taken from the build machine's Debian packages;
// u-root copies their shared libraries along. The emulator is not among
// them: the image ships Tandem's own build (tandemQEMU).
func hostFiles() []string {
	return []string{
		"/usr/bin/qemu-img",
		"/usr/sbin/mke2fs",
		"/usr/sbin/e2fsck",
		"/etc/mke2fs.conf",
		// The iPXE loaders the provisioning server hands PXE ROMs by TFTP.
		"/usr/lib/ipxe/undionly.kpxe",
		"/usr/lib/ipxe/snponly.efi",
	}
}

// imageQEMU is where the image's VM manager finds the emulator.
const imageQEMU = "/usr/bin/qemu-system-x86_64"

// tandemQEMU builds Tandem's QEMU (scripts/qemu/build: Debian's 7.2 with
// our COLO fixes; cached, so only a first build takes minutes) and
// returns its emulator binary. Its TCG is built in, not a module, and its
// firmware path is the folders stageQEMUData fills.
func tandemQEMU(repo string, log logf) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "scripts", "qemu", "build"))
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("Tandem's QEMU (scripts/qemu/build): %w\n%s", err, lastLines(string(out), 20))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	prefix := strings.TrimSpace(lines[len(lines)-1])
	bin := filepath.Join(prefix, "bin", "qemu-system-x86_64")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("Tandem's QEMU: %w", err)
	}
	log("QEMU: %s", bin)
	return bin, nil
}

// qemuDataGlobs are the firmware and data files QEMU needs to run x86
// guests, in the three directories Debian's QEMU searches: SeaBIOS and VGA
// ROMs, iPXE NIC ROMs, keymaps for VNC, firmware descriptors, OVMF for
// UEFI guests and the small boot ROMs.
func qemuDataGlobs() []string {
	return []string{
		"/usr/share/seabios/bios-256k.bin", "/usr/share/seabios/bios.bin", "/usr/share/seabios/vgabios*.bin",
		"/usr/lib/ipxe/qemu/efi-*.rom", "/usr/lib/ipxe/qemu/pxe-*.rom",
		"/usr/share/qemu/kvmvapic.bin", "/usr/share/qemu/linuxboot*.bin", "/usr/share/qemu/multiboot*.bin",
		"/usr/share/qemu/pvh.bin", "/usr/share/qemu/qboot.rom", "/usr/share/qemu/keymaps/*",
		"/usr/share/qemu/firmware/*", "/usr/share/qemu/OVMF.fd",
	}
}

// urootCommands reads the u-root commands to ship from the imports of
// initramfs/commands.go, the one list.
func urootCommands(repo string) ([]string, error) {
	path := filepath.Join(repo, "initramfs", "commands.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
	if err != nil {
		return nil, fmt.Errorf("u-root command list: %w", err)
	}
	var cmds []string
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, p)
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%s imports no commands", path)
	}
	return cmds, nil
}

// stageQEMUData copies QEMU's data files into stage with every symlink
// resolved (Debian links ROMs to other packages' directories).
func stageQEMUData(stage string) (int, error) {
	n := 0
	for _, g := range qemuDataGlobs() {
		matches, err := filepath.Glob(g)
		if err != nil {
			return n, err
		}
		if len(matches) == 0 {
			return n, fmt.Errorf("QEMU data %s: not found (is qemu-system-x86 installed?)", g)
		}
		for _, m := range matches {
			real, err := filepath.EvalSymlinks(m)
			if err != nil {
				return n, fmt.Errorf("QEMU data %s: %w", m, err)
			}
			if st, err := os.Stat(real); err != nil || st.IsDir() {
				continue
			}
			if err := copyFile(real, filepath.Join(stage, m)); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// buildInitramfs runs u-root in busybox mode: the u-root commands, ours,
// tandem-init as uinit, the staged tree and the host files.
func buildInitramfs(repo, cache, stage, qemuBin, out string, log logf) error {
	uroot, err := urootBinary(repo, cache)
	if err != nil {
		return err
	}
	cmds, err := urootCommands(repo)
	if err != nil {
		return err
	}
	tmp := filepath.Join(cache, "uroot-tmp")
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	args := []string{
		"-o", out,
		"-tmp-dir", tmp,
		"-initcmd", "init",
		"-uinitcmd", filepath.Join(filepath.Dir(tandemBinary), "tandem-init"),
		"-defaultsh", "gosh",
		// gosh's plain line mode: the terminal's own line editing, no
		// screen-drawing editor whose queries are noise on a serial line.
		"-go-build-tags", "goshsmall",
	}
	entries, err := os.ReadDir(stage)
	if err != nil {
		return err
	}
	for _, e := range entries {
		args = append(args, "-files", filepath.Join(stage, e.Name())+":"+e.Name())
	}
	for _, f := range hostFiles() {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("host file for the image: %w", err)
		}
		args = append(args, "-files", f+":"+strings.TrimPrefix(f, "/"))
	}
	// An explicit file, not part of the staged tree: u-root copies the
	// shared libraries of the files it is given.
	args = append(args, "-files", qemuBin+":"+strings.TrimPrefix(imageQEMU, "/"))
	args = append(args, cmds...)

	log("u-root: %d u-root commands, %d host files", len(cmds), len(hostFiles()))
	cmd := exec.Command(uroot, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("u-root: %w\n%s", err, lastLines(string(out), 30))
	}
	return nil
}

// urootBinary installs the u-root builder at the version go.mod pins.
func urootBinary(repo, cache string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/u-root/u-root").Output()
	if err != nil {
		return "", fmt.Errorf("u-root version from go.mod: %w", err)
	}
	version := strings.TrimSpace(string(out))
	bin := filepath.Join(cache, "bin", "u-root-"+version)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	gobin := filepath.Join(cache, "bin", "u-root-build")
	cmd := exec.Command("go", "install", "github.com/u-root/u-root@"+version)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install u-root@%s: %w\n%s", version, err, out)
	}
	if err := os.Rename(filepath.Join(gobin, "u-root"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// compress writes zstd-compressed src to dst. The kernel decompresses
// zstd initramfs images itself.
func compress(src, dst string) error {
	cmd := exec.Command("zstd", "-q", "-f", "-T0", "-19", src, "-o", dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("zstd: %w\n%s", err, out)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
