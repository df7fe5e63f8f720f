// Package dhcp is the provisioning network's DHCP service: leases from a
// configured range (and reservations by MAC), kept across restarts, and
// the boot answers PXE and iPXE clients need (boot.go). The handler is
// pure logic on parsed packets (handler.go), tested without sockets; the
// server around it (server4 on the provisioning interface only) comes with
// the provisioning service.
package dhcp

import (
	"bufio"
	"bytes"
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
// then the address it had, then the one it asks for, then the next free
// one after the last handed out. Offers are held briefly; a lease is
// recorded (and saved) on ACK.
//
// Leases are saved as a journal, one JSON line per change, like Kea's
// memfile: an ACK costs one short append however many leases there are.
// The journal is rewritten with only the live leases when it has grown
// to twice their number.
type Leases struct {
	mu         sync.Mutex
	start      netip.Addr
	end        netip.Addr
	reserved   map[string]netip.Addr // by MAC
	reservedIP map[netip.Addr]string // the same, by address
	byMAC      map[string]*Lease
	byIP       map[netip.Addr]*Lease
	offers     map[netip.Addr]offer
	declined   map[netip.Addr]time.Time
	next       netip.Addr // where the search for a free address starts
	now        func() time.Time

	file    string   // the journal ("": not saved)
	journal *os.File // open for appending
	lines   int      // lines in the journal
}

type offer struct {
	mac   string
	until time.Time
}

// NewLeases makes the lease table of [start, end], loading the journal
// file if it exists. Reservations may lie outside the range.
func NewLeases(start, end netip.Addr, reserved map[string]netip.Addr, file string, now func() time.Time) (*Leases, error) {
	if !start.Is4() || !end.Is4() || end.Less(start) {
		return nil, fmt.Errorf("dhcp: range %v-%v: want two IPv4 addresses, the first not above the second", start, end)
	}
	if now == nil {
		now = time.Now
	}
	l := &Leases{start: start, end: end, reserved: map[string]netip.Addr{}, reservedIP: map[netip.Addr]string{},
		byMAC: map[string]*Lease{}, byIP: map[netip.Addr]*Lease{},
		offers: map[netip.Addr]offer{}, declined: map[netip.Addr]time.Time{}, next: start, file: file, now: now}
	for mac, ip := range reserved {
		hw, err := net.ParseMAC(mac)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("dhcp: reservation %s -> %v: want a MAC and an IPv4 address", mac, ip)
		}
		if other, ok := l.reservedIP[ip]; ok {
			return nil, fmt.Errorf("dhcp: %v is reserved for both %s and %s", ip, other, hw)
		}
		l.reserved[hw.String()] = ip
		l.reservedIP[ip] = hw.String()
	}
	if file == "" {
		return l, nil
	}
	if err := l.load(); err != nil {
		return nil, err
	}
	// Start from a compact journal: only the live leases.
	if err := l.compactLocked(); err != nil {
		return nil, err
	}
	return l, nil
}

// load replays the journal. A lease line with an expiry in the past
// (a release) removes the MAC's lease. A torn last line (a crash in the
// middle of an append) is skipped; any other bad line is an error.
func (l *Leases) load() error {
	f, err := os.Open(l.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: leases: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	line, torn := 0, 0
	for sc.Scan() {
		line++
		if torn > 0 {
			return fmt.Errorf("dhcp: leases in %s: line %d does not parse", l.file, torn)
		}
		var le Lease
		if err := json.Unmarshal(sc.Bytes(), &le); err != nil {
			torn = line
			continue
		}
		if old, ok := l.byMAC[le.MAC]; ok {
			delete(l.byIP, old.IP)
			delete(l.byMAC, le.MAC)
		}
		if le.Expires.After(l.now()) {
			le := le
			l.byMAC[le.MAC], l.byIP[le.IP] = &le, &le
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("dhcp: leases in %s: %w", l.file, err)
	}
	return nil
}

// Close closes the journal.
func (l *Leases) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.journal == nil {
		return nil
	}
	err := l.journal.Close()
	l.journal = nil
	return err
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
	// From the address after the last one handed out, round the range
	// once: each address is looked at once per lap, not once per client.
	ip := l.next
	for {
		if l.free(ip, mac, now) {
			l.next = l.after(ip)
			return ip, nil
		}
		ip = l.after(ip)
		if ip == l.next {
			return netip.Addr{}, ErrExhausted
		}
	}
}

// after is the range's address after ip, the first after the last.
func (l *Leases) after(ip netip.Addr) netip.Addr {
	if ip == l.end {
		return l.start
	}
	return ip.Next()
}

// free reports whether ip may go to mac now.
func (l *Leases) free(ip netip.Addr, mac string, now time.Time) bool {
	if !ip.Is4() || ip.Less(l.start) || l.end.Less(ip) {
		return false
	}
	if until, ok := l.declined[ip]; ok {
		if until.After(now) {
			return false
		}
		delete(l.declined, ip)
	}
	if m, ok := l.reservedIP[ip]; ok && m != mac {
		return false
	}
	if le, ok := l.byIP[ip]; ok && le.Expires.After(now) && le.MAC != mac {
		return false
	}
	if o, ok := l.offers[ip]; ok {
		if o.until.After(now) && o.mac != mac {
			return false
		}
		if !o.until.After(now) {
			delete(l.offers, ip)
		}
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
	return *le, l.appendLocked(*le)
}

// Release ends mac's lease of ip.
func (l *Leases) Release(mac string, ip netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[mac]
	if !ok || le.IP != ip {
		return nil
	}
	return l.endLocked(le)
}

// Decline keeps ip out of use for a while: the client found it taken.
func (l *Leases) Decline(mac string, ip netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.declined[ip] = l.now().Add(declineHold)
	if le, ok := l.byMAC[mac]; ok && le.IP == ip {
		return l.endLocked(le)
	}
	return nil
}

// endLocked removes a lease and journals its end.
func (l *Leases) endLocked(le *Lease) error {
	delete(l.byMAC, le.MAC)
	delete(l.byIP, le.IP)
	return l.appendLocked(Lease{MAC: le.MAC, IP: le.IP})
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

// appendLocked journals one change, and compacts the journal when it
// has grown to twice the live leases.
func (l *Leases) appendLocked(le Lease) error {
	if l.file == "" {
		return nil
	}
	if l.lines > 2*len(l.byMAC)+64 {
		return l.compactLocked()
	}
	b, err := json.Marshal(le)
	if err != nil {
		return err
	}
	if l.journal == nil {
		if l.journal, err = os.OpenFile(l.file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			return fmt.Errorf("dhcp: save leases: %w", err)
		}
	}
	if _, err := l.journal.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	l.lines++
	return nil
}

// compactLocked rewrites the journal with the live leases only,
// atomically (a new file renamed over the old).
func (l *Leases) compactLocked() error {
	var buf bytes.Buffer
	live := l.currentLocked()
	for _, le := range live {
		b, err := json.Marshal(le)
		if err != nil {
			return err
		}
		buf.Write(append(b, '\n'))
	}
	if err := os.MkdirAll(filepath.Dir(l.file), 0o700); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	tmp := l.file + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	if l.journal != nil {
		l.journal.Close()
		l.journal = nil
	}
	if err := os.Rename(tmp, l.file); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	l.lines = len(live)
	return nil
}
