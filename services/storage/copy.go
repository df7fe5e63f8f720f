package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/nbd"
	"github.com/tandemhci/tandem/services/replica"
)

// copyState is this node's copy of one volume.
type copyState struct {
	name, id string
	svc      *Service

	mu      sync.Mutex
	def     directory.Volume // as last seen in the directory
	peer    directory.Member
	rv      *replica.Volume
	store   *replica.Store
	holds   int    // NBD clients using the export
	problem string // why the copy does not do what the directory says
	// The primary's stream to the peer.
	peerCancel context.CancelFunc
	peerDone   chan struct{}
	peerState  string // the last attempt's outcome, for the status
	conflict   string // a split brain waiting for the admin's choice
	cloning    string // the copy of a clone's source, while it runs (clone.go)
}

// open opens this node's copy of dv, creating it first if needed. A copy
// made when the volume was made starts in sync (both are zeroes); one made
// later (this node joined after, or lost its disk) needs a full sync.
func (s *Service) open(dv directory.Volume, self string) (*copyState, error) {
	data, meta := s.dataPath(dv.ID), s.metaPath(dv.ID)
	if _, err := os.Stat(meta); errors.Is(err, os.ErrNotExist) {
		gen := uint64(replica.NoData)
		if _, ok := dv.Copies[self]; ok && dv.Generation == 1 && dv.Copies[self] == directory.CopyUpToDate && !dv.DiscardOthers {
			gen = dv.DataGeneration
		}
		if err := replica.CreateStore(data, meta, dv.ID, dv.SizeBytes, gen); err != nil {
			return nil, fmt.Errorf("create copy of %s: %w", dv.Name, err)
		}
		s.log.Info("created this node's copy", "volume", dv.Name, "id", dv.ID, "bytes", dv.SizeBytes, "needs_full_sync", gen == replica.NoData)
	}
	c := &copyState{name: dv.Name, id: dv.ID, svc: s, def: dv}
	if err := c.openStore(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *copyState) openStore() error {
	s := c.svc
	st, info, err := replica.OpenStore(s.dataPath(c.id), s.metaPath(c.id))
	if err != nil {
		return fmt.Errorf("open copy of %s: %w", c.name, err)
	}
	if info.Recovered > 0 {
		s.log.Warn("recovered after an unclean stop: recent regions marked for resync", "volume", c.name, "extents", info.Recovered)
	}
	rv, err := replica.New(replica.Config{
		Store: st, Node: s.selfID(), Logger: s.log.With("volume", c.name),
		Fence:        func(ctx context.Context) error { return c.recordPeer(ctx, directory.CopyOutdated) },
		UpToDate:     func(ctx context.Context) error { return c.recordPeer(ctx, directory.CopyUpToDate) },
		Authorize:    c.authorize,
		ResyncRate:   s.cfg.ResyncRate,
		FenceTimeout: s.cfg.FenceTimeout,
	})
	if err != nil {
		st.Close()
		return err
	}
	c.mu.Lock()
	c.rv, c.store = rv, st
	c.mu.Unlock()
	return nil
}

func (s *Service) selfID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view.Self
}

// recordPeer commits the peer copy's state, as the primary at its role
// generation: the fence before writing alone, and the all-clear after a
// resync.
func (c *copyState) recordPeer(ctx context.Context, state directory.CopyState) error {
	c.mu.Lock()
	peer, rv := c.peer.ID, c.rv
	c.mu.Unlock()
	if peer == "" {
		return errors.New("no peer node in the cluster")
	}
	_, gen := rv.Role()
	err := c.svc.cfg.Cluster.VolumeCopy(ctx, directory.VolumeCopyPayload{Name: c.name, Member: peer, State: state, Generation: gen})
	if err != nil {
		return fmt.Errorf("record the copy on %s %s: %w", peer, state, err)
	}
	c.svc.log.Info("peer copy recorded", "volume", c.name, "peer", peer, "state", state, "generation", gen)
	return nil
}

// authorize checks a primary's handshake against the directory: it must
// come from the volume's primary at the committed generation, or from a
// newer generation this node has not seen yet.
func (c *copyState) authorize(h replica.Hello) error {
	c.mu.Lock()
	def := c.def
	c.mu.Unlock()
	switch {
	case h.RoleGeneration < def.Generation:
		return fmt.Errorf("role generation %d is stale: the cluster is at %d (primary %s)", h.RoleGeneration, def.Generation, def.Primary)
	case h.RoleGeneration == def.Generation && h.Node != def.Primary:
		return fmt.Errorf("%s is not the primary at generation %d (%s is)", h.Node, def.Generation, def.Primary)
	}
	return nil
}

