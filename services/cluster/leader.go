package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/pki"
)

// SettingClusterIP is the cluster setting naming the cluster IP (with its
// prefix length), e.g. 192.0.2.100/24.
const SettingClusterIP = "cluster.ip"

// watchLeadership starts the leader loop when this member wins and stops
// it when it loses. Losing drops the cluster IP before anything else.
func (a *Agent) watchLeadership(r *raft.Raft, notify <-chan bool) {
	var stop context.CancelFunc
	var wg sync.WaitGroup
	end := func() {
		if stop != nil {
			stop()
			wg.Wait()
			stop = nil
		}
	}
	defer end()
	for {
		select {
		case <-a.ctx.Done():
			return
		case leader := <-notify:
			a.leaderGen.Add(1)
			a.leaderReady.Store(false)
			if !leader {
				if a.ip != nil {
					a.ip.release()
				}
				end()
				a.heartbeats.reset() // a later term starts from what it sees
				a.log.Info("lost leadership", "term", r.CurrentTerm())
				continue
			}
			end()
			if a.r() != r {
				return // this raft instance was replaced
			}
			a.log.Info("won leadership", "term", r.CurrentTerm())
			ctx, cancel := context.WithCancel(a.ctx)
			stop = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.leaderLoop(ctx, r)
			}()
		}
	}
}

// leaderLoop is the work only the leader does. Placement and HA decisions
// join it in later issues.
func (a *Agent) leaderLoop(ctx context.Context, r *raft.Raft) {
	if a.id.Role == pki.RoleWitness {
		a.handOver(ctx, r)
		return
	}
	// Everything committed before this term is applied here first.
	if err := r.Barrier(10 * time.Second).Error(); err != nil {
		a.log.Warn("leader barrier", "err", err)
		return
	}
	a.leaderReady.Store(true)
	go a.watchTasks(ctx)
	term := r.CurrentTerm()
	leaderSince := time.Now()

	var held netip.Prefix
	var heldAt time.Time
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if want := a.clusterIPSetting(); a.ip != nil && want != held {
			if held.IsValid() {
				a.ip.release()
				held = netip.Prefix{}
			}
			if want.IsValid() {
				if err := a.takeClusterIP(ctx, r, term, want); err != nil {
					if ctx.Err() == nil {
						a.log.Warn("cluster IP not taken", "ip", want, "err", err)
					}
				} else {
					held, heldAt = want, time.Now()
				}
			}
		}
		// Renew the address's lifetime, and repeat the announcement a few
		// times after taking over: one lost gratuitous ARP must not strand
		// clients on the old holder.
		if held.IsValid() {
			a.ip.renew()
			if since := time.Since(heldAt); since > 900*time.Millisecond && since < 3500*time.Millisecond {
				a.ip.announce()
			}
		}
		a.reconcileAddresses(r)
		a.probeMembers(ctx, r)
		a.reconcileMembership(r)
		a.liftForcedMode(ctx, r)
		a.restartLostVMs(leaderSince)
		a.drainMaintenance()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// handOver gives the witness's leadership to a node that answers. If
// none can take it, the witness leads on (the cluster still commits; no
// cluster IP moves to the witness) and tries again each second.
func (a *Agent) handOver(ctx context.Context, r *raft.Raft) {
	for ctx.Err() == nil && !a.handOverOnce(ctx, r) {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// handOverOnce probes the voting nodes at once and hands leadership to
// the first that answers. It does not wait for the others: the witness
// usually leads because a node was lost, and the lost node's probe only
// ends at its timeout, while every proposal waits for the hand-over.
func (a *Agent) handOverOnce(ctx context.Context, r *raft.Raft) bool {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	servers := f.Configuration().Servers
	answered := make(chan raft.Server, len(servers)) // room for every probe: none blocks
	probing := 0
	for _, s := range servers {
		m, ok := a.Directory().Member(string(s.ID))
		if !ok || m.Role != directory.MemberNode || s.Suffrage != raft.Voter || len(m.Addresses) == 0 {
			continue
		}
		probing++
		go func() {
			if a.probeMember(pctx, m).Err != "" {
				s = raft.Server{}
			}
			answered <- s
		}()
	}
	for ; probing > 0; probing-- {
		s := <-answered
		if s.ID == "" {
			continue
		}
		name := a.memberName(string(s.ID))
		if err := r.LeadershipTransferToServer(s.ID, s.Address).Error(); err != nil {
			a.log.Warn("the witness could not hand leadership to a node", "node", name, "err", err)
			continue
		}
		a.log.Info("the witness handed leadership to a node", "node", name)
		return true
	}
	return false
}

// clusterIPSetting is the configured cluster IP, if any. It is also kept
// in a file of its own, so that a member restarting knows it before the
// directory is replayed (and never advertises it as its own address).
func (a *Agent) clusterIPSetting() netip.Prefix {
	path := filepath.Join(a.cfg.DataDir, "cluster-ip")
	if v, ok := a.Directory().Settings()[SettingClusterIP]; ok {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}
		}
		if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != v {
			_ = pki.WriteFileAtomic(path, []byte(v+"\n"), 0o600)
		}
		return p
	}
	if _, inCluster := a.Directory().Cluster(); inCluster {
		return netip.Prefix{} // the setting was removed
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return netip.Prefix{}
	}
	p, _ := netip.ParsePrefix(strings.TrimSpace(string(b)))
	return p
}

// takeClusterIP commits that this member holds the cluster IP in this
// term, waits out the previous leader's lease (it drops the address when
// its lease ends), then adds the address and announces it.
func (a *Agent) takeClusterIP(ctx context.Context, r *raft.Raft, term uint64, ip netip.Prefix) error {
	start := time.Now()
	if _, err := a.propose(directory.TypeIPOwner, "member:"+a.cfg.Name, "", directory.IPOwnerPayload{MemberID: a.id.ID, Term: term}); err != nil {
		return fmt.Errorf("commit ownership: %w", err)
	}
	// A deposed leader steps down within its lease of its last contact
	// with a quorum. A voter that elected this member had not heard from
	// it for at least a heartbeat timeout, so by now the old leader's lease
	// ran out unless lease plus a margin is longer than that: wait the
	// difference. A planned hand-over elects at once, without that silence:
	// the old leader drops the address as it sees the new term, within
	// milliseconds, which the floor covers.
	wait := max(100*time.Millisecond, a.cfg.Timing.LeaderLease+100*time.Millisecond-a.cfg.Timing.Heartbeat)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
	}
	if r.State() != raft.Leader {
		return errors.New("no longer the leader")
	}
	if err := a.ip.hold(ip); err != nil {
		return err
	}
	a.log.Info("cluster IP taken", "ip", ip, "term", term, "after", time.Since(start).Round(time.Millisecond))
	return nil
}

