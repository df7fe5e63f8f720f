package netconf

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemhci/tandem/board"
)

// fakeSysfs builds the part of /sys that Discover reads: class/net entries
// that link to devices, which link to their drivers.
func fakeSysfs(t *testing.T) string {
	root := t.TempDir()
	mk := func(path string) string {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := func(target, name string) {
		if err := os.Symlink(filepath.Join(root, target), filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	mk("bus/virtio/drivers/virtio_net")
	mk("bus/pci/drivers/igb")
	mk("devices/pci0000:00/0000:00:04.0/virtio1")
	mk("devices/pci0000:00/0000:00:03.0/virtio0")
	mk("devices/pci0000:00/0000:00:1c.0/0000:02:00.0")
	link("bus/virtio/drivers/virtio_net", "devices/pci0000:00/0000:00:04.0/virtio1/driver")
	link("bus/virtio/drivers/virtio_net", "devices/pci0000:00/0000:00:03.0/virtio0/driver")
	link("bus/pci/drivers/igb", "devices/pci0000:00/0000:00:1c.0/0000:02:00.0/driver")
	for name, dev := range map[string]string{
		"eth1":   "devices/pci0000:00/0000:00:04.0/virtio1",
		"eth0":   "devices/pci0000:00/0000:00:03.0/virtio0",
		"enp2s0": "devices/pci0000:00/0000:00:1c.0/0000:02:00.0",
		"lo":     "",
	} {
		d := mk("class/net/" + name)
		os.WriteFile(filepath.Join(d, "address"), []byte("52:54:00:00:00:"+name[len(name)-1:]+"\n"), 0o644)
		if dev != "" {
			link(dev, "class/net/"+name+"/device")
		}
	}
	return filepath.Join(root, "class/net")
}

func TestDiscover(t *testing.T) {
	got, err := Discover(fakeSysfs(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []board.Interface{
		{Name: "eth0", MAC: "52:54:00:00:00:0", Driver: "virtio_net", PCIPath: "0000:00:03.0"},
		{Name: "eth1", MAC: "52:54:00:00:00:1", Driver: "virtio_net", PCIPath: "0000:00:04.0"},
		{Name: "enp2s0", MAC: "52:54:00:00:00:0", Driver: "igb", PCIPath: "0000:02:00.0"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("interfaces (-want +got):\n%s", d)
	}
}

func TestQemuBoardRolesOnDiscoveredNICs(t *testing.T) {
	b, err := board.LoadNamed("../..", "qemu-2node")
	if err != nil {
		t.Fatal(err)
	}
	ifaces, err := Discover(fakeSysfs(t))
	if err != nil {
		t.Fatal(err)
	}
	roles := b.AssignRoles(ifaces)
	if roles[board.RoleManagement].Name != "eth0" || roles[board.RoleInterconnect].Name != "eth1" {
		t.Errorf("roles %v", roles)
	}
	if _, ok := roles[board.RoleProvisioning]; ok {
		t.Errorf("provisioning assigned without a NIC at 0000:00:05.0")
	}
}