// follow applies the directory's view of the volume to this copy.
func (c *copyState) follow(ctx context.Context, s *Service, dv directory.Volume, view cluster.LocalView) {
	peer, _ := peerOf(view)
	c.mu.Lock()
	c.def, c.peer = dv, peer
	c.mu.Unlock()

	if dv.SizeBytes > c.store.Size() {
		c.grow(dv.SizeBytes)
	}
	rv := c.rv
	role, gen := rv.Role()
	if dv.Colo != "" && (dv.Colo == view.Self || dv.Primary == view.Self) {
		c.followColo(dv, view)
		return
	}
	if dv.Primary != view.Self {
		if role == replica.Primary || gen < dv.Generation {
			c.setConflict("")
			rv.Demote(dv.Generation)
			s.log.Info("secondary", "volume", dv.Name, "primary", dv.Primary, "generation", dv.Generation)
		}
		c.stopPeer()
		c.setProblem("")
		return
	}
	if !view.Current {
		// Only a member that has caught up with the cluster may act on
		// being primary: an old log could name it after it lost the role.
		return
	}
	if role != replica.Primary || gen != dv.Generation {
		// With no other node in the cluster (the first node, before the
		// second joins) there is no copy to keep in step: write alone. A
		// node that joins later gets a full sync.
		alone := peer.ID == "" || dv.Copies[peer.ID] == directory.CopyOutdated
		if err := rv.Promote(dv.Generation, alone); err != nil {
			c.setProblem("cannot become primary: " + err.Error())
			s.log.Error("cannot become primary", "volume", dv.Name, "err", err)
			return
		}
		c.setConflict("")
		s.log.Info("primary", "volume", dv.Name, "generation", dv.Generation)
		c.stopPeer() // a new generation: the stream starts over
	}
	c.setProblem("")
	if peer.ID != "" {
		c.startPeer(ctx)
	}
	if dv.Copying() {
		c.startClone(ctx, dv)
	}
}

// followColo serves a fault-tolerant VM's copy while COLO keeps the two
// in step (directory.Volume.Colo): no replication stream, and this
// node's QEMU writes it, the primary's directly, the secondary's through
// its block replication. Each copy records what it takes in its bitmap
// (as a primary going on alone does), from the version both shared when
// the pairing began; when it ends the survivor's copy is brought over
// the other's by the union of the two (DiscardOthers).
func (c *copyState) followColo(dv directory.Volume, view cluster.LocalView) {
	s := c.svc
	c.stopPeer()
	if !view.Current {
		return
	}
	if role, gen := c.rv.Role(); role == replica.Primary && gen == dv.Generation {
		return
	}
	if err := c.rv.Promote(dv.Generation, true); err != nil {
		c.setProblem("cannot serve the fault-tolerant VM's copy: " + err.Error())
		s.log.Error("cannot serve a COLO copy", "volume", dv.Name, "err", err)
		return
	}
	c.setProblem("")
	c.setConflict("")
	side := "primary"
	if dv.Colo == view.Self {
		side = "secondary"
	}
	s.log.Info("COLO keeps this copy", "volume", dv.Name, "side", side, "generation", dv.Generation)
}

func (c *copyState) setProblem(p string) {
	c.mu.Lock()
	c.problem = p
	c.mu.Unlock()
}

// grow applies a size the directory grew, once no NBD client holds the
// export (QEMU learns a size when it connects).
func (c *copyState) grow(size int64) {
	c.mu.Lock()
	held := c.holds
	c.mu.Unlock()
	if held > 0 {
		c.setProblem(fmt.Sprintf("grow to %d bytes waits until the VM releases the disk", size))
		return
	}
	s := c.svc
	c.stopPeer()
	c.rv.Close()
	role, gen := c.rv.Role()
	if err := c.store.Close(); err != nil {
		s.log.Warn("close before growing", "volume", c.name, "err", err)
	}
	if err := replica.GrowStore(s.dataPath(c.id), s.metaPath(c.id), size); err != nil {
		c.setProblem("grow: " + err.Error())
		s.log.Error("cannot grow this node's copy", "volume", c.name, "err", err)
	} else {
		s.log.Info("grew this node's copy", "volume", c.name, "bytes", size)
	}
	if err := c.openStore(); err != nil {
		c.setProblem(err.Error())
		s.log.Error("cannot reopen after growing", "volume", c.name, "err", err)
		return
	}
	if role == replica.Primary {
		_ = c.rv.Promote(gen, false)
	} else {
		c.rv.Demote(gen)
	}
}