// reconcileAddresses updates a voter's raft address when the directory
// has newer front door addresses for it (DHCP moved it).
func (a *Agent) reconcileAddresses(r *raft.Raft) {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, s := range f.Configuration().Servers {
		m, ok := a.Directory().Member(string(s.ID))
		if !ok || len(m.Addresses) == 0 {
			continue
		}
		want := FormatAddress(m.ID, m.Addresses)
		if want != s.Address && s.Suffrage == raft.Voter {
			if err := r.AddVoter(s.ID, want, 0, 5*time.Second).Error(); err != nil {
				a.log.Warn("raft address update", "member", m.Name, "err", err)
			} else {
				a.log.Info("raft address updated", "member", m.Name, "address", want)
			}
		}
	}
}

// probes is the leader's record of when it last reached each member.
type probes struct {
	mu   sync.Mutex
	last map[string]probe
}

type probe struct {
	At      time.Time
	RTT     time.Duration
	Err     string
	Applied uint64 // the member's applied raft index
}

func newProbes() *probes { return &probes{last: map[string]probe{}} }

// heartbeats is raft's word, while this member leads, on the peers its
// heartbeats fail to reach, and when each last answered one.
type heartbeats struct {
	mu      sync.Mutex
	failing map[string]time.Time
}

func newHeartbeats() *heartbeats { return &heartbeats{failing: map[string]time.Time{}} }

// failed records a failed heartbeat; true when id was not failing yet.
func (h *heartbeats) failed(id string, lastContact time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, already := h.failing[id]
	h.failing[id] = lastContact
	return !already
}

func (h *heartbeats) resumed(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failing, id)
}

// reset forgets what an earlier term saw.
func (h *heartbeats) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.failing)
}

// failingSince says whether heartbeats to id fail, and when it last
// answered one (zero if never, in this term).
func (h *heartbeats) failingSince(id string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.failing[id]
	return t, ok
}

// probedRecently says whether the leader's last probe of a member
// answered within the last 3 s.
func (a *Agent) probedRecently(id string) bool {
	pr, ok := a.probes.get(id)
	return ok && pr.Err == "" && time.Since(pr.At) < 3*time.Second
}

func (p *probes) set(id string, pr probe) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.last[id]
	if pr.Err != "" {
		pr.At = old.At // keep the last success
	}
	p.last[id] = pr
}

func (p *probes) get(id string) (probe, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, ok := p.last[id]
	return pr, ok
}

