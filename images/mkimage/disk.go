package main

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/disklayout"
)

// bootLoaders makes GRUB's two standalone loaders with grub-mkimage,
// each with every module it needs built in: BOOTX64.EFI for UEFI, and
// for BIOS the core image (for the BIOS boot partition) with Debian's
// boot.img beside it (the MBR's code). They go into dir under the names
// the image carries them by.
func bootLoaders(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, l := range []struct{ platform, out string }{
		{"x86_64-efi", disklayout.BootEFI},
		{"i386-pc", disklayout.BootBIOSCore},
	} {
		args := append([]string{"-O", l.platform, "-p", disklayout.GrubPrefix(l.platform), "-o", filepath.Join(dir, path.Base(l.out))},
			disklayout.GrubModules(l.platform)...)
		if o, err := exec.Command("grub-mkimage", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("grub-mkimage -O %s: %w\n%s", l.platform, err, o)
		}
	}
	return copyFile("/usr/lib/grub/i386-pc/boot.img", filepath.Join(dir, path.Base(disklayout.BootBIOSMBR)))
}

// buildDisk writes the raw GPT disk image the way the installer writes a
// disk (images/disklayout): bootable by UEFI and BIOS, slot A holding the
// kernel and initramfs, an empty slot B, and a blank data partition that
// the first boot grows and formats.
func buildDisk(out string, sys disklayout.System) error {
	_ = os.Remove(out)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	err = f.Truncate(disklayout.MinDiskSize())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	for _, step := range []func(string, disklayout.System) error{
		func(p string, _ disklayout.System) error { return disklayout.Wipe(p) },
		disklayout.WriteSystem, disklayout.VerifySystem, disklayout.Seal,
	} {
		if err := step(out, sys); err != nil {
			return err
		}
	}
	return nil
}

// writePXEBundle puts what a PXE server hands out in dir: the kernel, the
// initramfs and an iPXE script that boots them (paths relative to the
// script's URL).
func writePXEBundle(dir string, b *board.Board, kernel, initramfs string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	k, i := filepath.Base(kernel), filepath.Base(initramfs)
	for src, name := range map[string]string{kernel: k, initramfs: i} {
		dst := filepath.Join(dir, name)
		_ = os.Remove(dst)
		if err := os.Link(src, dst); err != nil {
			if err := copyFile(src, dst); err != nil {
				return err
			}
		}
	}
	// initrd= on the kernel line lets UEFI kernels find the initrd iPXE loaded.
	script := fmt.Sprintf("#!ipxe\nkernel %s initrd=%s console=tty0 %s panic=10\ninitrd %s\nboot\n", k, i, b.Console.KernelArg(), i)
	return os.WriteFile(filepath.Join(dir, "boot.ipxe"), []byte(script), 0o644)
}
