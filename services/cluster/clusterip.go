package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/initramfs/netconf"
)

// addressLifetime bounds how long the cluster IP outlives the process
// that holds it: the address is added with this valid lifetime and the
// leader renews it every half second, so if the agent dies (kill -9) or
// stalls, the kernel removes the address by itself.
const addressLifetime = 2 * time.Second

// clusterIP puts the cluster IP on the management interface while this
// member leads, and takes it off when it stops.
type clusterIP struct {
	dev string
	log *slog.Logger

	mu   sync.Mutex
	held netip.Prefix
}

func newClusterIP(dev string, log *slog.Logger) *clusterIP {
	return &clusterIP{dev: dev, log: log}
}

// hold adds the address and announces it with gratuitous ARP.
func (c *clusterIP) hold(p netip.Prefix) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ifi, err := net.InterfaceByName(c.dev)
	if err != nil {
		return fmt.Errorf("cluster IP interface: %w", err)
	}
	if err := setAddress(ifi.Index, p, addressLifetime); err != nil {
		return fmt.Errorf("add %s on %s: %w", p, c.dev, err)
	}
	c.held = p
	c.announceLocked(ifi)
	return nil
}

// renew extends the held address's lifetime; the leader calls it every
// half second.
func (c *clusterIP) renew() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.held.IsValid() {
		return
	}
	ifi, err := net.InterfaceByName(c.dev)
	if err == nil {
		err = setAddress(ifi.Index, c.held, addressLifetime)
	}
	if err != nil {
		c.log.Error("cluster IP not renewed: it expires within its lifetime", "ip", c.held, "err", err)
	}
}

// setAddress adds an IPv4 address, or replaces it to renew its lifetime
// (rtnetlink's address messages carry no lifetime, so this one is built
// here: an ifaddrmsg and its attributes, IFA_CACHEINFO included).
func setAddress(ifindex int, p netip.Prefix, valid time.Duration) error {
	if !p.Addr().Is4() {
		return errors.New("the cluster IP must be IPv4")
	}
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	ip := p.Addr().As4()
	mask := net.CIDRMask(p.Bits(), 32)
	var bcast [4]byte
	for i := range bcast {
		bcast[i] = ip[i] | ^mask[i]
	}
	hdr := make([]byte, 8) // struct ifaddrmsg
	hdr[0], hdr[1], hdr[3] = unix.AF_INET, byte(p.Bits()), unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(hdr[4:], uint32(ifindex))
	secs := uint32(valid / time.Second)
	ci := make([]byte, 16) // struct ifa_cacheinfo: preferred, valid, created, updated
	binary.NativeEndian.PutUint32(ci[0:], secs)
	binary.NativeEndian.PutUint32(ci[4:], secs)
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_LOCAL, ip[:])
	ae.Bytes(unix.IFA_ADDRESS, ip[:])
	ae.Bytes(unix.IFA_BROADCAST, bcast[:])
	ae.Bytes(unix.IFA_CACHEINFO, ci)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = conn.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWADDR, Flags: netlink.Request | netlink.Create | netlink.Replace | netlink.Acknowledge},
		Data:   append(hdr, attrs...),
	})
	return err
}

// announce repeats the gratuitous ARP for the held address.
func (c *clusterIP) announce() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.held.IsValid() {
		return
	}
	if ifi, err := net.InterfaceByName(c.dev); err == nil {
		c.announceLocked(ifi)
	}
}

// release removes the held address at once.
func (c *clusterIP) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.held.IsValid() {
		return
	}
	if err := c.remove(c.held); err != nil {
		c.log.Error("cluster IP not removed", "ip", c.held, "err", err)
		return
	}
	c.log.Info("cluster IP released", "ip", c.held)
	c.held = netip.Prefix{}
}

// ensureReleased removes the configured cluster IP if the interface has
// it although this member does not lead (left from before a restart).
func (c *clusterIP) ensureReleased(want netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !want.IsValid() {
		return
	}
	ifi, err := net.InterfaceByName(c.dev)
	if err != nil {
		return
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == want.Addr() {
				if err := c.remove(want); err == nil {
					c.log.Warn("removed the cluster IP from a member that does not lead", "ip", want)
				}
				c.held = netip.Prefix{}
				return
			}
		}
	}
}

func (c *clusterIP) remove(p netip.Prefix) error {
	ifi, err := net.InterfaceByName(c.dev)
	if err != nil {
		return err
	}
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = netconf.DelAddress(conn, uint32(ifi.Index), p)
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil
	}
	return err
}

// announceLocked sends a gratuitous ARP request (sender and target are the
// cluster IP), so switches and hosts move the address to this member's MAC.
func (c *clusterIP) announceLocked(ifi *net.Interface) {
	if !c.held.Addr().Is4() || len(ifi.HardwareAddr) != 6 {
		return // IPv6 neighbours learn from unsolicited NA: not sent yet
	}
	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
	if err != nil {
		c.log.Warn("gratuitous ARP", "err", err)
		return
	}
	defer conn.Close()
	frame := garpFrame(ifi.HardwareAddr, c.held.Addr().As4())
	if _, err := conn.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}); err != nil {
		c.log.Warn("gratuitous ARP", "err", err)
	}
}

// garpFrame builds an Ethernet frame holding a gratuitous ARP request.
func garpFrame(mac net.HardwareAddr, ip [4]byte) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	arp := f[14:]
	binary.BigEndian.PutUint16(arp[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(arp[2:4], 0x0800) // IPv4
	arp[4], arp[5] = 6, 4
	binary.BigEndian.PutUint16(arp[6:8], 1) // request
	copy(arp[8:14], mac)
	copy(arp[14:18], ip[:])
	// target hardware address stays zero
	copy(arp[24:28], ip[:])
	return f
}
