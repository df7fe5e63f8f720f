package disklayout

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/board"
)

// System is what a system disk carries: slot A's kernel and initramfs, and
// GRUB for both firmware types. Paths are of local files.
type System struct {
	Kernel    string
	Initramfs string
	Version   string
	Board     *board.Board // GRUB's config follows its serial console
	EFILoader string       // GRUB for UEFI (BOOTX64.EFI)
	BIOSCore  string       // GRUB's i386-pc core image, not yet placed
	BIOSBoot  string       // GRUB's MBR boot code (boot.img)
}

// A system disk is written in four steps, so that a disk is bootable only
// once everything on it has been read back and checked:
//
//	Wipe         the partition tables and boot code go: nothing boots from it
//	WriteSystem  the partitions' contents, at the layout's offsets
//	VerifySystem read back from the disk, compared by SHA-256
//	Seal         the MBR boot code and the GPT: now it boots
//
// A disk whose writing stopped anywhere before Seal has no partition
// table and no boot signature: neither BIOS nor UEFI boots it, and the
// installer starts again from Wipe.

// Wipe zeroes the first and last MiB of the disk: the MBR and its boot
// code, both GPT headers and partition arrays.
func Wipe(devPath string) error {
	d, _, err := openLayout(devPath)
	if err != nil {
		return err
	}
	defer d.Close()
	f, err := d.Backend.Writable()
	if err != nil {
		return err
	}
	zero := make([]byte, Align)
	if _, err := f.WriteAt(zero, 0); err != nil {
		return fmt.Errorf("wipe %s: %w", devPath, err)
	}
	if _, err := f.WriteAt(zero, d.Size-Align); err != nil {
		return fmt.Errorf("wipe %s: %w", devPath, err)
	}
	return syncDisk(d)
}

// WriteSystem fills the partitions of the layout for the disk's size,
// without writing the partition table: the ESP (GRUB for UEFI, its config
// and environment), slot A (kernel, initramfs, version), an empty slot B,
// GRUB's core image in the BIOS boot partition, and zeros over the start
// of the data partition (the first boot formats it, or the installer does).
func WriteSystem(devPath string, sys System) error {
	d, tab, err := openLayout(devPath)
	if err != nil {
		return err
	}
	defer d.Close()
	env, err := Grubenv(map[string]string{"tandem_slot": "a"})
	if err != nil {
		return err
	}
	if err := fillFAT(d, NameESP, LabelESP, []file{
		{ESPLoader, fileSource(sys.EFILoader)},
		{ESPConfig, bytesSource([]byte(GrubConfig(sys.Board)))},
		{ESPGrubenv, bytesSource(env)},
	}); err != nil {
		return err
	}
	if err := fillFAT(d, NameSlotA, LabelSlotA, []file{
		{SlotKernel, fileSource(sys.Kernel)},
		{SlotInitramfs, fileSource(sys.Initramfs)},
		{SlotVersion, bytesSource([]byte(sys.Version + "\n"))},
	}); err != nil {
		return err
	}
	if err := fillFAT(d, NameSlotB, LabelSlotB, nil); err != nil {
		return err
	}
	core, err := placedCore(sys.BIOSCore, tab)
	if err != nil {
		return err
	}
	f, err := d.Backend.Writable()
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(core, partStart(tab, NameBIOSBoot)); err != nil {
		return fmt.Errorf("write GRUB's core image: %w", err)
	}
	if _, err := f.WriteAt(make([]byte, Align), partStart(tab, NameData)); err != nil {
		return fmt.Errorf("clear the data partition's start: %w", err)
	}
	return syncDisk(d)
}

