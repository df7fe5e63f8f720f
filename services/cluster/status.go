package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// Status is one member's own view of the cluster (not forwarded: it is
// what this member believes, labelled as local).
type Status struct {
	Member       Beacon           `json:"member"`
	State        string           `json:"state"` // Leader, Follower, Candidate, or not-in-cluster
	LeaderID     string           `json:"leader_id,omitempty"`
	LeaderName   string           `json:"leader_name,omitempty"`
	Term         uint64           `json:"term"`
	CommitIndex  uint64           `json:"commit_index"`
	AppliedIndex uint64           `json:"applied_index"`
	LastContact  string           `json:"last_contact,omitempty"` // follower: since the leader was last heard
	Servers      []ServerStatus   `json:"servers"`
	Forced       directory.Forced `json:"forced"`
	ClusterIP    string           `json:"cluster_ip,omitempty"`
	IPOwner      string           `json:"cluster_ip_owner,omitempty"`
	Read         string           `json:"read"` // always "local"
}

// ServerStatus is a member in the raft configuration.
type ServerStatus struct {
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	Role     string `json:"role,omitempty"`
	Suffrage string `json:"suffrage"`
	Address  string `json:"address"`
}

// LocalStatus is this member's view.
func (a *Agent) LocalStatus() Status {
	s := Status{Member: a.beacon(), State: "not-in-cluster", Read: "local", Servers: []ServerStatus{}}
	r := a.r()
	if r == nil {
		return s
	}
	s.State = r.State().String()
	_, lid := r.LeaderWithID()
	s.LeaderID = string(lid)
	if m, ok := a.Directory().Member(s.LeaderID); ok {
		s.LeaderName = m.Name
	}
	s.Term, s.CommitIndex, s.AppliedIndex = r.CurrentTerm(), r.CommitIndex(), r.AppliedIndex()
	if r.State() != raft.Leader {
		if lc := r.LastContact(); !lc.IsZero() {
			s.LastContact = time.Since(lc).Round(time.Millisecond).String()
		}
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			ss := ServerStatus{ID: string(srv.ID), Suffrage: srv.Suffrage.String(), Address: string(srv.Address)}
			if m, ok := a.Directory().Member(ss.ID); ok {
				ss.Name, ss.Role = m.Name, m.Role
			}
			s.Servers = append(s.Servers, ss)
		}
	}
	if c, ok := a.Directory().Cluster(); ok {
		s.Forced = c.Forced
		s.IPOwner = c.IPOwner.MemberID
	}
	s.ClusterIP = a.Directory().Settings()[SettingClusterIP]
	return s
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, a.LocalStatus())
}

// Health is the leader's view of the whole cluster.
type Health struct {
	Healthy      bool           `json:"healthy"`
	Degraded     []string       `json:"degraded"` // why not, in words
	LeaderID     string         `json:"leader_id"`
	Term         uint64         `json:"term"`
	CommitIndex  uint64         `json:"commit_index"`
	AppliedIndex uint64         `json:"applied_index"`
	Members      []MemberHealth `json:"members"`
	Forced       bool           `json:"forced"`
}

// MemberHealth is one member as the leader sees it.
type MemberHealth struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	Suffrage    string     `json:"suffrage"` // Voter, Nonvoter, or absent
	Leader      bool       `json:"leader"`
	Reachable   bool       `json:"reachable"`
	LastContact *time.Time `json:"last_contact,omitempty"`
	RTTMillis   float64    `json:"rtt_ms,omitempty"`
	Error       string     `json:"error,omitempty"`
}

func (a *Agent) handleHealth(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, a.clusterHealth())
}

