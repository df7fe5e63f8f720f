// Package netconf brings up the node's network interfaces at boot: it finds
// the NICs, gives each the role the board file assigns it, renames it after
// the role, and configures it as the settings say (DHCP, static, link-local
// only, or off). DHCP leases are kept renewed for as long as Run runs.
//
// The management port is always enslaved to a bridge that carries the
// node's address, so VMs bridged to the uplink later need no address move.
package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// Interface names the firmware gives each role, the same on every board.
const (
	ManagementBridge = "br-mgmt" // carries the management address; VMs join it
	ManagementPort   = "mgmt0"
	InterconnectPort = "ic0"
	ProvisioningPort = "prov0"
)

// PortName returns the name a role's NIC is renamed to.
func PortName(r board.Role) string {
	switch r {
	case board.RoleManagement:
		return ManagementPort
	case board.RoleInterconnect:
		return InterconnectPort
	case board.RoleProvisioning:
		return ProvisioningPort
	}
	return ""
}

// Modes of a role, as in the settings.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
	ModeLink   = "link"
	ModeOff    = "off"
)

// RoleConfig is how one role is configured.
type RoleConfig struct {
	Mode    string
	Address netip.Prefix // static mode
	Gateway netip.Addr   // static mode, optional
}

// Config is what the package needs.
type Config struct {
	Board    *board.Board
	Roles    map[board.Role]RoleConfig
	DNS      []netip.Addr // overrides DNS from DHCP when set
	Hostname string       // sent to the DHCP server
	Logger   *slog.Logger

	// ListInterfaces finds the NICs (default: Discover on /sys/class/net).
	ListInterfaces func() ([]board.Interface, error)
	// ResolvConf receives the DNS servers (default /etc/resolv.conf).
	ResolvConf string
	// FirstLeaseWait bounds how long Up waits for a first DHCP lease
	// before boot goes on (default 20s); the lease is still sought later.
	FirstLeaseWait time.Duration
}

// Manager configures the interfaces and keeps DHCP leases.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	mu   sync.Mutex
	up   []*configured // in role order
	dhcp []*dhcpLease
}

// configured is one role's interface as set up.
type configured struct {
	role    board.Role
	mode    string
	port    board.Interface // the physical NIC, after renaming
	l3name  string          // the interface that holds the address
	l3index uint32
	addrs   []netip.Prefix // guarded by Manager.mu
}

// New returns a Manager; nothing is touched until Up.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ListInterfaces == nil {
		cfg.ListInterfaces = func() ([]board.Interface, error) { return Discover("/sys/class/net") }
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	if cfg.FirstLeaseWait <= 0 {
		cfg.FirstLeaseWait = 20 * time.Second
	}
	return &Manager{cfg: cfg, log: cfg.Logger}
}

