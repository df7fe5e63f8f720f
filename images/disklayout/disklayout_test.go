package disklayout

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

func TestTableIsAlignedAndFillsTheDisk(t *testing.T) {
	const size = 4 << 30
	tab, err := Table(size)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != len(Parts()) {
		t.Fatalf("%d partitions", len(tab.Partitions))
	}
	prevEnd := uint64(0)
	for i, p := range tab.Partitions {
		if (p.Start*SectorSize)%Align != 0 {
			t.Errorf("partition %d (%s) starts at sector %d, not 1 MiB aligned", i+1, p.Name, p.Start)
		}
		if p.Start <= prevEnd && i > 0 {
			t.Errorf("partition %d overlaps the one before", i+1)
		}
		if (p.End-p.Start+1)*SectorSize != p.Size {
			t.Errorf("partition %d: size %d does not match its sectors", i+1, p.Size)
		}
		prevEnd = p.End
	}
	data := tab.Partitions[4]
	if end := int64(data.End+1) * SectorSize; size-end < gptReserve || size-end > gptReserve+Align {
		t.Errorf("data ends %d bytes before the disk end", size-end)
	}
	if n, _ := Number(NameData); n != 5 {
		t.Errorf("data is partition %d", n)
	}
}

func TestTooSmallDisk(t *testing.T) {
	if _, err := Table(MinDiskSize() - 1); err == nil {
		t.Error("a disk below the minimum was accepted")
	}
	if _, err := Table(MinDiskSize()); err != nil {
		t.Errorf("minimum disk: %v", err)
	}
}

// writeImage writes the layout to a new file of the given size.
func writeImage(t *testing.T, path string, size int64) {
	t.Helper()
	d, err := diskfs.Create(path, size, diskfs.SectorSize512)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tab, err := Table(size)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(tab); err != nil {
		t.Fatal(err)
	}
}

// readTable reads the GPT back from a file.
func readTable(t *testing.T, path string) (*gpt.Table, int64) {
	t.Helper()
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	return pt.(*gpt.Table), d.Size
}

func TestGrowDataAfterTheDiskGrew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	small := MinDiskSize()
	writeImage(t, path, small)
	// Flashing the image onto a bigger disk: the backup GPT is now in the
	// middle and the data partition small.
	if err := os.Truncate(path, small+(1<<30)); err != nil {
		t.Fatal(err)
	}
	tab, size := readTable(t, path)
	oldSize, newSize, err := GrowData(tab, size)
	if err != nil {
		t.Fatal(err)
	}
	if newSize-oldSize < (1<<30)-Align {
		t.Errorf("grew from %d to %d", oldSize, newSize)
	}
	d, err := diskfs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(tab); err != nil {
		t.Fatal(err)
	}
	d.Close()

	again, size := readTable(t, path)
	if err := again.Verify(mustOpen(t, path), uint64(size)); err != nil {
		t.Errorf("table after growing does not verify: %v", err)
	}
	if got := int64(again.Partitions[4].Size); got != newSize {
		t.Errorf("data partition %d bytes after reading back, want %d", got, newSize)
	}
	// A second boot finds nothing to grow.
	if _, _, err := GrowData(again, size); !errors.Is(err, ErrNotGrowable) {
		t.Errorf("second grow: %v, want ErrNotGrowable", err)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
