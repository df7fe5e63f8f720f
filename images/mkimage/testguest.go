package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/u-root/u-root/pkg/cpio"
)

// The test guest is the image's own kernel with a one-program initramfs
// (images/testguest): every VM test boots it, and the node image carries
// it under /usr/share/tandem/testguest for `make run`. Its kernel is the
// bzImage's payload unpacked to the ELF vmlinux, which QEMU starts at its
// PVH entry point: no firmware's real-mode loader and no decompression in
// the guest, which under TCG is more than half of the guest's boot (5.8 s
// down to 3.2 s; twenty times that with QEMU inside a TCG node).

// testGuestModules are what the guest needs: its disk, its NIC, entropy,
// and the ACPI power button as an input device.
var testGuestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "button", "evdev"}

// TestGuestDir is where the node image keeps the test guest.
const testGuestDir = "usr/share/tandem/testguest"

// buildTestGuest writes vmlinux and initrd.gz for the test guest into dir.
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
	// The guest loads its modules in the order of their names: the
	// number in front is the closure's load order.
	for i, m := range mods {
		b, err := os.ReadFile(filepath.Join(src, m))
		if err != nil {
			return err
		}
		name := fmt.Sprintf("%02d-%s", i, filepath.Base(m))
		records = append(records, cpio.StaticFile(filepath.Join("lib/modules", name), string(b), 0o644))
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
	return unpackVmlinux(filepath.Join(kernelRoot, "boot", "vmlinuz-"+kernelRelease), filepath.Join(dir, "vmlinux"))
}

// unpackVmlinux writes the ELF kernel inside a bzImage: its setup header
// says where the compressed payload lies (Documentation/arch/x86/boot.rst:
// setup_sects at 0x1f1, payload_offset and payload_length at 0x248, from
// the start of the protected-mode code); Debian compresses it with xz.
func unpackVmlinux(bzImage, dst string) error {
	b, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		return fmt.Errorf("%s: not a bzImage (no HdrS setup header)", bzImage)
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects + 1) * 512
	off := start + int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if off+n > len(b) || n < 6 {
		return fmt.Errorf("%s: payload at %d+%d lies outside the file (%d bytes)", bzImage, off, n, len(b))
	}
	payload := b[off : off+n]
	if !bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")) {
		return fmt.Errorf("%s: payload is not xz (starts % x); unpack it by hand", bzImage, payload[:6])
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	var stderr bytes.Buffer
	cmd := exec.Command("xz", "--decompress", "--stdout", "--single-stream")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(payload), out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("unpack %s: xz: %w: %s", bzImage, err, stderr.Bytes())
	}
	if err := out.Close(); err != nil {
		return err
	}
	head := make([]byte, 4)
	if f, err := os.Open(dst); err == nil {
		_, _ = f.Read(head)
		f.Close()
	}
	if string(head) != "\x7fELF" {
		return fmt.Errorf("unpack %s: the payload is not an ELF kernel", bzImage)
	}
	return nil
}