// VerifySystem reads what WriteSystem wrote back from the disk (the page
// cache dropped first) and compares it with the sources by SHA-256.
func VerifySystem(devPath string, sys System) error {
	d, tab, err := openLayout(devPath)
	if err != nil {
		return err
	}
	defer d.Close()
	checks := []struct {
		part, name, source string
	}{
		{NameESP, ESPLoader, sys.EFILoader},
		{NameSlotA, SlotKernel, sys.Kernel},
		{NameSlotA, SlotInitramfs, sys.Initramfs},
	}
	for _, c := range checks {
		want, err := hashFile(c.source)
		if err != nil {
			return err
		}
		n, _ := Number(c.part)
		fs, err := d.GetFilesystem(n)
		if err != nil {
			return fmt.Errorf("read back %s: %w", c.part, err)
		}
		f, err := fs.OpenFile(c.name, os.O_RDONLY)
		if err != nil {
			return fmt.Errorf("read back %s%s: %w", c.part, c.name, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("read back %s%s: %w", c.part, c.name, err)
		}
		if got := fmt.Sprintf("%x", h.Sum(nil)); got != want {
			return fmt.Errorf("%s%s reads back as sha256 %s, not %s: the disk does not keep what is written to it", c.part, c.name, got, want)
		}
	}
	core, err := placedCore(sys.BIOSCore, tab)
	if err != nil {
		return err
	}
	back := make([]byte, len(core))
	if _, err := d.Backend.ReadAt(back, partStart(tab, NameBIOSBoot)); err != nil {
		return fmt.Errorf("read back GRUB's core image: %w", err)
	}
	if !bytes.Equal(back, core) {
		return errors.New("GRUB's core image reads back different: the disk does not keep what is written to it")
	}
	return nil
}

// Seal writes GRUB's MBR boot code and the GPT (protective MBR, both
// headers and partition arrays), then reads the table back.
func Seal(devPath string, sys System) error {
	d, tab, err := openLayout(devPath)
	if err != nil {
		return err
	}
	defer d.Close()
	mbr, err := os.ReadFile(sys.BIOSBoot)
	if err != nil {
		return fmt.Errorf("GRUB's boot code: %w", err)
	}
	code, err := bootCode(mbr, uint64(partStart(tab, NameBIOSBoot)/SectorSize))
	if err != nil {
		return err
	}
	f, err := d.Backend.Writable()
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(code, 0); err != nil {
		return fmt.Errorf("write the MBR boot code: %w", err)
	}
	if err := d.Partition(tab); err != nil {
		return fmt.Errorf("write the partition table: %w", err)
	}
	if err := syncDisk(d); err != nil {
		return err
	}
	back, err := d.GetPartitionTable()
	if err != nil {
		return fmt.Errorf("read the partition table back: %w", err)
	}
	g, ok := back.(*gpt.Table)
	if !ok || len(g.Partitions) < len(Parts()) {
		return errors.New("the partition table reads back without the layout's partitions")
	}
	for i, p := range Parts() {
		if g.Partitions[i].Name != p.Name || g.Partitions[i].Start != tab.Partitions[i].Start {
			return fmt.Errorf("partition %d reads back as %q at sector %d", i+1, g.Partitions[i].Name, g.Partitions[i].Start)
		}
	}
	return nil
}

// GRUB's boot sector (boot.img), as include/grub/i386/pc/boot.h lays it
// out: where the core image starts, which drive to read it from, and a
// check for BIOSes that pass a wrong drive number.
const (
	mbrCodeEnd     = 0x1b8 // boot code ends where the disk signature starts
	mbrKernelLBA   = 0x5c  // uint64: the core image's first sector
	mbrBootDrive   = 0x64  // 0xff: the drive the BIOS booted from
	mbrDriveCheck  = 0x66  // a jump over the drive check; NOPs for hard disks
	blocklistSize  = 12    // diskboot.img's last entry: start uint64, sectors uint16, segment uint16
	coreMaxSectors = (1 << 20) / SectorSize
)

// bootCode is boot.img's code patched to load a core image at coreLBA.
func bootCode(bootImg []byte, coreLBA uint64) ([]byte, error) {
	if len(bootImg) != SectorSize {
		return nil, fmt.Errorf("GRUB's boot code is %d bytes, not %d", len(bootImg), SectorSize)
	}
	code := bytes.Clone(bootImg[:mbrCodeEnd])
	binary.LittleEndian.PutUint64(code[mbrKernelLBA:], coreLBA)
	code[mbrBootDrive] = 0xff
	code[mbrDriveCheck], code[mbrDriveCheck+1] = 0x90, 0x90
	return code, nil
}

// placedCore is the core image with its first sector's block list
// pointing at the rest of it, in the table's BIOS boot partition.
func placedCore(corePath string, tab *gpt.Table) ([]byte, error) {
	core, err := os.ReadFile(corePath)
	if err != nil {
		return nil, fmt.Errorf("GRUB's core image: %w", err)
	}
	sectors := (len(core) + SectorSize - 1) / SectorSize
	if len(core) < 2*SectorSize || sectors > coreMaxSectors {
		return nil, fmt.Errorf("GRUB's core image is %d bytes: want 1 KiB to 1 MiB (the BIOS boot partition)", len(core))
	}
	core = append(core, make([]byte, sectors*SectorSize-len(core))...)
	coreLBA := uint64(partStart(tab, NameBIOSBoot) / SectorSize)
	bl := core[SectorSize-blocklistSize:]
	binary.LittleEndian.PutUint64(bl[0:], coreLBA+1)
	binary.LittleEndian.PutUint16(bl[8:], uint16(sectors-1))
	return core, nil
}

// partStart is a partition's offset in bytes.
func partStart(t *gpt.Table, name string) int64 {
	for _, p := range t.Partitions {
		if p.Name == name {
			return int64(p.Start) * SectorSize
		}
	}
	return -1
}

// openLayout opens a disk (a block device, or an image file) for writing,
// with the layout's table for its size attached but not written: the
// steps find the partitions by it whether or not the disk has a table
// yet. O_EXCL makes the kernel refuse a block device that is mounted or
// otherwise in use.
func openLayout(devPath string) (*disk.Disk, *gpt.Table, error) {
	d, err := diskfs.Open(devPath, diskfs.WithOpenMode(diskfs.ReadWriteExclusive), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", devPath, err)
	}
	tab, err := Table(d.Size)
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("%s: %w", devPath, err)
	}
	d.Table = tab
	return d, tab, nil
}

