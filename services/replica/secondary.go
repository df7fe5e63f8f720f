package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// maxApplying bounds the requests a secondary applies at once.
const maxApplying = 64

// Serve runs the secondary's side of a replication stream the peer opened:
// it checks the primary's handshake, then applies its requests until the
// stream ends or this copy's role changes.
func (v *Volume) Serve(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	fw := newFrameWriter(conn)
	fr := newFrameReader(conn)
	fr.pool = &v.bufs
	refuse := func(r Refusal) error {
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		sendJSON(fw, FrameRefuse, r)
		v.log.Warn("replication stream refused", "reason", r.Reason)
		return &RefusedError{r}
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	f, err := fr.Next()
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if f.Type != FrameHello {
		return refuse(Refusal{Reason: fmt.Sprintf("expected HELLO, got %s", f.Type)})
	}
	var h Hello
	if err := json.Unmarshal(f.Payload, &h); err != nil {
		return refuse(Refusal{Reason: "malformed HELLO: " + err.Error()})
	}
	if h.Protocol != ProtocolVersion {
		return refuse(Refusal{Reason: fmt.Sprintf("protocol version %d, this node speaks %d", h.Protocol, ProtocolVersion)})
	}
	if h.VolumeID != v.store.VolumeID() {
		return refuse(Refusal{Reason: fmt.Sprintf("volume %q is not this node's %q", h.VolumeID, v.store.VolumeID())})
	}
	if h.Size != v.store.size {
		return refuse(Refusal{Reason: fmt.Sprintf("the primary's copy is %d bytes, this node's %d (resize both first)", h.Size, v.store.size)})
	}
	if v.cfg.Authorize != nil {
		if err := v.cfg.Authorize(h); err != nil {
			return refuse(Refusal{Reason: "not authorized by the cluster: " + err.Error()})
		}
	}
	v.mu.Lock()
	switch {
	case v.closed:
		v.mu.Unlock()
		return refuse(Refusal{Reason: "volume closing"})
	case v.role == Primary:
		v.mu.Unlock()
		return refuse(Refusal{Reason: fmt.Sprintf("this copy is primary (role generation %d)", v.roleGen)})
	case h.RoleGeneration < v.roleGen:
		v.mu.Unlock()
		return refuse(Refusal{Reason: fmt.Sprintf("stale primary: role generation %d, the newest is %d", h.RoleGeneration, v.roleGen)})
	}
	v.roleGen = h.RoleGeneration
	old := v.serving
	v.serving = conn
	v.mu.Unlock()
	if old != nil {
		old.Close() // a newer stream from the primary replaces the old one
	}
	defer func() {
		v.mu.Lock()
		if v.serving == conn {
			v.serving = nil
		}
		v.mu.Unlock()
	}()

	g, syncBase := v.store.Generations()
	rel := relate(g, syncBase, h.Generations, h.SyncBase, false)
	if h.Discard && syncBase == 0 {
		switch rel {
		case SplitBrain, LocalNewer:
			rel = PeerNewer // the union of the bitmaps covers it (relate)
		case SplitBrainFull, Unrelated, LocalNewerFull:
			rel = PeerNewerFull
		}
	}
	switch rel {
	case InSync, PeerNewer, PeerNewerFull:
	default:
		return refuse(Refusal{Reason: "the copies' data conflict (" + rel.String() + "): an admin must choose which to keep", Relation: rel.String()})
	}
	w := Welcome{Node: v.cfg.Node, Generations: g, OutOfSync: coarsen(v.store.OutOfSyncRuns(), maxRuns), Relation: rel.String(), FullSync: rel == PeerNewerFull}
	if err := v.store.MarkRuns(h.OutOfSync); err != nil {
		return refuse(Refusal{Reason: "primary's bitmap: " + err.Error()})
	}
	if rel == PeerNewerFull {
		v.store.MarkAllOutOfSync()
	}
	if v.store.OutOfSyncBytes() > 0 {
		// From here until RESYNC_DONE this copy is inconsistent: record
		// the base the source's bitmap counts from, durably, first.
		base := h.Generations.Bitmap
		if base == 0 {
			base = h.Generations.Current
		}
		if err := v.store.Checkpoint(false); err != nil {
			return refuse(Refusal{Reason: err.Error()})
		}
		if err := v.store.updateHeader(func(hd *header) { hd.SyncBase = base }); err != nil {
			return refuse(Refusal{Reason: err.Error()})
		}
	}
	_, w.SyncBase = v.store.Generations()
	if err := sendJSON(fw, FrameWelcome, w); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	conn.SetDeadline(time.Time{})
	v.log.Info("replication stream from the primary", "peer", h.Node, "role_generation", h.RoleGeneration, "relation", rel)

	// Requests are applied concurrently (the primary never has two
	// overlapping writes in flight); replies go back as each completes.
	var wmu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxApplying)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	for {
		f, err := fr.Next()
		if err != nil {
			if errors.Is(err, ErrBadFrame) {
				v.log.Error("replication stream: bad frame from the primary", "err", err)
			}
			return err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, parts := v.apply(&f)
			v.bufs.Put(f.Payload)
			r.ID = f.ID
			wmu.Lock()
			err := fw.WriteParts(&r, parts...)
			if err == nil {
				err = fw.Flush()
			}
			wmu.Unlock()
			if err != nil {
				conn.Close()
			}
		}()
	}
}

