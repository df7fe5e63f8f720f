package cluster

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
)

// The node-local API serves the node's own services (storage, VMs) on the
// agent's Unix socket only: the front door routes no /local/ path, and a
// request carrying X-Forwarded-For came through a proxy and is refused.

// LocalView is what the node's services (storage, VMs) reconcile
// against.
type LocalView struct {
	Index     uint64 `json:"index"` // the directory's applied index
	Self      string `json:"self"`  // this member's ID
	InCluster bool   `json:"in_cluster"`
	// Current says the member has caught up with the cluster (it leads,
	// or it heard from the leader lately and applied what was committed):
	// only then may a storage service act on being named primary or on a
	// volume's absence.
	Current bool `json:"current"`
	// Quorum says the member is part of a majority now (it leads, or it
	// heard from the leader within three heartbeats). A node must have
	// stopped its VMs FenceAfter its last contact with the majority: the
	// survivor restarts them elsewhere after that bound (fenceWait).
	Quorum bool `json:"quorum"`
	// QuorumAge is how long ago, when the view was answered, this member
	// last heard from the majority (a leader: twice its lease, the longest
	// raft lets it lead without one); Waited is how long the answer
	// waited for a change. QuorumAt, set by LocalClient.View, places the
	// contact no later than the request's sending plus Waited minus
	// QuorumAge.
	QuorumAge  time.Duration      `json:"quorum_age"`
	Waited     time.Duration      `json:"waited"`
	QuorumAt   time.Time          `json:"-"`
	FenceAfter time.Duration      `json:"fence_after"`
	Members    []directory.Member `json:"members"`
	Volumes    []directory.Volume `json:"volumes"`
	VMs        []directory.VM     `json:"vms"`
	// The provisioning plan (nil: never set) and the cluster CA's
	// fingerprint, which the installers it boots pin.
	Provisioning  *directory.Provisioning `json:"provisioning,omitempty"`
	CAFingerprint string                  `json:"ca_fingerprint,omitempty"`
	// DiskBoot are the MACs of machines installed or joined: their
	// network boot hands over to their own disk (forget one to install
	// it again).
	DiskBoot []string `json:"disk_boot,omitempty"`
}

// Principal is an authenticated user, as the local API reports it.
type Principal struct {
	User string         `json:"user"`
	Role directory.Role `json:"role"`
}

func (a *Agent) local(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get(frontdoor.HeaderMember) != "" {
			frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
			return
		}
		next(w, r)
	}
}

// handleLocalView answers the node's view, waiting (up to ?wait=
// seconds) until the directory has applied past ?after=.
func (a *Agent) handleLocalView(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
	wait, err := strconv.Atoi(q.Get("wait"))
	if err != nil || wait < 0 || wait > 60 {
		wait = 0
	}
	events, unsubscribe := a.Directory().Subscribe(16)
	defer unsubscribe()
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(wait)*time.Second)
	defer cancel()
	ticker := time.NewTicker(time.Second) // raft restarts replace the directory
	defer ticker.Stop()
	for a.Directory().AppliedIndex() <= after && wait > 0 {
		select {
		case <-events:
		case <-ticker.C:
		case <-ctx.Done():
			wait = 0
		}
	}
	d := a.Directory()
	view := LocalView{Index: d.AppliedIndex(), Self: a.id.ID, Members: d.Members(), Volumes: d.Volumes(), VMs: d.VMs()}
	view.FenceAfter = a.fenceAfter()
	if p, ok := d.Provisioning(); ok {
		view.Provisioning = &p
		for _, m := range d.Machines() {
			if m.State == directory.MachineInstalled || m.State == directory.MachineJoined {
				view.DiskBoot = append(view.DiskBoot, m.MAC)
			}
		}
	}
	if c, ok := d.Cluster(); ok {
		view.CAFingerprint = c.CAFingerprint
	}
	if rf := a.r(); rf != nil {
		view.InCluster = true
		switch {
		case rf.State() == raft.Leader && a.leaderReady.Load():
			view.Quorum, view.QuorumAge = true, 2*a.cfg.Timing.LeaderLease
		case rf.State() == raft.Follower && !rf.LastContact().IsZero():
			view.QuorumAge = time.Since(rf.LastContact())
			view.Quorum = view.QuorumAge < 3*a.cfg.Timing.Heartbeat
		}
		view.Current = rf.State() == raft.Leader ||
			(rf.State() == raft.Follower && time.Since(rf.LastContact()) < 3*time.Second && rf.AppliedIndex() >= rf.CommitIndex() && d.AppliedIndex() > 0)
	}
	if !view.Quorum {
		// Heard from no majority lately, or never: no contact to count on.
		view.QuorumAge = max(view.QuorumAge, view.FenceAfter)
	}
	view.Waited = time.Since(start)
	frontdoor.WriteJSON(w, http.StatusOK, view)
}

