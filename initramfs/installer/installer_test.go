package installer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/services/directory"
)

func TestPickDisk(t *testing.T) {
	const gib = 1 << 30
	vda := directory.MachineDisk{Name: "vda", SizeBytes: 8 * gib, Driver: "virtio_blk", PCIPath: "0000:00:06.0"}
	small := directory.MachineDisk{Name: "vda", SizeBytes: gib, Driver: "virtio_blk", PCIPath: "0000:00:06.0"}
	usb := directory.MachineDisk{Name: "sda", SizeBytes: 16 * gib, Driver: "sd", Removable: true}
	other := directory.MachineDisk{Name: "vdb", SizeBytes: 8 * gib, Driver: "virtio_blk", PCIPath: "0000:00:07.0"}
	rule := board.DiskRule{Match: board.DiskMatch{Driver: "virtio_blk", PCIPath: "0000:00:06.0"}, MinSize: 2 * gib}
	for _, tc := range []struct {
		name  string
		rule  board.DiskRule
		disks []directory.MachineDisk
		want  string
		err   string
	}{
		{name: "the board's disk", rule: rule, disks: []directory.MachineDisk{usb, other, vda}, want: "vda"},
		{name: "smaller than the image", rule: rule, disks: []directory.MachineDisk{small}, err: "smaller than the image"},
		{name: "none matches", rule: rule, disks: []directory.MachineDisk{usb, other}, err: "no disk matches"},
		{name: "no disks", rule: rule, err: "no disk matches"},
		{name: "an open rule skips removable disks", rule: board.DiskRule{}, disks: []directory.MachineDisk{usb, other}, want: "vdb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := PickDisk(tc.rule, tc.disks)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || d.Name != tc.want {
				t.Fatalf("picked %q (%v), want %q", d.Name, err, tc.want)
			}
		})
	}
}

// TestInventory reads a machine from a copy of the files sysfs and procfs
// show.
func TestInventory(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		p = filepath.Join(root, p)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(filepath.Join(root, target), p); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/cpuinfo", "processor\t: 0\nmodel name\t: QEMU Virtual CPU\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU\n")
	write("proc/meminfo", "MemTotal:        2030000 kB\nMemFree: 1 kB\n")
	write("sys/class/dmi/id/sys_vendor", "QEMU\n")
	write("sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n")
	_ = os.MkdirAll(filepath.Join(root, "sys/firmware/efi"), 0o755)
	// A virtio disk and a RAM disk (no device behind it).
	dev := "sys/devices/pci0000:00/0000:00:06.0/virtio2"
	write(dev+"/uevent", "")
	_ = os.MkdirAll(filepath.Join(root, "sys/bus/virtio/drivers/virtio_blk"), 0o755)
	link("sys/bus/virtio/drivers/virtio_blk", dev+"/driver")
	write("sys/block/vda/size", "8388608\n")
	write("sys/block/vda/serial", "SN-1\n")
	write("sys/block/vda/removable", "0\n")
	link(dev, "sys/block/vda/device")
	write("sys/block/ram0/size", "8192\n")
	// A NIC with a link.
	nic := "sys/devices/pci0000:00/0000:00:05.0/virtio1"
	_ = os.MkdirAll(filepath.Join(root, "sys/bus/virtio/drivers/virtio_net"), 0o755)
	link("sys/bus/virtio/drivers/virtio_net", nic+"/driver")
	write("sys/class/net/eth0/address", "52:54:00:7a:02:03\n")
	write("sys/class/net/eth0/carrier", "1\n")
	write("sys/class/net/eth0/speed", "-1\n")
	link(nic, "sys/class/net/eth0/device")

	inv := Inventory(root)
	if inv.CPUs != 2 || inv.CPUModel != "QEMU Virtual CPU" || inv.MemoryBytes != 2030000<<10 || inv.Firmware != "uefi" || inv.Vendor != "QEMU" {
		t.Errorf("machine: %+v", inv)
	}
	if len(inv.Disks) != 1 || inv.Disks[0] != (directory.MachineDisk{Name: "vda", SizeBytes: 4 << 30, Serial: "SN-1", Driver: "virtio_blk", PCIPath: "0000:00:06.0"}) {
		t.Errorf("disks: %+v", inv.Disks)
	}
	if len(inv.NICs) != 1 || inv.NICs[0] != (directory.MachineNIC{Name: "eth0", MAC: "52:54:00:7a:02:03", Driver: "virtio_net", PCIPath: "0000:00:05.0", Link: true}) {
		t.Errorf("NICs: %+v", inv.NICs)
	}
}