// syncDisk flushes the disk and drops its cached pages, so that what is
// read next comes from the disk, not from memory.
func syncDisk(d *disk.Disk) error {
	f, err := d.Backend.Sys()
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return nil
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// file is one file of a FAT file system and where its content comes from.
type file struct {
	name string
	src  func() (io.ReadCloser, error)
}

func fileSource(p string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return os.Open(p) }
}

func bytesSource(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// fillFAT makes a FAT32 file system on the named partition and writes files.
func fillFAT(d *disk.Disk, part, label string, files []file) error {
	n, err := Number(part)
	if err != nil {
		return err
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: n, FSType: filesystem.TypeFat32, VolumeLabel: label})
	if err != nil {
		return fmt.Errorf("FAT on %s: %w", part, err)
	}
	for _, fl := range files {
		if dir := path.Dir(fl.name); dir != "/" {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("%s: mkdir %s: %w", part, dir, err)
			}
		}
		f, err := fs.OpenFile(fl.name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("%s: create %s: %w", part, fl.name, err)
		}
		r, err := fl.src()
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("%s: write %s: %w", part, fl.name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s: close %s: %w", part, fl.name, err)
		}
	}
	return nil
}

// ExtractSlot copies a system slot's kernel, initramfs and version from
// the disk at devPath into dir (read-only on the disk): what a running
// node hands to the machines it installs.
func ExtractSlot(devPath, slot, dir string) error {
	d, err := diskfs.Open(devPath, diskfs.WithOpenMode(diskfs.ReadOnly), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return fmt.Errorf("open %s: %w", devPath, err)
	}
	defer d.Close()
	n, err := Number(slot)
	if err != nil {
		return err
	}
	fs, err := d.GetFilesystem(n)
	if err != nil {
		return fmt.Errorf("%s on %s: %w", slot, devPath, err)
	}
	for _, name := range []string{SlotKernel, SlotInitramfs, SlotVersion} {
		if err := extractFile(fs, name, filepath.Join(dir, path.Base(name))); err != nil {
			return fmt.Errorf("%s%s on %s: %w", slot, name, devPath, err)
		}
	}
	return nil
}

func extractFile(fs filesystem.FileSystem, name, to string) error {
	src, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