// startPeer keeps a replication stream to the peer while this copy is
// primary: dial through the peer's front door, run it, and dial again
// when it ends.
func (c *copyState) startPeer(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peerCancel != nil {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.peerCancel, c.peerDone = cancel, done
	go func() {
		defer close(done)
		c.peerLoop(pctx)
	}()
}

func (c *copyState) stopPeer() {
	c.mu.Lock()
	cancel, done := c.peerCancel, c.peerDone
	c.peerCancel, c.peerDone = nil, nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (c *copyState) peerLoop(ctx context.Context) {
	s := c.svc
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		c.mu.Lock()
		peer, def, rv := c.peer, c.def, c.rv
		c.mu.Unlock()
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := s.cfg.Dialer.Upgrade(dctx, peer.ID, peer.Addresses, replica.UpgradeProtocol, "/replication/"+c.name,
			http.Header{headerVolume: {c.name}})
		cancel()
		if err != nil {
			c.setPeerState("unreachable: " + err.Error())
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		c.setPeerState("connected")
		started := time.Now()
		err = rv.Attach(ctx, conn, def.DiscardOthers)
		if ctx.Err() != nil {
			return
		}
		var refused *replica.RefusedError
		if errors.As(err, &refused) {
			c.setPeerState("refused: " + refused.Reason)
			c.noteSplitBrain(refused, peer.Name)
			s.log.Warn("the peer refused the replication stream", "volume", c.name, "reason", refused.Reason)
			// Often the peer has not yet seen the role change that made
			// this copy primary: try again soon, then less often.
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		c.setPeerState("stream ended: " + fmt.Sprint(err))
		if time.Since(started) > 10*time.Second {
			backoff = 500 * time.Millisecond
		}
		sleep(ctx, backoff)
	}
}

// noteSplitBrain turns a refusal for a split brain into the admin's
// choice, shown in the status of both nodes' copies.
func (c *copyState) noteSplitBrain(refused *replica.RefusedError, peerName string) {
	if !strings.HasPrefix(refused.Relation, replica.SplitBrain.String()) {
		return
	}
	// Both copies took writes the other lacks. Both are kept until the
	// admin says which one wins; the choice makes a new role generation,
	// which clears this.
	c.setConflict(fmt.Sprintf("split brain: the copies on this node and on %s both changed since they last met. "+
		"Both are kept. Choose the one to keep with POST /api/v1/volumes/%s/primary "+
		`{"node":"<the node to keep>","force":true,"discard":true}; only the regions that differ are copied over the other.`,
		peerName, c.name))
}

func (c *copyState) setConflict(msg string) {
	c.mu.Lock()
	c.conflict = msg
	c.mu.Unlock()
}

func (c *copyState) setPeerState(st string) {
	c.mu.Lock()
	c.peerState = st
	c.mu.Unlock()
}

func (c *copyState) close() {
	c.stopPeer()
	c.mu.Lock()
	rv, st := c.rv, c.store
	c.mu.Unlock()
	rv.Close()
	if err := st.Close(); err != nil {
		c.svc.log.Warn("close copy", "volume", c.name, "err", err)
	}
}

// export is the copy as an NBD export. A secondary copy is exported too
// (every request fails until it is promoted) for the QEMU that waits for
// a live migration: it opens its disks at start and touches them only
// once it runs, after the volume moved here. primaryOnly is what lists
// and checks ask for.
func (c *copyState) export(primaryOnly bool) (nbd.Export, bool) {
	c.mu.Lock()
	rv := c.rv
	c.mu.Unlock()
	if role, _ := rv.Role(); role != replica.Primary && primaryOnly {
		return nbd.Export{}, false
	}
	return nbd.Export{Name: c.name, Backend: rv, MinBlock: 1, PreferredBlock: replica.BlockSize, Hold: func() func() {
		c.mu.Lock()
		c.holds++
		c.mu.Unlock()
		return func() {
			c.mu.Lock()
			c.holds--
			c.mu.Unlock()
		}
	}}, true
}

// VolumeStatus is one node's view of its copy.
type VolumeStatus struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	Node      string `json:"node"`
	SizeBytes int64  `json:"size_bytes"`
	InUse     int    `json:"nbd_clients"`
	Stream    string `json:"stream,omitempty"` // the primary's last attempt to reach the peer
	Problem   string `json:"problem,omitempty"`
	// SplitBrain says what to do when both copies changed apart.
	SplitBrain string `json:"split_brain,omitempty"`
	// Clone is how the copy of a clone's source goes, while it runs.
	Clone   string         `json:"clone,omitempty"`
	Replica replica.Status `json:"replica"`
}

func (c *copyState) status() VolumeStatus {
	c.mu.Lock()
	st := VolumeStatus{Name: c.name, ID: c.id, SizeBytes: c.store.Size(), InUse: c.holds, Stream: c.peerState, Problem: c.problem, SplitBrain: c.conflict, Clone: c.cloning}
	rv := c.rv
	c.mu.Unlock()
	// The replica's own lock is taken outside ours: its fence callback
	// takes ours.
	st.Node, st.Replica = c.svc.selfID(), rv.Status()
	return st
}
