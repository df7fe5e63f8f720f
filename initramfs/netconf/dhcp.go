package netconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/jsimonetti/rtnetlink/v2"
)

// dhcpLease obtains and keeps one interface's DHCP lease: renew at T1,
// keep trying until the lease runs out, then drop the address and start
// over with a DISCOVER.
type dhcpLease struct {
	m *Manager
	c *configured

	// owned by the goroutine running acquire/maintain
	lease   *nclient4.Lease
	addr    netip.Prefix
	gateway netip.Addr
}

func (l *dhcpLease) newClient() (*nclient4.Client, error) {
	return nclient4.New(l.c.l3name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
}

func (l *dhcpLease) modifiers() []dhcpv4.Modifier {
	if l.m.cfg.Hostname == "" {
		return nil
	}
	return []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptHostName(l.m.cfg.Hostname))}
}

// acquire runs DISCOVER/REQUEST until a lease is applied or ctx ends.
func (l *dhcpLease) acquire(ctx context.Context) error {
	// A DISCOVER sent before the link (for a bridge: its port) forwards is
	// lost and costs the client's whole retry timeout.
	waitOperUp(ctx, l.c.l3name, 5*time.Second)
	wait := time.Second
	for {
		err := l.request(ctx)
		if err == nil {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(wait*2, 30*time.Second)
	}
}

func (l *dhcpLease) request(ctx context.Context) error {
	cl, err := l.newClient()
	if err != nil {
		return fmt.Errorf("DHCP client on %s: %w", l.c.l3name, err)
	}
	defer cl.Close()
	lease, err := cl.Request(ctx, l.modifiers()...)
	if err != nil {
		return fmt.Errorf("DHCP on %s: %w", l.c.l3name, err)
	}
	return l.apply(lease)
}

// apply puts the lease's address, route and DNS servers in place.
func (l *dhcpLease) apply(lease *nclient4.Lease) error {
	ack := lease.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return fmt.Errorf("DHCP on %s: ACK without an address", l.c.l3name)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ip4DefaultMask(ip)
	}
	bits, _ := mask.Size()
	addr := netip.PrefixFrom(ip, bits)
	var gw netip.Addr
	if r := ack.Router(); len(r) > 0 {
		gw, _ = netip.AddrFromSlice(r[0].To4())
	}

	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer conn.Close()
	if l.addr.IsValid() && l.addr != addr {
		_ = DelAddress(conn, l.c.l3index, l.addr)
	}
	if err := AddAddress(conn, l.c.l3index, addr); err != nil {
		return fmt.Errorf("DHCP address %s on %s: %w", addr, l.c.l3name, err)
	}
	if gw.IsValid() && gw != l.gateway {
		if err := setDefaultRoute(conn, l.c.l3index, gw); err != nil {
			return fmt.Errorf("DHCP gateway %s on %s: %w", gw, l.c.l3name, err)
		}
	}
	if len(l.m.cfg.DNS) == 0 {
		var servers []netip.Addr
		for _, d := range ack.DNS() {
			if a, ok := netip.AddrFromSlice(d.To4()); ok {
				servers = append(servers, a)
			}
		}
		if len(servers) > 0 {
			if err := l.m.writeResolvConf(servers); err != nil {
				l.m.log.Warn("DNS servers from DHCP not written", "err", err)
			}
		}
	}
	if addr != l.addr {
		l.m.log.Info("DHCP lease", "interface", l.c.l3name, "address", addr, "gateway", gw,
			"lease", ack.IPAddressLeaseTime(0), "server", ack.ServerIdentifier())
	}
	l.lease, l.addr, l.gateway = lease, addr, gw
	l.m.setAddrs(l.c, []netip.Prefix{addr})
	return nil
}

// drop removes the address of a lease that ran out or was refused.
func (l *dhcpLease) drop(reason string) {
	l.m.log.Warn("DHCP lease lost", "interface", l.c.l3name, "address", l.addr, "reason", reason)
	if conn, err := rtnetlink.Dial(nil); err == nil {
		_ = DelAddress(conn, l.c.l3index, l.addr)
		conn.Close()
	}
	l.lease, l.addr, l.gateway = nil, netip.Prefix{}, netip.Addr{}
	l.m.setAddrs(l.c, nil)
}

// maintain keeps the lease until ctx ends.
func (l *dhcpLease) maintain(ctx context.Context) {
	for ctx.Err() == nil {
		if l.lease == nil {
			if err := l.acquire(ctx); err != nil {
				return // ctx ended
			}
			continue
		}
		leaseTime := l.lease.ACK.IPAddressLeaseTime(time.Hour)
		renewAt := l.lease.CreationTime.Add(l.lease.ACK.IPAddressRenewalTime(leaseTime / 2))
		expiry := l.lease.CreationTime.Add(leaseTime)
		if !sleepUntil(ctx, renewAt) {
			return
		}
		for l.lease != nil && ctx.Err() == nil {
			if time.Now().After(expiry) {
				l.drop("expired")
				break
			}
			err := l.renew(ctx)
			if err == nil {
				break
			}
			var nak *nclient4.ErrNak
			if errors.As(err, &nak) {
				l.drop("server refused the renewal (NAK)")
				break
			}
			// Retry at half the time left, as RFC 2131 suggests, but at
			// least every 30 s.
			next := time.Now().Add(min(time.Until(expiry)/2, 30*time.Second))
			if !sleepUntil(ctx, next) {
				return
			}
		}
	}
}

func (l *dhcpLease) renew(ctx context.Context) error {
	cl, err := l.newClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lease, err := cl.Renew(rctx, l.lease, l.modifiers()...)
	if err != nil {
		return err
	}
	return l.apply(lease)
}

// waitOperUp waits until the interface's operational state is up, or the
// timeout passes (a link with no carrier is tried anyway).
func waitOperUp(ctx context.Context, name string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		b, err := os.ReadFile("/sys/class/net/" + name + "/operstate")
		if err == nil && strings.TrimSpace(string(b)) == "up" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

func ip4DefaultMask(ip netip.Addr) net.IPMask {
	return net.IP(ip.AsSlice()).DefaultMask()
}
