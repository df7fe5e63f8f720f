package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Hello opens a replication stream: the primary's credentials and state.
type Hello struct {
	Protocol       int         `json:"protocol"`
	VolumeID       string      `json:"volume_id"`
	Size           int64       `json:"size"`
	Node           string      `json:"node"`
	RoleGeneration uint64      `json:"role_generation"`
	Generations    Generations `json:"generations"`
	SyncBase       uint64      `json:"sync_base,omitempty"`
	OutOfSync      []Run       `json:"out_of_sync,omitempty"`
	// Discard asks the secondary to throw its changes away and become a
	// copy of the primary's data: an admin's resolution of a split brain.
	Discard bool `json:"discard,omitempty"`
}

// Welcome accepts a stream: the secondary's state.
type Welcome struct {
	Node        string      `json:"node"`
	Generations Generations `json:"generations"`
	SyncBase    uint64      `json:"sync_base,omitempty"`
	OutOfSync   []Run       `json:"out_of_sync,omitempty"`
	Relation    string      `json:"relation"`
	// FullSync: the secondary holds nothing the bitmaps can bring up to
	// date; every block is copied.
	FullSync bool `json:"full_sync,omitempty"`
}

// Refusal closes a stream with the reason.
type Refusal struct {
	Reason string `json:"reason"`
	// Relation is set when the copies' data conflict (split brain,
	// unrelated, peer newer): the admin's choice is needed.
	Relation string `json:"relation,omitempty"`
}

// ResyncDone ends a resync: the target's data is the source's generation.
type ResyncDone struct {
	Current uint64 `json:"current"`
}

// RefusedError is the error Attach returns when the peer refuses.
type RefusedError struct{ Refusal }

func (e *RefusedError) Error() string { return "peer refused the replication stream: " + e.Reason }

// maxRuns bounds the bitmap runs a handshake carries; more are coarsened
// (marking more blocks out of sync is always safe, just slower).
const maxRuns = 1 << 20

// coarsen merges runs separated by the smallest gaps until at most max
// remain.
func coarsen(runs []Run, max int) []Run {
	for gap := int64(1); len(runs) > max; gap *= 2 {
		out := runs[:1]
		for _, r := range runs[1:] {
			last := &out[len(out)-1]
			if r.Start-(last.Start+last.Count) <= gap {
				last.Count = r.Start + r.Count - last.Start
			} else {
				out = append(out, r)
			}
		}
		runs = out
	}
	return runs
}

func sendJSON(fw *frameWriter, t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := fw.Write(&Frame{Type: t, Payload: b}); err != nil {
		return err
	}
	return fw.Flush()
}

