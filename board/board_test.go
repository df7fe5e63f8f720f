package board

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRepositoryBoardsLoad(t *testing.T) {
	for _, name := range []string{"qemu-2node", "generic-2u"} {
		t.Run(name, func(t *testing.T) {
			b, err := LoadNamed("..", name)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := b.NIC(RoleManagement); !ok {
				t.Errorf("no management NIC")
			}
		})
	}
}

const minimal = `
name: test
console: {device: ttyS0, baud: 115200}
nics:
  - role: management
    match: {driver: virtio_net}
`

func TestParseErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		file string
		want string // substring of the error
	}{
		{"empty", ``, "empty"},
		{"unknown top-level key", minimal + "colour: blue\n", "field colour not found"},
		{"unknown nested key", strings.Replace(minimal, "driver:", "drivr:", 1), "field drivr not found"},
		{"unknown role", strings.Replace(minimal, "management", "mgmt", 1), `nics[0].role: unknown role "mgmt"`},
		{"no management", strings.Replace(minimal, "management", "interconnect", 1), `nics: no NIC has role "management"`},
		{"empty match", strings.Replace(minimal, "{driver: virtio_net}", "{}", 1), "nics[0].match: missing"},
		{"duplicate role", minimal + "  - role: management\n    match: {name: eth1}\n", `nics[1].role: role "management" is given twice`},
		{"missing console", strings.Replace(minimal, "device: ttyS0, ", "", 1), "console.device: missing"},
		{"console path", strings.Replace(minimal, "ttyS0", "/dev/ttyS0", 1), "console.device"},
		{"short watchdog", minimal + "watchdog: {device: /dev/watchdog, timeout: 1s}\n", "watchdog.timeout"},
		{"bad duration", minimal + "watchdog: {device: /dev/watchdog, timeout: soon}\n", "soon"},
		{"bad size", minimal + "disks: {system: {min_size: 8 parsecs}}\n", `size "8 parsecs"`},
		{"bad module", minimal + "modules: [virtio_net, ext4.ko]\n", `modules[1]: "ext4.ko"`},
		{"front panel kind", minimal + "front_panel: {device: ttyS1, kind: lcd}\n", "front_panel.kind"},
		{"fence without command", minimal + "fence: {timeout: 5s}\n", "fence.command: missing"},
		{"fence timeout", minimal + "fence: {command: [ipmitool], timeout: 5m}\n", "fence.timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.file))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadNamedRefusesOddNames(t *testing.T) {
	for _, name := range []string{"", "..", "../etc", "a/b"} {
		if _, err := LoadNamed("..", name); err == nil {
			t.Errorf("LoadNamed(%q) succeeded", name)
		}
	}
	if _, err := LoadNamed("..", "no-such-board"); err == nil || !strings.Contains(err.Error(), "no-such-board") {
		t.Errorf("missing board: error %v does not name it", err)
	}
}

func TestParseValues(t *testing.T) {
	b, err := Parse(strings.NewReader(minimal + `
watchdog: {module: i6300esb, device: /dev/watchdog, timeout: 15s}
disks: {system: {match: {driver: nvme}, min_size: 64GiB}}
defaults: {net.management.mode: dhcp}
`))
	if err != nil {
		t.Fatal(err)
	}
	if b.Watchdog.Timeout != 15*time.Second {
		t.Errorf("watchdog timeout %v", b.Watchdog.Timeout)
	}
	if b.Disks.System.MinSize != 64<<30 {
		t.Errorf("min size %d", b.Disks.System.MinSize)
	}
	if b.Console.KernelArg() != "console=ttyS0,115200" {
		t.Errorf("kernel arg %q", b.Console.KernelArg())
	}
}

func TestAssignRoles(t *testing.T) {
	b := &Board{NICs: []NIC{
		{Role: RoleManagement, Match: NICMatch{Driver: "igb"}},
		{Role: RoleInterconnect, Match: NICMatch{Driver: "ixgbe"}},
		{Role: RoleProvisioning, Match: NICMatch{Driver: "igb", Index: 1}},
	}}
	ifaces := []Interface{
		{Name: "eth0", Driver: "igb", PCIPath: "0000:01:00.0"},
		{Name: "eth1", Driver: "igb", PCIPath: "0000:01:00.1"},
		{Name: "eth2", Driver: "ixgbe", PCIPath: "0000:03:00.0"},
	}
	got := b.AssignRoles(ifaces)
	want := map[Role]Interface{
		RoleManagement:   ifaces[0],
		RoleInterconnect: ifaces[2],
		RoleProvisioning: ifaces[1],
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("roles (-want +got):\n%s", d)
	}
	// Only one igb port: provisioning (index 1) stays unassigned.
	got = b.AssignRoles(ifaces[:1])
	if _, ok := got[RoleProvisioning]; ok || got[RoleManagement].Name != "eth0" {
		t.Errorf("one port: got %v", got)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"0": 0, "512": 512, "4KiB": 4096, "2 GiB": 2 << 30, "1TiB": 1 << 40} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1", "1.5GiB", "99999999999TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}
