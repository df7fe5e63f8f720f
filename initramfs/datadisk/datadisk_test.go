package datadisk

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	ext4 := make([]byte, 4096)
	binary.LittleEndian.PutUint16(ext4[1024+56:], 0xEF53)
	junk := make([]byte, 4096)
	junk[4000] = 1
	tests := []struct {
		name string
		head []byte
		want Content
	}{
		{"zeros", make([]byte, 1<<20), Blank},
		{"ext4 superblock", ext4, Ext4},
		{"anything else", junk, Unknown},
		{"short and empty", nil, Blank},
	}
	for _, tt := range tests {
		if got := classify(tt.head); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// fakeBlock builds /sys/class/block entries: links to directories nested
// the way the kernel nests partitions inside their disk.
func fakeBlock(t *testing.T, parts map[string]string) string {
	root := t.TempDir()
	class := filepath.Join(root, "class/block")
	os.MkdirAll(class, 0o755)
	for dev, uevent := range parts {
		dir := filepath.Join(root, "devices/virtual", dev)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "uevent"), []byte(uevent), 0o644)
		os.Symlink(dir, filepath.Join(class, filepath.Base(dev)))
	}
	return class
}

func TestFindPartition(t *testing.T) {
	class := fakeBlock(t, map[string]string{
		"vda":      "MAJOR=254\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda/vda2": "DEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=tandem-esp\n",
		"vda/vda5": "DEVNAME=vda5\nDEVTYPE=partition\nPARTN=5\nPARTNAME=tandem-data\n",
	})
	part, disk, err := FindPartition(class, "tandem-data")
	if err != nil || part != "vda5" || disk != "vda" {
		t.Errorf("FindPartition = %q, %q, %v", part, disk, err)
	}
	if _, _, err := FindPartition(class, "tandem-b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing partition: %v", err)
	}
}

func TestTwoDataPartitionsAreRefused(t *testing.T) {
	class := fakeBlock(t, map[string]string{
		"vda/vda5": "DEVTYPE=partition\nPARTNAME=tandem-data\n",
		"sdb/sdb5": "DEVTYPE=partition\nPARTNAME=tandem-data\n",
	})
	_, _, err := FindPartition(class, "tandem-data")
	if err == nil || !strings.Contains(err.Error(), "remove the disk") {
		t.Errorf("two data partitions: %v", err)
	}
}