// Attach runs the primary's side of a replication stream on conn (already
// upgraded through the front door): handshake, then replicated writes and
// the resync of what is out of sync. It returns when the stream ends.
// discard is the admin's choice to overwrite the peer's data after a split
// brain.
func (v *Volume) Attach(ctx context.Context, conn net.Conn, discard bool) error {
	v.mu.Lock()
	if v.role != Primary || v.closed {
		v.mu.Unlock()
		conn.Close()
		return ErrNotPrimary
	}
	roleGen := v.roleGen
	v.mu.Unlock()

	g, syncBase := v.store.Generations()
	hello := Hello{Protocol: ProtocolVersion, VolumeID: v.store.VolumeID(), Size: v.store.size, Node: v.cfg.Node,
		RoleGeneration: roleGen, Generations: g, SyncBase: syncBase, OutOfSync: coarsen(v.store.OutOfSyncRuns(), maxRuns), Discard: discard}
	fw := newFrameWriter(conn)
	fr := newFrameReader(conn)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := sendJSON(fw, FrameHello, hello); err != nil {
		conn.Close()
		return fmt.Errorf("handshake: %w", err)
	}
	f, err := fr.Next()
	if err != nil {
		conn.Close()
		return fmt.Errorf("handshake: %w", err)
	}
	switch f.Type {
	case FrameRefuse:
		conn.Close()
		var r Refusal
		if err := json.Unmarshal(f.Payload, &r); err != nil {
			r.Reason = string(f.Payload)
		}
		return &RefusedError{r}
	case FrameWelcome:
	default:
		conn.Close()
		return fmt.Errorf("handshake: %w: %s instead of WELCOME", ErrBadFrame, f.Type)
	}
	var w Welcome
	if err := json.Unmarshal(f.Payload, &w); err != nil {
		conn.Close()
		return fmt.Errorf("handshake: %w: WELCOME: %v", ErrBadFrame, err)
	}
	// The secondary judged the relation; check it from this side too.
	rel := relate(g, syncBase, w.Generations, w.SyncBase, discard)
	switch rel {
	case InSync, LocalNewer, LocalNewerFull:
	default:
		conn.Close()
		return &RefusedError{Refusal{Reason: "the peer's data is not older than this copy's: " + rel.String(), Relation: rel.String()}}
	}
	if err := v.store.MarkRuns(w.OutOfSync); err != nil {
		conn.Close()
		return fmt.Errorf("handshake: peer's bitmap: %w", err)
	}
	if rel == LocalNewerFull || w.FullSync {
		v.store.MarkAllOutOfSync()
	}
	if v.store.OutOfSyncBytes() > 0 {
		// The sync target recorded our Bitmap (or Current) as its base:
		// keep recording from there until the resync is done.
		if err := v.store.updateHeader(func(h *header) {
			if h.Generations.Bitmap == 0 {
				h.Generations.Bitmap = h.Generations.Current
			}
		}); err != nil {
			conn.Close()
			return err
		}
	}
	if err := v.store.Checkpoint(false); err != nil {
		conn.Close()
		return err
	}
	conn.SetDeadline(time.Time{})

	l := newLink(conn, fr, w.Node, v.cfg.PeerTimeout)
	v.mu.Lock()
	if v.role != Primary || v.closed || v.roleGen != roleGen {
		v.mu.Unlock()
		l.close(errors.New("role changed during the handshake"))
		return ErrNotPrimary
	}
	old := v.link
	v.link = l
	v.mu.Unlock()
	if old != nil {
		old.close(errors.New("replaced by a new stream"))
	}
	v.log.Info("replication stream up", "peer", w.Node, "relation", rel, "out_of_sync_bytes", v.store.OutOfSyncBytes())

	v.resyncWG.Add(1)
	go func() {
		defer v.resyncWG.Done()
		v.resync(ctx, l)
	}()
	select {
	case <-l.done:
	case <-ctx.Done():
		l.close(ctx.Err())
	}
	v.linkFailed(l, l.closed())
	return l.closed()
}

// relate compares the copies' states as the handshake sees them: a copy
// with a sync base is an unfinished sync target, which resumes from the
// bitmaps if its source still records changes since that base.
func relate(local Generations, localBase uint64, peer Generations, peerBase uint64, discardPeer bool) Relation {
	var rel Relation
	switch {
	case localBase != 0 && peerBase != 0:
		rel = Unrelated // both half-synced: neither holds whole data
	case peerBase != 0 && recordsSince(local, peerBase):
		rel = LocalNewer
	case peerBase != 0:
		rel = LocalNewerFull
	case localBase != 0 && recordsSince(peer, localBase):
		rel = PeerNewer
	case localBase != 0:
		rel = PeerNewerFull
	default:
		rel = Compare(local, peer)
	}
	if discardPeer && localBase == 0 {
		switch rel {
		case SplitBrain, PeerNewer:
			// The peer's bitmap holds every change since the version
			// this copy has (or both diverged from): the union of the
			// bitmaps covers the difference.
			rel = LocalNewer
		case SplitBrainFull, Unrelated, PeerNewerFull:
			rel = LocalNewerFull
		}
	}
	return rel
}

// recordsSince says whether a copy's out-of-sync bitmap holds every change
// made since generation base: it has recorded since base (Bitmap), or it
// still is base and records from now on.
func recordsSince(g Generations, base uint64) bool {
	return g.Bitmap == base || (g.Bitmap == 0 && g.Current == base)
}
