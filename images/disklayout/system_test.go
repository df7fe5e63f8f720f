package disklayout

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/tandemhci/tandem/board"
)

// testSystem makes small stand-ins for the kernel, the initramfs and the
// loaders: the writer treats them as bytes.
func testSystem(t *testing.T) System {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, size int, fill byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{fill}, size), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return System{
		Kernel: write("vmlinuz", 300<<10, 'k'), Initramfs: write("initramfs", 700<<10, 'i'), Version: "test",
		Board:     &board.Board{Console: board.Console{Device: "ttyS0", Baud: 115200}},
		EFILoader: write("BOOTX64.EFI", 64<<10, 'e'), BIOSCore: write("core.img", 40<<10+17, 'c'), BIOSBoot: write("boot.img", 512, 'b'),
	}
}

func newDiskFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func bootable(t *testing.T, p string) bool {
	t.Helper()
	b := make([]byte, 512)
	f := mustOpen(t, p)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b[510] == 0x55 && b[511] == 0xaa
}

// TestSystemDiskSteps: a disk becomes bootable only at Seal; what was
// written is read back and checked; a corrupted disk fails the check.
func TestSystemDiskSteps(t *testing.T) {
	sys := testSystem(t)
	p := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, p, MinDiskSize()+(256<<20)) // an old system on the disk
	if err := Wipe(p); err != nil {
		t.Fatal(err)
	}
	if bootable(t, p) {
		t.Fatal("a wiped disk still has a boot signature")
	}
	if err := WriteSystem(p, sys); err != nil {
		t.Fatal(err)
	}
	if bootable(t, p) {
		t.Error("a disk is bootable before it is sealed")
	}
	if d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly)); err == nil {
		if _, err := d.GetPartitionTable(); err == nil {
			t.Error("a partition table before Seal")
		}
		d.Close()
	}
	if err := VerifySystem(p, sys); err != nil {
		t.Fatalf("verify what was written: %v", err)
	}
	if err := Seal(p, sys); err != nil {
		t.Fatal(err)
	}
	if !bootable(t, p) {
		t.Error("a sealed disk has no boot signature")
	}
	tab, size := readTable(t, p)
	if err := tab.Verify(mustOpen(t, p), uint64(size)); err != nil {
		t.Errorf("the sealed table does not verify: %v", err)
	}
	mbr := make([]byte, 512)
	core := make([]byte, 512)
	f := mustOpen(t, p)
	_, _ = f.ReadAt(mbr, 0)
	_, _ = f.ReadAt(core, Align)
	if lba := binary.LittleEndian.Uint64(mbr[mbrKernelLBA:]); lba != Align/SectorSize {
		t.Errorf("the MBR loads the core image from sector %d", lba)
	}
	if mbr[mbrBootDrive] != 0xff || mbr[0] != 'b' {
		t.Errorf("the MBR's code is not boot.img's, patched: % x", mbr[:4])
	}
	bl := core[SectorSize-blocklistSize:]
	if start, n := binary.LittleEndian.Uint64(bl), binary.LittleEndian.Uint16(bl[8:]); start != Align/SectorSize+1 || n != 80 {
		t.Errorf("the core image's block list: sectors %d+%d, want %d+80 (81 sectors, the first holding the list)", start, n, Align/SectorSize+1)
	}
	// The sealed disk reads: the files are where GRUB looks for them.
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.GetPartitionTable(); err != nil {
		t.Fatal(err)
	}
	n, _ := Number(NameESP)
	esp, err := d.GetFilesystem(n)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := esp.OpenFile(ESPConfig, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(cfg)
	if !strings.Contains(b.String(), "console=ttyS0,115200 tandem.slot=a") {
		t.Errorf("grub.cfg:\n%s", b.String())
	}

	// What a running node hands on: the slot's files, as written.
	out := t.TempDir()
	if err := ExtractSlot(p, NameSlotA, out); err != nil {
		t.Fatal(err)
	}
	for src, name := range map[string]string{sys.Kernel: "vmlinuz", sys.Initramfs: "initramfs.cpio.zst"} {
		want, _ := os.ReadFile(src)
		got, _ := os.ReadFile(filepath.Join(out, name))
		if !bytes.Equal(got, want) {
			t.Errorf("extracted %s: %d bytes, want the %d written", name, len(got), len(want))
		}
	}
	if v, _ := os.ReadFile(filepath.Join(out, "version")); strings.TrimSpace(string(v)) != "test" {
		t.Errorf("extracted version %q", v)
	}
	if err := ExtractSlot(p, NameSlotB, t.TempDir()); err == nil {
		t.Error("the empty slot B extracted")
	}

	// Damage on the disk is found by the check.
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.WriteAt([]byte("damage"), Align+1000)
	w.Close()
	if err := VerifySystem(p, sys); err == nil || !strings.Contains(err.Error(), "core image") {
		t.Errorf("damaged core image: %v", err)
	}
}

func TestSystemDiskTooSmall(t *testing.T) {
	p := newDiskFile(t, MinDiskSize()-Align)
	for name, step := range map[string]func(string) error{
		"wipe":  Wipe,
		"write": func(p string) error { return WriteSystem(p, testSystem(t)) },
	} {
		if err := step(p); err == nil || !strings.Contains(err.Error(), "smaller than") {
			t.Errorf("%s on a small disk: %v", name, err)
		}
	}
}