// fenceAfter is how long after losing quorum a node's VMs must be
// stopped: three heartbeats to notice, and a second for an agent that
// restarts (a short restart must not stop every VM).
func (a *Agent) fenceAfter() time.Duration { return 3*a.cfg.Timing.Heartbeat + time.Second }

// FenceGrace is how long a VM manager has, after fenceAfter, to have its
// VMs stopped before its lease lapses and the watchdog takes over.
const FenceGrace = 500 * time.Millisecond

// fenceMargin covers what the bound does not model: a leader that
// answers late, clocks that tick at slightly different rates.
const fenceMargin = time.Second

// fenceWait is how long the leader waits, after it last reached a node,
// before it restarts that node's HA VMs elsewhere: the node stops them
// fenceAfter its last contact with the majority, its watchdog resets it
// at most a timeout after that plus FenceGrace if it cannot, and a
// margin. A node without a watchdog is trusted to stop them itself.
func (a *Agent) fenceWait(m directory.Member) time.Duration {
	wait := a.fenceAfter() + FenceGrace + fenceMargin
	if m.Inventory != nil {
		wait += time.Duration(m.Inventory.WatchdogSeconds) * time.Second
	}
	return wait
}

// A node's service asks for a few changes as its member (the storage
// service records its peer's copy, the VM manager takes a volume's primary
// role or records a VM's end): the local endpoint applies it when this
// member leads, else sends it to the leader's member endpoint, which
// applies it for the member that calls. One apply function serves both.

