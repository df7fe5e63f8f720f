// Package board reads board files: the data that tells the firmware what
// hardware it runs on (which NIC plays which role, where the system disk is,
// the serial console, the watchdog, the kernel modules to load).
//
// A board is data, not code. Each board lives in board/<name>/board.yaml in
// the repository and is copied to /etc/tandem/board.yaml in the image. The
// image builder loads it at build time, so a broken board file fails the
// build with the file and the key named; the supervisor loads it again at
// boot.
package board

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ImagePath is where the image builder places the board file in the image.
const ImagePath = "/etc/tandem/board.yaml"

// Board describes one kind of machine Tandem runs on.
type Board struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`

	Console  Console  `yaml:"console"`
	Watchdog Watchdog `yaml:"watchdog"`
	NICs     []NIC    `yaml:"nics"`
	Disks    Disks    `yaml:"disks"`

	// Modules are the kernel modules the image carries and the supervisor
	// loads at boot; their dependencies are added by the image builder.
	Modules []string `yaml:"modules"`

	// FrontPanel is the front-panel display and buttons, if the chassis has one.
	FrontPanel *FrontPanel `yaml:"front_panel"`

	// Fence powers the other node off through its BMC, if the chassis
	// has one the nodes can reach.
	Fence *Fence `yaml:"fence"`

	// Defaults are this board's values for settings (see initramfs/settings);
	// the kernel command line and the data partition override them.
	Defaults map[string]string `yaml:"defaults"`
}

// Console is the serial console: kernel messages, the supervisor's log and
// the recovery shell.
type Console struct {
	Device string `yaml:"device"` // e.g. ttyS0
	Baud   int    `yaml:"baud"`
}

// KernelArg returns the console= kernel argument for this console.
func (c Console) KernelArg() string {
	return fmt.Sprintf("console=%s,%d", c.Device, c.Baud)
}

// Watchdog is the hardware watchdog that resets a hung node.
type Watchdog struct {
	Module  string        `yaml:"module"`  // kernel module providing it, e.g. i6300esb
	Device  string        `yaml:"device"`  // e.g. /dev/watchdog
	Timeout time.Duration `yaml:"timeout"` // reset after this long without a pet
}

// Fence is the board-level fence: a command the cluster's leader runs to
// power a lost node off. When it exits 0 the node is off, and its HA VMs
// restart at once instead of after its watchdog's timeout. In Command,
// {node} is the lost node's name and {bmc} its BMC's address (the
// cluster setting fence.bmc.<node>); TANDEM_FENCE_USER and
// TANDEM_FENCE_PASSWORD in its environment are the settings fence.user
// and fence.password. E.g. ipmitool -I lanplus -H {bmc} -U ... -E chassis
// power off (-E reads IPMI_PASSWORD: wrap it in a script).
type Fence struct {
	Command []string      `yaml:"command"`
	Timeout time.Duration `yaml:"timeout"` // default 15s
}

// Role is the job of a network interface.
type Role string

// The roles a NIC can play. Every board has a management NIC; the others are
// optional.
const (
	RoleManagement   Role = "management"   // uplink: the console, the API, the VMs' network
	RoleInterconnect Role = "interconnect" // the direct link between the two nodes
	RoleProvisioning Role = "provisioning" // where new nodes PXE-boot from this one
)

var roles = []Role{RoleManagement, RoleInterconnect, RoleProvisioning}

// NIC assigns a role to the interface that matches.
type NIC struct {
	Role  Role     `yaml:"role"`
	Match NICMatch `yaml:"match"`
}

// NICMatch selects an interface. Every field that is set must match; Index
// picks among several interfaces that match (in PCI path order).
type NICMatch struct {
	Name    string `yaml:"name"`     // kernel name, e.g. eth0
	MAC     string `yaml:"mac"`      // aa:bb:cc:dd:ee:ff
	Driver  string `yaml:"driver"`   // e.g. virtio_net, igb
	PCIPath string `yaml:"pci_path"` // e.g. 0000:00:03.0
	Index   int    `yaml:"index"`
}

// Interface is what the firmware knows about a network interface when it
// assigns roles.
type Interface struct {
	Name    string
	MAC     string
	Driver  string
	PCIPath string
}

// Matches reports whether the interface satisfies every field that is set
// (Index is applied by the caller across all matches).
func (m NICMatch) Matches(i Interface) bool {
	return (m.Name == "" || m.Name == i.Name) &&
		(m.MAC == "" || strings.EqualFold(m.MAC, i.MAC)) &&
		(m.Driver == "" || m.Driver == i.Driver) &&
		(m.PCIPath == "" || m.PCIPath == i.PCIPath)
}

// Disks says where the firmware lives.
type Disks struct {
	// System is the disk that holds the firmware layout (ESP, slots, data).
	// The installer picks the first disk that matches.
	System DiskRule `yaml:"system"`
}

// DiskRule selects a disk.
type DiskRule struct {
	Match   DiskMatch `yaml:"match"`
	MinSize Size      `yaml:"min_size"`
}

// DiskMatch selects a block device; every field that is set must match.
type DiskMatch struct {
	Driver  string `yaml:"driver"`   // virtio_blk, nvme, ahci
	Serial  string `yaml:"serial"`   // as the disk reports it
	PCIPath string `yaml:"pci_path"` // controller's PCI address
}

// FrontPanel is a character device driving the chassis' front panel.
type FrontPanel struct {
	Device string `yaml:"device"` // e.g. ttyS1
	Kind   string `yaml:"kind"`   // protocol spoken on it: "serial-text" today
}

// Size is a byte count written with a unit in board files ("8GiB", "512MiB").
type Size int64

// UnmarshalYAML accepts a number of bytes or a number with a binary unit.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = v
	return nil
}

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*(B|KiB|MiB|GiB|TiB)?$`)

