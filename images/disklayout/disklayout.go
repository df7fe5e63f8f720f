// Package disklayout is the partition layout of a Tandem system disk, kept
// for good: the image builder writes it, the supervisor finds and grows the
// data partition in it, the installer writes it to new nodes, and updates
// stream into whichever system slot is not running.
//
//	1  tandem-bios  1 MiB    BIOS boot partition (GRUB's core image on BIOS machines)
//	2  tandem-esp   64 MiB   EFI system partition: GRUB, its config and boot environment
//	3  tandem-a     512 MiB  system slot A: FAT, kernel and initramfs
//	4  tandem-b     512 MiB  system slot B: the same, for A/B updates
//	5  tandem-data  the rest persistent data (ext4, made at first boot)
//
// Partitions are found by their GPT name, never by number or device.
package disklayout

import (
	"errors"
	"fmt"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// GPT partition names.
const (
	NameBIOSBoot = "tandem-bios"
	NameESP      = "tandem-esp"
	NameSlotA    = "tandem-a"
	NameSlotB    = "tandem-b"
	NameData     = "tandem-data"
)

// FAT volume labels of the partitions that carry one.
const (
	LabelESP   = "TANDEM-ESP"
	LabelSlotA = "TANDEM-A"
	LabelSlotB = "TANDEM-B"
)

// Files in a system slot.
const (
	SlotKernel    = "/vmlinuz"
	SlotInitramfs = "/initramfs.cpio.zst"
	SlotVersion   = "/version"
)

const (
	// SectorSize is the logical sector size the layout is written with.
	SectorSize = 512
	// Align is where every partition starts: a multiple of 1 MiB.
	Align = 1 << 20
	// MinData is the smallest data partition the layout accepts; the image
	// ships with this much and the first boot grows it to fill the disk.
	MinData = 256 << 20
)

// Part is one partition of the layout.
type Part struct {
	Name string
	Type gpt.Type
	Size int64 // bytes; 0 for the last, which takes the rest
}

// Parts returns the layout, in partition-number order.
func Parts() []Part {
	return []Part{
		{Name: NameBIOSBoot, Type: gpt.BIOSBoot, Size: 1 << 20},
		{Name: NameESP, Type: gpt.EFISystemPartition, Size: 64 << 20},
		{Name: NameSlotA, Type: gpt.LinuxFilesystem, Size: 512 << 20},
		{Name: NameSlotB, Type: gpt.LinuxFilesystem, Size: 512 << 20},
		{Name: NameData, Type: gpt.LinuxFilesystem},
	}
}

// Number returns the 1-based partition number of a named partition.
func Number(name string) (int, error) {
	for i, p := range Parts() {
		if p.Name == name {
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("no partition %q in the layout", name)
}

// gptReserve is what a GPT takes at the end of the disk: the backup
// partition array (128 entries of 128 bytes) and header.
const gptReserve = 33 * SectorSize

// MinDiskSize is the smallest disk the layout fits on.
func MinDiskSize() int64 {
	size := int64(Align) // the protective MBR and primary GPT live before the first partition
	for _, p := range Parts() {
		size += p.Size
	}
	return size + MinData + Align // data, then room for the backup GPT, aligned
}

// Table returns the partition table for a disk of the given size.
func Table(diskSize int64) (*gpt.Table, error) {
	if diskSize < MinDiskSize() {
		return nil, fmt.Errorf("disk of %d MiB is smaller than the %d MiB the layout needs", diskSize>>20, MinDiskSize()>>20)
	}
	t := &gpt.Table{LogicalSectorSize: SectorSize, PhysicalSectorSize: SectorSize, ProtectiveMBR: true}
	start := int64(Align)
	for _, p := range Parts() {
		size := p.Size
		if size == 0 {
			size = dataEnd(diskSize) - start
		}
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Start: uint64(start / SectorSize),
			End:   uint64((start+size)/SectorSize - 1),
			Size:  uint64(size),
			Type:  p.Type,
			Name:  p.Name,
		})
		start += size
	}
	return t, nil
}

// Extent returns where a partition of the layout lies on a disk of the
// given size, in bytes: the installer fills the data partition before
// the table that names it is written.
func Extent(diskSize int64, name string) (offset, size int64, err error) {
	t, err := Table(diskSize)
	if err != nil {
		return 0, 0, err
	}
	for _, p := range t.Partitions {
		if p.Name == name {
			return int64(p.Start) * SectorSize, int64(p.Size), nil
		}
	}
	return 0, 0, fmt.Errorf("the layout has no partition %q", name)
}

// dataEnd is where the last partition ends on a disk of the given size:
// before the backup GPT, rounded down to the alignment.
func dataEnd(diskSize int64) int64 {
	return (diskSize - gptReserve) / Align * Align
}

// ErrNotGrowable means the data partition cannot take more of the disk.
var ErrNotGrowable = errors.New("data partition cannot grow")

// GrowData extends the data partition of a table read from a disk of the
// given size to the end of the disk, and moves the backup GPT there. The
// data partition must be the last one. It returns ErrNotGrowable when
// there is less than one alignment unit to gain.
func GrowData(t *gpt.Table, diskSize int64) (oldSize, newSize int64, err error) {
	var data *gpt.Partition
	var last uint64
	for _, p := range t.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		if p.End > last {
			last = p.End
		}
		if p.Name == NameData {
			data = p
		}
	}
	if data == nil {
		return 0, 0, fmt.Errorf("no %s partition", NameData)
	}
	if data.End != last {
		return 0, 0, fmt.Errorf("%s is not the last partition: %w", NameData, ErrNotGrowable)
	}
	oldSize = int64(data.End-data.Start+1) * SectorSize
	end := dataEnd(diskSize)
	newSize = end - int64(data.Start)*SectorSize
	if newSize-oldSize < Align {
		return oldSize, oldSize, ErrNotGrowable
	}
	data.End = uint64(end/SectorSize - 1)
	data.Size = uint64(newSize)
	if err := t.Repair(uint64(diskSize)); err != nil {
		return 0, 0, err
	}
	return oldSize, newSize, nil
}
