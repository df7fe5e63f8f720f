package provision

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// routerAdvertiser tells the provisioning network's machines that there
// is no IPv6 router and nothing to configure: an advertisement with no
// M and O flags and a lifetime of 0. iPXE, which waits about 16 s for
// IPv6 autoconfiguration otherwise, goes on at once. It answers each
// router solicitation and repeats itself now and then.
type routerAdvertiser struct {
	ifname string
	log    *slog.Logger
}

// raEvery is how often an unsolicited advertisement goes out.
const raEvery = 10 * time.Second

func (r *routerAdvertiser) run(ctx context.Context) error {
	ifi, err := net.InterfaceByName(r.ifname)
	if err != nil {
		return fmt.Errorf("router advertisement: %w", err)
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return fmt.Errorf("router advertisement: %w", err)
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	p := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := p.SetICMPFilter(&f); err != nil {
		return fmt.Errorf("router advertisement: filter: %w", err)
	}
	if err := p.SetControlMessage(ipv6.FlagInterface, true); err != nil {
		return fmt.Errorf("router advertisement: %w", err)
	}
	allRouters := &net.IPAddr{IP: net.ParseIP("ff02::2")}
	if err := p.JoinGroup(ifi, allRouters); err != nil {
		return fmt.Errorf("router advertisement: join ff02::2 on %s: %w", ifi.Name, err)
	}
	msg, err := (&icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: raBody(ifi.HardwareAddr)}}).Marshal(nil)
	if err != nil {
		return err
	}
	// The kernel fills in the checksum of raw ICMPv6 sockets.
	send := func() {
		cm := &ipv6.ControlMessage{IfIndex: ifi.Index, HopLimit: 255}
		if _, err := p.WriteTo(msg, cm, &net.IPAddr{IP: net.IPv6linklocalallnodes, Zone: ifi.Name}); err != nil {
			r.log.Debug("router advertisement not sent (the link-local address may still be tentative)", "err", err)
		}
	}
	solicited := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, cm, _, err := p.ReadFrom(buf)
			if err != nil {
				return // closed at the end
			}
			if cm == nil || cm.IfIndex != ifi.Index || n < 4 || buf[0] != byte(ipv6.ICMPTypeRouterSolicitation) {
				continue
			}
			select {
			case solicited <- struct{}{}:
			default:
			}
		}
	}()
	// A few quick ones first, while the link-local address settles and
	// machines are already waiting.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		send()
		if i == 5 {
			tick.Reset(raEvery)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-solicited:
		case <-tick.C:
		}
	}
}

// raBody is a router advertisement after its ICMPv6 header: hop limit
// unspecified, no flags, router lifetime 0 (not a default router),
// reachable time and retransmit timer unspecified, and the source
// link-layer address option.
func raBody(mac net.HardwareAddr) []byte {
	b := make([]byte, 12, 12+8)
	if len(mac) == 6 {
		b = append(b, 1, 1) // source link-layer address, 8 bytes
		b = append(b, mac...)
	}
	return b
}
