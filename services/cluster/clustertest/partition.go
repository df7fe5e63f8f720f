package clustertest

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// addresses are what a member is reached at: its management address and,
// for nodes, its interconnect link-local address.
func (m *Member) addresses() (v4 []string, v6 []string) {
	v4 = []string{m.IP}
	if m.Role == "node" {
		out := m.NS.Run("ip", "-6", "-o", "addr", "show", "dev", "ic0", "scope", "link")
		for _, f := range strings.Fields(out) {
			if strings.HasPrefix(f, "fe80::") {
				v6 = append(v6, strings.Split(f, "/")[0])
			}
		}
	}
	return v4, v6
}

// ensureTable creates the member's partition table, empty.
func (m *Member) ensureTable() {
	m.NS.Run("nft", "-f", "-", `table inet partition {
	chain in { type filter hook input priority -10; }
	chain out { type filter hook output priority -10; }
}`)
}

func (m *Member) drop(chain, dir string, to *Member) {
	v4, v6 := to.addresses()
	for _, a := range v4 {
		m.NS.Run("nft", "add", "rule", "inet", "partition", chain, "ip", dir, a, "drop")
	}
	for _, a := range v6 {
		m.NS.Run("nft", "add", "rule", "inet", "partition", chain, "ip6", dir, a, "drop")
	}
}

// Cut stops all traffic between two members, both ways, on every path
// (management and interconnect), as if the link between them broke.
func (c *Cluster) Cut(a, b *Member) {
	for _, m := range []*Member{a, b} {
		m.ensureTable()
	}
	a.drop("out", "daddr", b)
	a.drop("in", "saddr", b)
	b.drop("out", "daddr", a)
	b.drop("in", "saddr", a)
}

// CutOneWay drops what from sends to to; replies the other way pass.
func (c *Cluster) CutOneWay(from, to *Member) {
	from.ensureTable()
	from.drop("out", "daddr", to)
}

// Isolate cuts a member from everyone, the client included, while it runs.
func (c *Cluster) Isolate(m *Member) {
	m.LinksDown()
}

// InterconnectDown cuts only the direct link between the nodes.
func (c *Cluster) InterconnectDown() { c.A.NS.Run("ip", "link", "set", "ic0", "down") }

// Heal removes every cut.
func (c *Cluster) Heal() {
	for _, m := range c.Members() {
		_ = m.NS.Command("nft", "delete", "table", "inet", "partition").Run()
		m.LinksUp()
	}
}

// holdLine matches the agent's log of taking and releasing the cluster IP.
var holdLine = regexp.MustCompile(`time=(\S+) level=\S+ msg="cluster IP (taken|released)"`)

// Interval is a span during which a member held the cluster IP.
type Interval struct {
	Member   string
	From, To time.Time // To is zero while still held
}

// ClusterIPHolds reads, from the nodes' logs, when each held the cluster
// IP. The lines are written just after the address was added, and just
// after it was removed, so a real overlap shows as overlapping spans.
func (c *Cluster) ClusterIPHolds() []Interval {
	var out []Interval
	for _, m := range []*Member{c.A, c.B} {
		var open *Interval
		for _, l := range strings.Split(m.Log(), "\n") {
			g := holdLine.FindStringSubmatch(l)
			if g == nil {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, g[1])
			if err != nil {
				continue
			}
			switch {
			case g[2] == "taken" && open == nil:
				open = &Interval{Member: m.Name, From: t}
			case g[2] == "released" && open != nil:
				open.To = t
				out = append(out, *open)
				open = nil
			}
		}
		if open != nil {
			out = append(out, *open)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From.Before(out[j].From) })
	return out
}

// Overlaps returns the pairs of holds by different members that overlap.
func Overlaps(holds []Interval) []string {
	var bad []string
	for i := range holds {
		for j := i + 1; j < len(holds); j++ {
			a, b := holds[i], holds[j]
			if a.Member == b.Member {
				continue
			}
			aEnd := a.To
			if aEnd.IsZero() {
				aEnd = time.Now().Add(time.Hour)
			}
			if b.From.Before(aEnd) {
				bad = append(bad, fmt.Sprintf("%s held it %s..%s while %s took it at %s",
					a.Member, a.From.Format("15:04:05.000"), a.To.Format("15:04:05.000"), b.Member, b.From.Format("15:04:05.000")))
			}
		}
	}
	return bad
}