// asThisMember is the local endpoint of such a change.
func asThisMember[P any](a *Agent, leaderPath string, apply func(member string, p P) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p P
		if !decode(w, r, &p) {
			return
		}
		rf := a.r()
		if rf == nil {
			apiError(w, ErrNotInCluster)
			return
		}
		var err error
		if rf.State() == raft.Leader {
			err = apply(a.id.ID, p)
		} else {
			err = a.callLeader(r.Context(), http.MethodPost, leaderPath, p, nil)
		}
		if err != nil {
			apiError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// asCallingMember is the leader's member endpoint of such a change.
func asCallingMember[P any](apply func(member string, p P) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p P
		if !decode(w, r, &p) {
			return
		}
		id, _ := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
		if err := apply(id.ID, p); err != nil {
			apiError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// proposedBy is the apply function of a change the directory itself
// checks against its actor (a volume's copy state or finished clone: only
// the volume's primary, at its generation, may record them).
func proposedBy[P any](a *Agent, typ directory.Type) func(member string, p P) error {
	return func(member string, p P) error {
		_, err := a.propose(typ, "member:"+member, "", p)
		return err
	}
}

// handleLocalWhoami authenticates, for a service on this node that does
// not keep users itself, the request the service got: LocalClient.Whoami
// sends what authenticate looks at, and the request's method, host,
// client and member in whoami headers.
func (a *Agent) handleLocalWhoami(w http.ResponseWriter, r *http.Request) {
	orig := r.Clone(r.Context())
	orig.Method = r.Header.Get(whoamiMethod)
	orig.Host = r.Header.Get(whoamiHost)
	orig.Header.Set("X-Forwarded-For", r.Header.Get(whoamiClient))
	if m := r.Header.Get(whoamiMember); m != "" {
		orig.Header.Set(frontdoor.HeaderMember, m)
		orig.Header.Set(frontdoor.HeaderClient, r.Header.Get(whoamiClient))
	}
	p, err := a.authenticate(orig)
	if err != nil {
		authError(err).Write(w, orig)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, Principal{User: p.User, Role: p.Role})
}

// PrimaryHere asks for a volume's primary role on this node, as this
// member: what a node does before it starts a VM on the volume. It is
// refused where the directory would refuse an admin (an outdated copy).
type PrimaryHere struct {
	Name               string `json:"name"`
	ExpectedGeneration uint64 `json:"expected_generation,omitempty"`
}

func (a *Agent) primaryFor(member string, p PrimaryHere) error {
	if v, ok := a.Directory().Volume(p.Name); ok && v.Primary == member {
		return nil
	}
	_, err := a.propose(directory.TypeVolumePrimary, "member:"+member, "", directory.VolumePrimaryPayload{
		Name: p.Name, Member: member, ExpectedGeneration: p.ExpectedGeneration})
	return err
}

// VMStopped records that a VM's guest powered itself off on this node:
// the VM is no longer wanted running (as if its user had stopped it).
type VMStopped struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
}

// vmStoppedBy marks a VM stopped if member is where it runs and it has not
// changed since.
func (a *Agent) vmStoppedBy(member string, p VMStopped) error {
	vm, ok := a.Directory().VM(p.Name)
	if !ok {
		return fmt.Errorf("VM %s: %w", p.Name, directory.ErrNotFound)
	}
	if vm.Node != member || !vm.Running {
		return nil // moved or stopped meanwhile: nothing to record
	}
	vm.Running = false
	_, err := a.propose(directory.TypeVMPut, "member:"+member, "", directory.VMPutPayload{
		Op: directory.VMOp{Op: directory.OpUpdate, ExpectedGeneration: p.Generation}, VM: vm})
	return err
}

// VMMoved records the end of a live migration, by the node that sent
// the VM: To is where it now runs, or empty when the migration failed
// and the VM stays.
type VMMoved struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	To         string `json:"to,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

func (a *Agent) vmMovedBy(member string, p VMMoved) error {
	vm, ok := a.Directory().VM(p.Name)
	if !ok {
		return fmt.Errorf("VM %s: %w", p.Name, directory.ErrNotFound)
	}
	if vm.Node != member || (p.To != "" && p.To != vm.MigrateTo) {
		return fmt.Errorf("VM %s runs on %s, moving to %q: %s cannot record a move to %q: %w", p.Name, vm.Node, vm.MigrateTo, member, p.To, directory.ErrRefused)
	}
	result, detail := "ok", "to "+p.To
	if p.To != "" {
		vm.Node = p.To
	} else {
		result, detail = "failed", p.Reason
	}
	vm.MigrateTo = ""
	if _, err := a.propose(directory.TypeVMPut, "member:"+member, "", directory.VMPutPayload{
		Op: directory.VMOp{Op: directory.OpUpdate, ExpectedGeneration: p.Generation}, VM: vm}); err != nil {
		return err
	}
	_, _ = a.propose(directory.TypeAudit, "member:"+member, "", directory.AuditPayload{Action: "vm.migrate", Target: p.Name, Result: result, Detail: detail})
	return nil
}

// Peers are the view's members, for memberconn.Dialer.OnNamed.
func (v LocalView) Peers() []memberconn.Peer {
	peers := make([]memberconn.Peer, 0, len(v.Members))
	for _, m := range v.Members {
		peers = append(peers, memberconn.Peer{ID: m.ID, Name: m.Name, Addresses: m.Addresses})
	}
	return peers
}
