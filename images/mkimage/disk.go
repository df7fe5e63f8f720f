package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/disklayout"
)

// ESP paths. GRUB's prefix is /EFI/tandem: it reads grub.cfg and grubenv
// from there on the partition it was loaded from.
const (
	espLoader  = "/EFI/BOOT/BOOTX64.EFI"
	espPrefix  = "/EFI/tandem"
	espConfig  = espPrefix + "/grub.cfg"
	espGrubenv = espPrefix + "/grubenv"
)

// grubModules are built into the EFI loader, so it needs nothing else.
func grubModules() []string {
	return []string{
		"part_gpt", "fat", "normal", "linux", "echo", "test", "configfile", "loadenv",
		"regexp", "search", "serial", "terminal", "efi_gop", "all_video", "sleep", "reboot", "halt", "cat", "ls",
	}
}

// grubConfig boots the slot named by tandem_slot in grubenv (A unless
// told otherwise), falling back to the other slot if that one does not
// load. The slots are found next to the ESP on the same disk by partition
// number, so a second Tandem disk in the machine cannot be picked by
// mistake.
func grubConfig(b *board.Board) string {
	slotA, _ := disklayout.Number(disklayout.NameSlotA)
	slotB, _ := disklayout.Number(disklayout.NameSlotB)
	entry := func(slot string, part int) string {
		return fmt.Sprintf(`menuentry "Tandem (slot %[1]s)" {
	linux ($tandem_disk,gpt%[2]d)%[3]s console=tty0 %[4]s tandem.slot=%[5]s panic=10
	initrd ($tandem_disk,gpt%[2]d)%[6]s
}
`, strings.ToUpper(slot), part, disklayout.SlotKernel, b.Console.KernelArg(), slot, disklayout.SlotInitramfs)
	}
	unit := strings.TrimPrefix(b.Console.Device, "ttyS")
	return fmt.Sprintf(`# Written by images/mkimage. Slot choice lives in grubenv (tandem_slot=a|b).
serial --unit=%s --speed=%d
terminal_input serial console
terminal_output serial console
set timeout=1
load_env --file %s
regexp --set=1:tandem_disk '^([^,]+)' "$root"
if [ "$tandem_slot" = "b" ]; then
	set default=1
	set fallback=0
else
	set default=0
	set fallback=1
fi
`, unit, b.Console.Baud, espGrubenv) + entry("a", slotA) + entry("b", slotB)
}

// grubenv is GRUB's environment block: exactly 1024 bytes, padded with #.
func grubenv(vars map[string]string) ([]byte, error) {
	var b strings.Builder
	b.WriteString("# GRUB Environment Block\n")
	for k, v := range vars {
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	if b.Len() > 1024 {
		return nil, fmt.Errorf("grubenv: %d bytes, over 1024", b.Len())
	}
	return []byte(b.String() + strings.Repeat("#", 1024-b.Len())), nil
}

// buildEFILoader makes GRUB's standalone EFI loader with grub-mkimage.
func buildEFILoader(out string) error {
	args := append([]string{"-O", "x86_64-efi", "-p", espPrefix, "-o", out}, grubModules()...)
	if o, err := exec.Command("grub-mkimage", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("grub-mkimage: %w\n%s", err, o)
	}
	return nil
}

// buildDisk writes the raw GPT disk image: the ESP with GRUB, slot A with
// the kernel and initramfs, an empty slot B, and a blank data partition
// that the first boot grows and formats.
func buildDisk(out string, b *board.Board, kernel, initramfs, version, efiLoader string) error {
	_ = os.Remove(out)
	size := disklayout.MinDiskSize()
	d, err := diskfs.Create(out, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	defer d.Close()
	tab, err := disklayout.Table(size)
	if err != nil {
		return err
	}
	if err := d.Partition(tab); err != nil {
		return fmt.Errorf("partition %s: %w", out, err)
	}

	env, err := grubenv(map[string]string{"tandem_slot": "a"})
	if err != nil {
		return err
	}
	if err := fillFAT(d, disklayout.NameESP, disklayout.LabelESP, map[string]source{
		espLoader:  fileSource(efiLoader),
		espConfig:  bytesSource(grubConfig(b)),
		espGrubenv: bytesSource(string(env)),
	}); err != nil {
		return err
	}
	if err := fillFAT(d, disklayout.NameSlotA, disklayout.LabelSlotA, map[string]source{
		disklayout.SlotKernel:    fileSource(kernel),
		disklayout.SlotInitramfs: fileSource(initramfs),
		disklayout.SlotVersion:   bytesSource(version + "\n"),
	}); err != nil {
		return err
	}
	return fillFAT(d, disklayout.NameSlotB, disklayout.LabelSlotB, nil)
}

// source is a file's content for a FAT file system.
type source func() (io.ReadCloser, error)

func fileSource(path string) source {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

func bytesSource(s string) source {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

// fillFAT makes a FAT32 file system on the named partition and writes files.
func fillFAT(d *disk.Disk, part, label string, files map[string]source) error {
	n, err := disklayout.Number(part)
	if err != nil {
		return err
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: n, FSType: filesystem.TypeFat32, VolumeLabel: label})
	if err != nil {
		return fmt.Errorf("FAT on %s: %w", part, err)
	}
	for name, src := range files {
		if dir := path.Dir(name); dir != "/" {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("%s: mkdir %s: %w", part, dir, err)
			}
		}
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("%s: create %s: %w", part, name, err)
		}
		r, err := src()
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("%s: write %s: %w", part, name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s: close %s: %w", part, name, err)
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