// clusterHealth is computed on the leader from the raft configuration,
// the directory, and the leader's probes of every member.
func (a *Agent) clusterHealth() Health {
	r := a.r()
	h := Health{Members: []MemberHealth{}, Degraded: []string{}}
	if r == nil {
		h.Degraded = append(h.Degraded, ErrNotInCluster.Error())
		return h
	}
	h.LeaderID = a.id.ID
	h.Term, h.CommitIndex, h.AppliedIndex = r.CurrentTerm(), r.CommitIndex(), r.AppliedIndex()
	suffrage := map[string]string{}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			suffrage[string(s.ID)] = s.Suffrage.String()
		}
	}
	voters, reachableVoters := 0, 0
	hasWitness := false
	for _, m := range a.Directory().Members() {
		mh := MemberHealth{ID: m.ID, Name: m.Name, Role: m.Role, Suffrage: suffrage[m.ID], Leader: m.ID == a.id.ID}
		if mh.Suffrage == "" {
			mh.Suffrage = "absent"
		}
		if m.Role == directory.MemberWitness {
			hasWitness = true
		}
		if mh.Leader {
			mh.Reachable = true
		} else if pr, ok := a.probes.get(m.ID); ok {
			if !pr.At.IsZero() {
				at := pr.At
				mh.LastContact = &at
			}
			mh.Reachable = a.probedRecently(m.ID)
			mh.RTTMillis = float64(pr.RTT.Microseconds()) / 1000
			mh.Error = pr.Err
		}
		if mh.Suffrage == raft.Voter.String() {
			voters++
			if mh.Reachable {
				reachableVoters++
			}
		}
		if !mh.Reachable {
			h.Degraded = append(h.Degraded, fmt.Sprintf("%s %s (%s) is unreachable", m.Role, m.Name, m.ID))
		}
		if mh.Suffrage != raft.Voter.String() {
			h.Degraded = append(h.Degraded, fmt.Sprintf("%s %s is not a voter (%s)", m.Role, m.Name, mh.Suffrage))
		}
		h.Members = append(h.Members, mh)
	}
	if c, ok := a.Directory().Cluster(); ok && c.Forced.On {
		h.Forced = true
		h.Degraded = append(h.Degraded, fmt.Sprintf("forced single-node mode since %s by %s: %s", c.Forced.Since.Format(time.RFC3339), c.Forced.By, c.Forced.Reason))
	}
	if !hasWitness {
		h.Degraded = append(h.Degraded, "no witness: losing either node stops the cluster")
	}
	if quorum := voters/2 + 1; voters > 0 && reachableVoters < voters && reachableVoters <= quorum {
		h.Degraded = append(h.Degraded, fmt.Sprintf("%d of %d voters reachable: one more failure stops the cluster", reachableVoters, voters))
	}
	if !a.clusterIPSetting().IsValid() {
		h.Degraded = append(h.Degraded, "no cluster IP configured (setting "+SettingClusterIP+")")
	}
	h.Healthy = len(h.Degraded) == 0
	return h
}

// ForceConfirmation must be sent, word for word, to force single-node mode.
const ForceConfirmation = "I know the other node is down and accept the risk of a split brain"

// ForceRequest asks this node to go on alone.
type ForceRequest struct {
	Confirm string `json:"confirm"`
	Reason  string `json:"reason"`
}

func (a *Agent) handleForceSingle(w http.ResponseWriter, r *http.Request) {
	var req ForceRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Confirm != ForceConfirmation {
		apiError(w, fieldError("confirm", fmt.Sprintf("send exactly %q", ForceConfirmation)))
		return
	}
	if err := a.ForceSingle(r.Context(), req.Reason, actor(r), clientAddr(r)); err != nil {
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, a.LocalStatus())
}

// ErrHasQuorum refuses forcing a member that can still reach a quorum.
var ErrHasQuorum = errors.New("this member reaches a leader with a quorum: nothing to force")

