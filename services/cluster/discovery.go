package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/tandemhci/tandem/services/pki"
)

// discovery finds the other node on the interconnect without anyone
// typing an address: every few seconds it pings the all-nodes multicast
// address (ff02::1) on the link, and asks each IPv6 link-local neighbour
// that answers for its beacon on the front door port. Only ICMPv6 (which
// IPv6 needs anyway) and the front door's TCP port cross the link.
type discovery struct {
	a *Agent

	mu    sync.Mutex
	peers map[string]DiscoveredPeer // by address
}

// DiscoveredPeer is a front door found on the interconnect.
type DiscoveredPeer struct {
	Address string    `json:"address"` // [fe80::…%ic0]:443
	Beacon  Beacon    `json:"beacon"`
	Seen    time.Time `json:"seen"`
}

func newDiscovery(a *Agent) *discovery {
	return &discovery{a: a, peers: map[string]DiscoveredPeer{}}
}

func (d *discovery) run(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		d.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Peers returns the front doors seen on the interconnect lately.
func (d *discovery) Peers() []DiscoveredPeer {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []DiscoveredPeer
	for _, p := range d.peers {
		if time.Since(p.Seen) < 30*time.Second {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b DiscoveredPeer) int { return strings.Compare(a.Address, b.Address) })
	return out
}

// find scans until it sees members of the token's cluster, for up to ten
// seconds (a node that just booted may not have its link-local address
// yet), and returns their addresses.
func (d *discovery) find(ctx context.Context, tok pki.Token) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.scan(ctx)
		var out []string
		for _, p := range d.Peers() {
			if p.Beacon.InCluster && strings.HasPrefix(p.Beacon.CAFingerprint, strings.ToLower(tok.CAPin)) {
				out = append(out, p.Address)
			}
		}
		if len(out) > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return out
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (d *discovery) scan(ctx context.Context) {
	dev := d.a.cfg.Interconnect
	neighbours, err := pingAllNodes(ctx, dev, 500*time.Millisecond)
	if err != nil {
		d.a.log.Debug("interconnect discovery", "dev", dev, "err", err)
		return
	}
	self := map[string]bool{}
	if ifi, err := net.InterfaceByName(dev); err == nil {
		if addrs, err := ifi.Addrs(); err == nil {
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok {
					self[ipn.IP.String()] = true
				}
			}
		}
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}, // a beacon is public
	}}
	for _, ip := range neighbours {
		if self[ip.String()] {
			continue
		}
		addr := net.JoinHostPort(ip.String()+"%"+dev, strconv.Itoa(d.a.cfg.Port))
		resp, err := client.Get("https://" + urlHost(addr) + "/api/v1/cluster/beacon")
		if err != nil {
			d.a.log.Debug("no beacon from a neighbour on the interconnect", "addr", addr, "err", err)
			continue
		}
		var b Beacon
		err = json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<10)).Decode(&b)
		resp.Body.Close()
		if err != nil || b.MemberID == d.a.id.ID {
			continue
		}
		d.mu.Lock()
		if _, known := d.peers[addr]; !known {
			d.a.log.Info("found a peer on the interconnect", "address", addr, "name", b.Name, "in_cluster", b.InCluster)
		}
		d.peers[addr] = DiscoveredPeer{Address: addr, Beacon: b, Seen: time.Now()}
		d.mu.Unlock()
	}
}

// pingAllNodes sends an ICMPv6 echo request to ff02::1 on dev and returns
// the link-local addresses that answer within wait.
func pingAllNodes(ctx context.Context, dev string, wait time.Duration) ([]net.IP, error) {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: 0x7d, Seq: 1, Data: []byte("tandem-discovery")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return nil, err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: dev}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetReadDeadline(deadline)
	var out []net.IP
	seen := map[string]bool{}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return out, nil // the deadline ends the wait
		}
		m, err := icmp.ParseMessage(58, buf[:n])
		if err != nil || m.Type != ipv6.ICMPTypeEchoReply {
			continue
		}
		ipa, ok := from.(*net.IPAddr)
		if !ok || !ipa.IP.IsLinkLocalUnicast() || (ipa.Zone != "" && ipa.Zone != dev) || seen[ipa.IP.String()] {
			continue
		}
		seen[ipa.IP.String()] = true
		out = append(out, ipa.IP)
	}
}