// ParseSize parses "8GiB", "512MiB" or a plain byte count.
func ParseSize(s string) (Size, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("size %q: want a number with an optional unit B, KiB, MiB, GiB or TiB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n << shift), nil
}

// Load reads and validates a board file.
func Load(path string) (*Board, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("board file: %w", err)
	}
	b, err := Parse(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("board file %s: %w", path, err)
	}
	return b, nil
}

// LoadNamed reads board/<name>/board.yaml below the repository root.
func LoadNamed(repoRoot, name string) (*Board, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return nil, fmt.Errorf("board name %q: want the name of a folder under board/", name)
	}
	b, err := Load(filepath.Join(repoRoot, "board", name, "board.yaml"))
	if err != nil {
		return nil, err
	}
	if b.Name != name {
		return nil, fmt.Errorf("board file %s: name: %q does not match its folder %q",
			filepath.Join("board", name, "board.yaml"), b.Name, name)
	}
	return b, nil
}

// Parse decodes a board file, refusing unknown keys, and validates it.
func Parse(r io.Reader) (*Board, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var b Board
	if err := dec.Decode(&b); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, errors.New(strings.Join(te.Errors, "; "))
		}
		return nil, err
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return &b, nil
}

// Validate checks the board for missing and contradictory values. Errors
// name the key, as in "nics[1].role".
func (b *Board) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if b.Name == "" {
		bad("name", "missing")
	}
	if b.Console.Device == "" {
		bad("console.device", "missing (e.g. ttyS0)")
	} else if strings.Contains(b.Console.Device, "/") {
		bad("console.device", "%q: want a device name under /dev, e.g. ttyS0", b.Console.Device)
	}
	if b.Console.Baud <= 0 {
		bad("console.baud", "missing or not positive")
	}
	if f := b.Fence; f != nil {
		if len(f.Command) == 0 || f.Command[0] == "" {
			bad("fence.command", "missing: the program and its arguments")
		}
		if f.Timeout < 0 || f.Timeout > time.Minute {
			bad("fence.timeout", "%v: want up to 1m (0: 15s)", f.Timeout)
		}
	}
	if b.Watchdog.Device != "" && b.Watchdog.Timeout < 2*time.Second {
		bad("watchdog.timeout", "%v is too short: the supervisor pets every third of it; want at least 2s", b.Watchdog.Timeout)
	}
	seen := map[Role]bool{}
	for i, n := range b.NICs {
		key := fmt.Sprintf("nics[%d]", i)
		if !validRole(n.Role) {
			bad(key+".role", "unknown role %q (want one of %s)", n.Role, joinRoles())
		} else if seen[n.Role] {
			bad(key+".role", "role %q is given twice", n.Role)
		}
		seen[n.Role] = true
		if n.Match == (NICMatch{}) {
			bad(key+".match", "missing: set at least one of name, mac, driver, pci_path")
		}
		if n.Match.Index < 0 {
			bad(key+".match.index", "negative")
		}
	}
	if !seen[RoleManagement] {
		bad("nics", "no NIC has role %q; every board needs one", RoleManagement)
	}
	for i, m := range b.Modules {
		if m == "" || strings.ContainsAny(m, " /.") {
			bad(fmt.Sprintf("modules[%d]", i), "%q is not a module name", m)
		}
	}
	if b.FrontPanel != nil {
		if b.FrontPanel.Device == "" {
			bad("front_panel.device", "missing")
		}
		if b.FrontPanel.Kind != "serial-text" {
			bad("front_panel.kind", "unknown kind %q (want serial-text)", b.FrontPanel.Kind)
		}
	}
	return errors.Join(errs...)
}

func validRole(r Role) bool {
	for _, v := range roles {
		if v == r {
			return true
		}
	}
	return false
}

func joinRoles() string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// NIC returns the NIC with the given role, if the board has one.
func (b *Board) NIC(r Role) (NIC, bool) {
	for _, n := range b.NICs {
		if n.Role == r {
			return n, true
		}
	}
	return NIC{}, false
}

// AssignRoles maps each role of the board to one of the interfaces present,
// following the match rules. Interfaces must be in a stable order (the
// caller sorts them by PCI path); roles with no match are left out.
func (b *Board) AssignRoles(ifaces []Interface) map[Role]Interface {
	out := map[Role]Interface{}
	taken := map[string]bool{}
	for _, n := range b.NICs {
		// Index counts every interface the rule matches, so "igb, index 1"
		// is the second igb port whatever role the first one got.
		idx := 0
		for _, i := range ifaces {
			if !n.Match.Matches(i) {
				continue
			}
			if idx == n.Match.Index {
				if !taken[i.Name] {
					out[n.Role] = i
					taken[i.Name] = true
				}
				break
			}
			idx++
		}
	}
	return out
}