// Up configures every role the board declares. Problems with one role are
// returned together and never stop the others.
func (m *Manager) Up(ctx context.Context) error {
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer conn.Close()
	if err := LinkUp(conn, "lo"); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}

	ifaces, err := m.cfg.ListInterfaces()
	if err != nil {
		return err
	}
	assigned := m.cfg.Board.AssignRoles(ifaces)
	var errs []error
	var firstLeases sync.WaitGroup
	for _, nic := range m.cfg.Board.NICs {
		rc, ok := m.cfg.Roles[nic.Role]
		if !ok {
			rc = RoleConfig{Mode: ModeOff}
		}
		iface, found := assigned[nic.Role]
		if !found {
			if rc.Mode != ModeOff {
				errs = append(errs, fmt.Errorf("%s: no interface matches the board's rule %+v (found: %s)", nic.Role, nic.Match, describe(ifaces)))
			}
			continue
		}
		c, err := m.configure(conn, nic.Role, iface, rc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", nic.Role, iface.Name, err))
			continue
		}
		m.mu.Lock()
		m.up = append(m.up, c)
		m.mu.Unlock()
		if rc.Mode == ModeDHCP {
			l := &dhcpLease{m: m, c: c}
			m.dhcp = append(m.dhcp, l)
			firstLeases.Add(1)
			go func() {
				defer firstLeases.Done()
				wait, cancel := context.WithTimeout(ctx, m.cfg.FirstLeaseWait)
				defer cancel()
				if err := l.acquire(wait); err != nil {
					m.log.Warn("no DHCP lease yet; boot goes on and the lease is sought again", "interface", c.l3name, "err", err)
				}
			}()
		}
	}
	firstLeases.Wait()
	if len(m.cfg.DNS) > 0 {
		if err := m.writeResolvConf(m.cfg.DNS); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run keeps DHCP leases renewed until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, l := range m.dhcp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.maintain(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// Interfaces reports what was configured, for the status API.
func (m *Manager) Interfaces() []statusapi.Interface {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []statusapi.Interface
	for _, c := range m.up {
		var addrs []string
		for _, a := range c.addrs {
			addrs = append(addrs, a.String())
		}
		out = append(out, statusapi.Interface{Role: string(c.role), Name: c.l3name, MAC: c.port.MAC, Mode: c.mode, Addresses: addrs})
	}
	return out
}

// MAC returns the MAC of a role's port, if the role was configured.
func (m *Manager) MAC(r board.Role) (net.HardwareAddr, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.up {
		if c.role == r {
			mac, err := net.ParseMAC(c.port.MAC)
			return mac, err == nil
		}
	}
	return nil, false
}

// configure renames the NIC after its role, bridges the management port,
// brings the links up and sets a static address.
func (m *Manager) configure(conn *rtnetlink.Conn, role board.Role, iface board.Interface, rc RoleConfig) (*configured, error) {
	want := PortName(role)
	if iface.Name != want {
		if err := rename(conn, iface.Name, want); err != nil {
			return nil, err
		}
		m.log.Info("interface renamed", "role", role, "from", iface.Name, "to", want)
		iface.Name = want
	}
	c := &configured{role: role, mode: rc.Mode, port: iface, l3name: want}
	if rc.Mode == ModeOff {
		return c, nil
	}
	if role == board.RoleManagement {
		if err := ensureBridge(conn, ManagementBridge, iface); err != nil {
			return nil, err
		}
		c.l3name = ManagementBridge
	}
	if err := LinkUp(conn, iface.Name); err != nil {
		return nil, err
	}
	if c.l3name != iface.Name {
		if err := LinkUp(conn, c.l3name); err != nil {
			return nil, err
		}
	}
	l3, err := net.InterfaceByName(c.l3name)
	if err != nil {
		return nil, err
	}
	c.l3index = uint32(l3.Index)
	switch rc.Mode {
	case ModeStatic:
		if !rc.Address.IsValid() {
			return nil, errors.New("static mode without an address")
		}
		if err := AddAddress(conn, c.l3index, rc.Address); err != nil {
			return nil, fmt.Errorf("address %s: %w", rc.Address, err)
		}
		c.addrs = []netip.Prefix{rc.Address}
		if rc.Gateway.IsValid() {
			if err := setDefaultRoute(conn, c.l3index, rc.Gateway); err != nil {
				return nil, fmt.Errorf("gateway %s: %w", rc.Gateway, err)
			}
		}
		m.log.Info("interface up", "role", role, "interface", c.l3name, "address", rc.Address, "gateway", rc.Gateway)
	case ModeLink, ModeDHCP:
		m.log.Info("interface up", "role", role, "interface", c.l3name, "mode", rc.Mode)
	default:
		return nil, fmt.Errorf("unknown mode %q", rc.Mode)
	}
	return c, nil
}

func (m *Manager) setAddrs(c *configured, addrs []netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c.addrs = addrs
}

func (m *Manager) writeResolvConf(servers []netip.Addr) error {
	var b strings.Builder
	b.WriteString("# written by tandem-init\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	tmp := m.cfg.ResolvConf + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.Rename(tmp, m.cfg.ResolvConf); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}

func describe(ifaces []board.Interface) string {
	if len(ifaces) == 0 {
		return "no NICs"
	}
	var s []string
	for _, i := range ifaces {
		s = append(s, fmt.Sprintf("%s driver=%s pci=%s", i.Name, i.Driver, i.PCIPath))
	}
	return strings.Join(s, "; ")
}

// LinkUp sets IFF_UP on the named link.
func LinkUp(conn *rtnetlink.Conn, name string) error {
	i, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	return conn.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Index: uint32(i.Index), Flags: unix.IFF_UP, Change: unix.IFF_UP,
	})
}

// rename renames a link; the kernel wants it down for that.
func rename(conn *rtnetlink.Conn, from, to string) error {
	i, err := net.InterfaceByName(from)
	if err != nil {
		return err
	}
	if err := conn.Link.Set(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Index: uint32(i.Index), Flags: 0, Change: unix.IFF_UP}); err != nil {
		return fmt.Errorf("set %s down: %w", from, err)
	}
	if err := conn.Link.Set(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Index: uint32(i.Index), Attributes: &rtnetlink.LinkAttributes{Name: to}}); err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	return nil
}

