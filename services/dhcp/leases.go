// Package dhcp is the provisioning network's DHCP service: leases from a
// configured range (and reservations by MAC), kept across restarts, and
// the boot answers PXE and iPXE clients need (boot.go). The handler is
// pure logic on parsed packets (handler.go), tested without sockets; the
// server around it (server4 on the provisioning interface only) comes with
// the provisioning service.
package dhcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Lease is an address given to a client.
type Lease struct {
	MAC     string     `json:"mac"`
	IP      netip.Addr `json:"ip"`
	Expires time.Time  `json:"expires"`
	Host    string     `json:"hostname,omitempty"`
}

// ErrExhausted means no address of the range is free.
var ErrExhausted = errors.New("no free address in the range")

// declineHold is how long an address a client declined (someone else
// answers on it) is kept out of use.
const declineHold = 10 * time.Minute

// Leases hands out the addresses of a range: a MAC's reservation first,
// then the address it had, then the one it asks for, then the first free
// one. Offers are held briefly; a lease is recorded (and saved) on ACK.
type Leases struct {
	mu       sync.Mutex
	start    netip.Addr
	end      netip.Addr
	reserved map[string]netip.Addr // by MAC
	byMAC    map[string]*Lease
	byIP     map[netip.Addr]*Lease
	offers   map[netip.Addr]offer
	declined map[netip.Addr]time.Time
	file     string // where leases are saved ("": not saved)
	now      func() time.Time
}

type offer struct {
	mac   string
	until time.Time
}

// NewLeases makes the lease table of [start, end], loading file if it
// exists. Reservations may lie outside the range.
func NewLeases(start, end netip.Addr, reserved map[string]netip.Addr, file string, now func() time.Time) (*Leases, error) {
	if !start.Is4() || !end.Is4() || end.Less(start) {
		return nil, fmt.Errorf("dhcp: range %v-%v: want two IPv4 addresses, the first not above the second", start, end)
	}
	if now == nil {
		now = time.Now
	}
	l := &Leases{start: start, end: end, reserved: map[string]netip.Addr{}, byMAC: map[string]*Lease{}, byIP: map[netip.Addr]*Lease{},
		offers: map[netip.Addr]offer{}, declined: map[netip.Addr]time.Time{}, file: file, now: now}
	for mac, ip := range reserved {
		hw, err := net.ParseMAC(mac)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("dhcp: reservation %s -> %v: want a MAC and an IPv4 address", mac, ip)
		}
		l.reserved[hw.String()] = ip
	}
	if file == "" {
		return l, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: leases: %w", err)
	}
	var saved []Lease
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("dhcp: leases in %s: %w", file, err)
	}
	for _, s := range saved {
		if s.Expires.After(now()) {
			s := s
			l.byMAC[s.MAC], l.byIP[s.IP] = &s, &s
		}
	}
	return l, nil
}

// Offer picks the address to offer mac, holding it for a while.
func (l *Leases) Offer(mac string, requested netip.Addr) (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	ip, err := l.pick(mac, requested, now)
	if err != nil {
		return netip.Addr{}, err
	}
	l.offers[ip] = offer{mac: mac, until: now.Add(time.Minute)}
	return ip, nil
}

func (l *Leases) pick(mac string, requested netip.Addr, now time.Time) (netip.Addr, error) {
	if ip, ok := l.reserved[mac]; ok {
		return ip, nil
	}
	if le, ok := l.byMAC[mac]; ok && le.Expires.After(now) {
		return le.IP, nil
	}
	if requested.IsValid() && l.free(requested, mac, now) {
		return requested, nil
	}
	for ip := l.start; ; ip = ip.Next() {
		if l.free(ip, mac, now) {
			return ip, nil
		}
		if ip == l.end {
			return netip.Addr{}, ErrExhausted
		}
	}
}

// free reports whether ip may go to mac now.
func (l *Leases) free(ip netip.Addr, mac string, now time.Time) bool {
	if !ip.Is4() || ip.Less(l.start) || l.end.Less(ip) {
		return false
	}
	if until, ok := l.declined[ip]; ok && until.After(now) {
		return false
	}
	for m, r := range l.reserved {
		if r == ip && m != mac {
			return false
		}
	}
	if le, ok := l.byIP[ip]; ok && le.Expires.After(now) && le.MAC != mac {
		return false
	}
	if o, ok := l.offers[ip]; ok && o.until.After(now) && o.mac != mac {
		return false
	}
	return true
}

// Ack records a lease of ip to mac for d, if ip may be its: its
// reservation, its lease, an address offered to it or a free one.
func (l *Leases) Ack(mac string, ip netip.Addr, d time.Duration, host string) (Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if r, ok := l.reserved[mac]; ok && r != ip {
		return Lease{}, fmt.Errorf("%s is reserved %v, not %v", mac, r, ip)
	}
	if _, ok := l.reserved[mac]; !ok && !l.free(ip, mac, now) {
		return Lease{}, fmt.Errorf("%v is not %s's to take", ip, mac)
	}
	if old, ok := l.byMAC[mac]; ok && old.IP != ip {
		delete(l.byIP, old.IP)
	}
	le := &Lease{MAC: mac, IP: ip, Expires: now.Add(d), Host: host}
	l.byMAC[mac], l.byIP[ip] = le, le
	delete(l.offers, ip)
	return *le, l.saveLocked()
}

// Release ends mac's lease of ip.
func (l *Leases) Release(mac string, ip netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[mac]
	if !ok || le.IP != ip {
		return nil
	}
	delete(l.byMAC, mac)
	delete(l.byIP, ip)
	return l.saveLocked()
}

// Decline keeps ip out of use for a while: the client found it taken.
func (l *Leases) Decline(mac string, ip netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.declined[ip] = l.now().Add(declineHold)
	if le, ok := l.byMAC[mac]; ok && le.IP == ip {
		delete(l.byMAC, mac)
		delete(l.byIP, ip)
		return l.saveLocked()
	}
	return nil
}

// Lease returns mac's current lease.
func (l *Leases) Lease(mac string) (Lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[mac]
	if !ok || !le.Expires.After(l.now()) {
		return Lease{}, false
	}
	return *le, true
}

// All returns the current leases, by address.
func (l *Leases) All() []Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.currentLocked()
}

func (l *Leases) currentLocked() []Lease {
	now := l.now()
	out := make([]Lease, 0, len(l.byIP))
	for _, le := range l.byIP {
		if le.Expires.After(now) {
			out = append(out, *le)
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}

// saveLocked writes the current leases, atomically.
func (l *Leases) saveLocked() error {
	if l.file == "" {
		return nil
	}
	b, err := json.MarshalIndent(l.currentLocked(), "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(l.file), 0o700); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	tmp := l.file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	if err := os.Rename(tmp, l.file); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	return nil
}