// apply carries out one request from the primary and returns the reply.
func (v *Volume) apply(f *Frame) (Frame, [][]byte) {
	fail := func(err error) (Frame, [][]byte) {
		return Frame{Type: FrameError}, [][]byte{[]byte(err.Error())}
	}
	off, length := int64(f.Offset), int64(f.Length)
	if off+length > v.store.size {
		return fail(fmt.Errorf("%s at %d+%d beyond the volume's %d bytes", f.Type, off, length, v.store.size))
	}
	switch f.Type {
	case FramePing:
		return Frame{Type: FramePong}, nil
	case FrameWrite, FrameResyncData:
		data := f.Payload[:length]
		crcs := getCRCs(f.Payload[length:], make([]uint32, 0, length/BlockSize))
		// end to end: the data must still be what the guest wrote
		if bad := badBlocks(data, crcs); len(bad) > 0 {
			return fail(fmt.Errorf("checksum mismatch in %d blocks received at %d", len(bad), off))
		}
		if err := v.store.beginWrite(off, length); err != nil {
			return fail(err)
		}
		defer v.store.endWrite(off, length)
		if err := v.store.writeBlocks(data, off, crcs, f.Flags&FlagFUA != 0); err != nil {
			return fail(err)
		}
		v.store.ClearOutOfSync(off, length)
		if f.Type == FrameResyncData {
			v.stats.resynced.Add(length)
		}
	case FrameZero, FrameTrim:
		if off%BlockSize != 0 || length%BlockSize != 0 {
			return fail(fmt.Errorf("%s at %d+%d is not block aligned", f.Type, off, length))
		}
		if err := v.store.beginWrite(off, length); err != nil {
			return fail(err)
		}
		defer v.store.endWrite(off, length)
		if err := v.store.zeroBlocks(off, length, f.Flags&FlagFUA != 0); err != nil {
			return fail(err)
		}
		v.store.ClearOutOfSync(off, length)
	case FrameFlush:
		if err := v.store.flush(); err != nil {
			return fail(err)
		}
	case FrameRead:
		buf := make([]byte, length)
		crcs, err := v.store.readBlocks(buf, off, nil)
		if err != nil {
			return fail(err)
		}
		return Frame{Type: FrameReadReply, Offset: f.Offset, Length: f.Length}, [][]byte{buf, putCRCs(crcs)}
	case FrameVerify:
		buf := make([]byte, length)
		crcs, err := v.store.readBlocks(buf, off, nil)
		if err != nil {
			return fail(err)
		}
		out := make([]byte, 0, len(crcs)*5)
		for i, c := range crcs {
			actual := BlockCRC(buf[i*BlockSize : (i+1)*BlockSize])
			ok := byte(0)
			if actual == c {
				ok = 1
			}
			out = append(out, byte(actual>>24), byte(actual>>16), byte(actual>>8), byte(actual), ok)
		}
		return Frame{Type: FrameVerifyReply, Offset: f.Offset, Length: f.Length}, [][]byte{out}
	case FrameResyncDone:
		var d ResyncDone
		if err := json.Unmarshal(f.Payload, &d); err != nil {
			return fail(fmt.Errorf("RESYNC_DONE: %w", err))
		}
		if err := v.store.Checkpoint(true); err != nil {
			return fail(err)
		}
		if n := v.store.OutOfSyncBytes(); n > 0 {
			return fail(fmt.Errorf("resync done but %d bytes still out of sync here", n))
		}
		if err := v.store.updateHeader(func(h *header) {
			h.Generations.syncedTo(d.Current)
			h.SyncBase = 0
		}); err != nil {
			return fail(err)
		}
		v.log.Info("resync finished: this copy is up to date")
	default:
		return fail(fmt.Errorf("unexpected %s on the secondary", f.Type))
	}
	return Frame{Type: FrameAck}, nil
}