// MemberState is what a member tells the leader's probes.
type MemberState struct {
	MemberID     string   `json:"member_id"`
	State        string   `json:"state"`
	AppliedIndex uint64   `json:"applied_index"`
	Forced       bool     `json:"forced"` // this member was forced to go on alone
	Voters       []string `json:"voters"` // its raft configuration's voters
}

// probeMembers asks every other member in the directory for its state
// over member TLS; answers say who is reachable (for health, and for
// re-adding members after forced single-node mode) and how far each has
// applied the log (for promoting new members).
func (a *Agent) probeMembers(ctx context.Context, r *raft.Raft) {
	var wg sync.WaitGroup
	for _, m := range a.Directory().Members() {
		if m.ID == a.id.ID || len(m.Addresses) == 0 {
			continue
		}
		wg.Add(1)
		go func(m directory.Member) {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			a.probeMember(pctx, m)
		}(m)
	}
	wg.Wait()
}

// probeMember asks a member for its state, records the answer (or the
// error) as its probe and returns it.
func (a *Agent) probeMember(ctx context.Context, m directory.Member) probe {
	start := time.Now()
	var st MemberState
	err := a.memberCall(ctx, m, http.MethodGet, "/api/v1/cluster/members/self", nil, &st)
	if err == nil && st.MemberID != m.ID {
		err = fmt.Errorf("answered as %s", st.MemberID)
	}
	pr := probe{At: time.Now(), RTT: time.Since(start), Applied: st.AppliedIndex}
	if err != nil {
		pr.Err = err.Error()
	}
	a.probes.set(m.ID, pr)
	return pr
}

// liftForcedMode records the end of forced single-node mode once every
// member is a voter again (reconcileMembership brings them back as they
// answer).
func (a *Agent) liftForcedMode(ctx context.Context, r *raft.Raft) {
	c, ok := a.Directory().Cluster()
	if !ok || !c.Forced.On {
		return
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters[string(s.ID)] = true
		}
	}
	for _, m := range a.Directory().Members() {
		if !voters[m.ID] {
			return
		}
	}
	if _, err := a.propose(directory.TypeForced, "member:"+a.cfg.Name, "", directory.ForcedPayload{On: false, MemberID: a.id.ID, Reason: "every member is back"}); err != nil {
		a.log.Warn("lifting forced mode", "err", err)
		return
	}
	a.log.Info("forced single-node mode lifted: every member is back")
}

// housekeeping runs on every member: a member that does not lead must not
// hold the cluster IP (left over from before a crash, say), and the
// member's own record in the directory is kept current.
func (a *Agent) housekeeping(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var published string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r := a.r()
		if r == nil {
			continue
		}
		if a.ip != nil && r.State() != raft.Leader {
			a.ip.ensureReleased(a.clusterIPSetting())
		}
		if err := a.renameCertificate(); err != nil {
			a.log.Warn("member certificate not renamed", "err", err)
		}
		// Publish this member's addresses and inventory when they change.
		upd := directory.MemberUpdatePayload{ID: a.id.ID, Addresses: a.addresses()}
		if a.cfg.Inventory != nil {
			inv := a.cfg.Inventory()
			upd.Inventory = &inv
		}
		b, _ := json.Marshal(upd)
		if string(b) == published {
			continue
		}
		if m, ok := a.Directory().Member(a.id.ID); ok && slices.Equal(m.Addresses, upd.Addresses) && inventoryEqual(m.Inventory, upd.Inventory) {
			published = string(b)
			continue
		}
		if err := a.updateSelf(ctx, upd); err == nil {
			published = string(b)
		}
	}
}

func inventoryEqual(a, b *directory.Inventory) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// observe logs raft's view of peers failing and recovering.
func (a *Agent) observe(r *raft.Raft) {
	ch := make(chan raft.Observation, 32)
	r.RegisterObserver(raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation:
			return true
		}
		return false
	}))
	go func() {
		for {
			select {
			case <-a.ctx.Done():
				return
			case o := <-ch:
				switch d := o.Data.(type) {
				case raft.FailedHeartbeatObservation:
					// Log the transition, not every retry.
					if a.heartbeats.failed(string(d.PeerID), d.LastContact) {
						a.log.Warn("peer missed heartbeats", "peer", d.PeerID, "last_contact", d.LastContact)
					}
				case raft.ResumedHeartbeatObservation:
					a.heartbeats.resumed(string(d.PeerID))
					a.log.Info("peer heartbeats resumed", "peer", d.PeerID)
				case raft.LeaderObservation:
					a.log.Info("leader", "id", d.LeaderID, "term", r.CurrentTerm())
				}
			}
		}
	}()
}