// ensureBridge creates the bridge (with the port's MAC, so DHCP servers see
// the same client whatever the bridge's ports) and enslaves the port.
func ensureBridge(conn *rtnetlink.Conn, name string, port board.Interface) error {
	if _, err := net.InterfaceByName(name); err != nil {
		mac, err := net.ParseMAC(port.MAC)
		if err != nil {
			return fmt.Errorf("port %s MAC %q: %w", port.Name, port.MAC, err)
		}
		if err := conn.Link.New(&rtnetlink.LinkMessage{
			Family:     unix.AF_UNSPEC,
			Attributes: &rtnetlink.LinkAttributes{Name: name, Address: mac, Info: &rtnetlink.LinkInfo{Kind: "bridge"}},
		}); err != nil {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
	}
	br, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	p, err := net.InterfaceByName(port.Name)
	if err != nil {
		return err
	}
	if err := conn.Link.SetMaster(uint32(p.Index), uint32(br.Index), nil); err != nil {
		return fmt.Errorf("add %s to bridge %s: %w", port.Name, name, err)
	}
	return nil
}

// AddAddress adds an address to a link; an address already there is fine.
func AddAddress(conn *rtnetlink.Conn, index uint32, p netip.Prefix) error {
	ip := net.IP(p.Addr().AsSlice())
	attrs := &rtnetlink.AddressAttributes{Address: ip, Local: ip}
	family := uint8(unix.AF_INET6)
	if p.Addr().Is4() {
		family = unix.AF_INET
		bcast := make(net.IP, 4)
		mask := net.CIDRMask(p.Bits(), 32)
		for i := range bcast {
			bcast[i] = ip[i] | ^mask[i]
		}
		attrs.Broadcast = bcast
	}
	err := conn.Address.New(&rtnetlink.AddressMessage{
		Family: family, PrefixLength: uint8(p.Bits()), Scope: unix.RT_SCOPE_UNIVERSE, Index: index, Attributes: attrs,
	})
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// DelAddress removes an address from a link.
func DelAddress(conn *rtnetlink.Conn, index uint32, p netip.Prefix) error {
	ip := net.IP(p.Addr().AsSlice())
	family := uint8(unix.AF_INET6)
	if p.Addr().Is4() {
		family = unix.AF_INET
	}
	return conn.Address.Delete(&rtnetlink.AddressMessage{
		Family: family, PrefixLength: uint8(p.Bits()), Index: index,
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip},
	})
}

func setDefaultRoute(conn *rtnetlink.Conn, index uint32, gw netip.Addr) error {
	family := uint8(unix.AF_INET6)
	if gw.Is4() {
		family = unix.AF_INET
	}
	return conn.Route.Replace(&rtnetlink.RouteMessage{
		Family: family, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Gateway: net.IP(gw.AsSlice()), OutIface: index},
	})
}

// sortByPCIPath orders interfaces so "index" in board rules is stable.
func sortByPCIPath(ifaces []board.Interface) {
	slices.SortStableFunc(ifaces, func(a, b board.Interface) int {
		if c := strings.Compare(a.PCIPath, b.PCIPath); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}