// ForceSingle makes this node the only voter, like Proxmox's `pvecm
// expected 1`: raft's configuration is rewritten to this node alone and
// raft restarts, so it leads by itself. The decision is committed (and
// audited) as soon as it leads; the leader loop re-adds the other members
// when they answer again, and lifts the mode.
func (a *Agent) ForceSingle(ctx context.Context, reason, actor, from string) error {
	if a.id.Role != pki.RoleNode {
		return fmt.Errorf("only a node can be forced to go on alone: %w", directory.ErrInvalid)
	}
	r := a.r()
	if r == nil {
		return ErrNotInCluster
	}
	if r.State() == raft.Leader && a.leaderReady.Load() {
		if err := r.VerifyLeader().Error(); err == nil {
			return ErrHasQuorum
		}
	}
	if _, lid := r.LeaderWithID(); lid != "" && string(lid) != a.id.ID && time.Since(r.LastContact()) < 2*a.cfg.Timing.Heartbeat {
		return ErrHasQuorum
	}
	a.joinMu.Lock()
	defer a.joinMu.Unlock()
	a.log.Warn("forcing single-node mode", "by", actor, "reason", reason)
	a.stopRaft()
	self := raft.Server{ID: raft.ServerID(a.id.ID), Address: FormatAddress(a.id.ID, a.addresses()), Suffrage: raft.Voter}
	if err := a.startRaft(nil, &raft.Configuration{Servers: []raft.Server{self}}); err != nil {
		return fmt.Errorf("restart raft alone: %w", err)
	}
	if err := a.waitLeaderReady(ctx, 15*time.Second); err != nil {
		return fmt.Errorf("alone, this node did not become leader: %w", err)
	}
	if reason == "" {
		reason = "forced by " + actor
	}
	_, err := a.propose(directory.TypeForced, actor, from, directory.ForcedPayload{On: true, MemberID: a.id.ID, Reason: reason})
	return err
}

// rateLimit allows a few events a second.
type rateLimit struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func (l *rateLimit) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	const perSecond, burst = 2.0, 10.0
	now := time.Now()
	if l.last.IsZero() {
		l.tokens = burst
	} else {
		l.tokens = min(burst, l.tokens+now.Sub(l.last).Seconds()*perSecond)
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

func (a *Agent) handleMembers(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, a.Directory().Members())
}

// frontdoorHealth is a node's /api/v1/health answer.
type frontdoorHealth = frontdoor.Health

// handleMemberHealth asks a member's front door for its health (what its
// supervisor says of its services), so that a console reached through
// the cluster IP sees every node's.
func (a *Agent) handleMemberHealth(w http.ResponseWriter, r *http.Request) {
	id, err := a.nodeID(r.PathValue("id"))
	if err != nil {
		apiError(w, err)
		return
	}
	m, _ := a.Directory().Member(id)
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	var h frontdoor.Health
	if err := a.memberCall(ctx, m, http.MethodGet, "/api/v1/health", nil, &h); err != nil {
		w.Header().Set("Retry-After", "1")
		frontdoor.WriteError(w, http.StatusBadGateway, "member_unreachable", fmt.Sprintf("%s did not answer: %v", m.Name, err))
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, h)
}

// LogLine is one line a service wrote.
type LogLine struct {
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// handleMemberLog answers a service's last output lines on a member: this
// one's from its supervisor, another's by forwarding the request there
// (with the user's own credentials, which that member checks).
func (a *Agent) handleMemberLog(w http.ResponseWriter, r *http.Request) {
	id, err := a.nodeID(r.PathValue("id"))
	if err != nil {
		apiError(w, err)
		return
	}
	if id != a.id.ID {
		m, _ := a.Directory().Member(id)
		a.dial.Forward(w, r, m.ID, m.Name, m.Addresses)
		return
	}
	lines := 200
	if s := r.URL.Query().Get("lines"); s != "" {
		if lines, err = strconv.Atoi(s); err != nil || lines < 1 || lines > 5000 {
			apiError(w, fieldError("lines", "want 1 to 5000"))
			return
		}
	}
	if a.cfg.ServiceLog == nil {
		frontdoor.WriteError(w, http.StatusNotFound, "no_logs", "this member keeps no service logs")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	out, err := a.cfg.ServiceLog(ctx, r.PathValue("service"), lines)
	if err != nil {
		frontdoor.WriteError(w, http.StatusBadGateway, "supervisor", fmt.Sprintf("the supervisor did not give the log: %v", err))
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, out)
}
