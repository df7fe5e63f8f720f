// Package replica keeps a volume's two copies, one per node, the same: the
// primary serves the VM's disk (an nbd.Backend), writes every request to
// its own copy and to the secondary's over the replication stream, and
// acknowledges it once both have it (DRBD's protocol C). When the peer is
// gone the primary goes on alone, but only after the cluster has committed
// that the peer's copy is outdated (Config.Fence), and records what changed
// in the out-of-sync bitmap; when the peer returns only those blocks are
// copied. Every block carries a CRC32C from the moment the guest writes it
// to the moment it is read back, on both nodes; a bad block is repaired
// from the good copy.
package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/services/bufpool"
	"github.com/tandemhci/tandem/services/nbd"
)

// Role is what a copy does now.
type Role int

const (
	Secondary Role = iota
	Primary
)

func (r Role) String() string {
	if r == Primary {
		return "primary"
	}
	return "secondary"
}

// Config is a volume's wiring into the node.
type Config struct {
	Store  *Store
	Node   string // this node's name, sent in the handshake
	Logger *slog.Logger
	// Fence is called when the primary must go on without its peer: it
	// returns nil once the cluster has committed that the peer's copy is
	// outdated (so the peer can never be made primary with stale data).
	// Until it does, writes wait; after FenceTimeout they fail. A primary
	// without quorum therefore accepts no writes it cannot replicate.
	Fence        func(ctx context.Context) error
	FenceTimeout time.Duration
	// UpToDate is called when a resync has finished: the peer's copy is
	// current again.
	UpToDate func(ctx context.Context) error
	// Authorize checks a primary's handshake against the cluster's
	// committed roles (the right node, a generation not older than the
	// newest committed); an error refuses the stream.
	Authorize func(Hello) error
	// ResyncRate bounds resync traffic in bytes per second (0: no bound).
	ResyncRate int64
	// PeerTimeout is how long a silent peer is waited for (default 4 s).
	PeerTimeout time.Duration
}

// Volume is one node's side of a replicated volume.
type Volume struct {
	cfg   Config
	store *Store
	log   *slog.Logger
	locks rangeLocks
	// freeze is held shared by every write, before its range lock, and
	// exclusively by Freeze: reads never touch it, so a frozen volume
	// can be read (copied) while the guest's writes wait.
	freeze sync.RWMutex

	mu       sync.Mutex
	role     Role
	roleGen  uint64
	link     *link     // primary: the stream to the secondary
	serving  io.Closer // secondary: the primary's stream, closed on a role change
	alone    bool      // primary: the peer's copy is committed outdated
	fencing  chan struct{}
	fenceErr error
	closed   bool
	ctx      context.Context
	cancel   context.CancelFunc
	resyncWG sync.WaitGroup

	stats stats
	bufs  bufpool.Pool // payloads of the frames a secondary receives
}

// Errors the NBD client sees.
var (
	// ErrNotPrimary: this copy is not the one serving the VM.
	ErrNotPrimary = fmt.Errorf("volume is not primary on this node: %w", nbd.EPERM)
	// ErrNoQuorum: the peer is gone and the cluster could not commit that
	// its copy is outdated, so writing alone could lose data.
	ErrNoQuorum = fmt.Errorf("peer unreachable and no quorum to continue alone: %w", nbd.EIO)
	// ErrChecksum: a block failed its checksum and no good copy was found.
	ErrChecksum = fmt.Errorf("checksum mismatch and no good copy to repair from: %w", nbd.EIO)
)

// New wraps an open store. The volume starts as secondary.
func New(cfg Config) (*Volume, error) {
	if cfg.Store == nil {
		return nil, errors.New("replica: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FenceTimeout == 0 {
		cfg.FenceTimeout = 30 * time.Second
	}
	if cfg.PeerTimeout == 0 {
		cfg.PeerTimeout = 4 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Volume{cfg: cfg, store: cfg.Store, log: cfg.Logger, ctx: ctx, cancel: cancel}, nil
}

// Store is the volume's local copy.
func (v *Volume) Store() *Store { return v.store }

// Close drops the peer and stops background work; the store stays open.
func (v *Volume) Close() {
	v.mu.Lock()
	v.closed = true
	l, s := v.link, v.serving
	v.link, v.serving = nil, nil
	v.mu.Unlock()
	v.cancel()
	if l != nil {
		l.close(errors.New("volume closed"))
	}
	if s != nil {
		s.Close()
	}
	v.resyncWG.Wait()
}

// Promote makes this copy the primary under the cluster's role generation
// gen. peerOutdated says whether the cluster already records the peer's
// copy as outdated (then writes may go on alone at once). An inconsistent
// copy (an unfinished sync target) is never promoted.
func (v *Volume) Promote(gen uint64, peerOutdated bool) error {
	if _, syncBase := v.store.Generations(); syncBase != 0 {
		return fmt.Errorf("this copy is an unfinished sync target (inconsistent) and cannot become primary")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if gen < v.roleGen {
		return fmt.Errorf("role generation %d is older than %d", gen, v.roleGen)
	}
	if v.serving != nil {
		v.serving.Close()
		v.serving = nil
	}
	v.role, v.roleGen, v.alone = Primary, gen, peerOutdated
	v.fenceErr = nil
	return nil
}

// Demote makes this copy a secondary: the NBD client's requests fail and
// the stream to the peer closes. The caller stops the VM first.
func (v *Volume) Demote(gen uint64) {
	v.mu.Lock()
	l := v.link
	v.role, v.link = Secondary, nil
	if gen > v.roleGen {
		v.roleGen = gen
	}
	v.mu.Unlock()
	if l != nil {
		l.close(errors.New("demoted"))
	}
}

// Role returns the copy's role and the role generation it holds.
func (v *Volume) Role() (Role, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.role, v.roleGen
}

// --- the NBD backend (primary) -----------------------------------------

var _ nbd.Backend = (*Volume)(nil)

// Size implements nbd.Backend.
func (v *Volume) Size() int64 { return v.store.size }

func (v *Volume) checkPrimary() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.role != Primary {
		return ErrNotPrimary
	}
	return nil
}

// ReadAt implements nbd.Backend: the blocks are checked against their
// checksums and a bad one is repaired from the peer before it is returned.
func (v *Volume) ReadAt(p []byte, off int64) error {
	if err := v.checkPrimary(); err != nil || len(p) == 0 {
		return err
	}
	start := time.Now()
	defer v.stats.reads.observe(start, len(p))
	for attempt := 0; ; attempt++ {
		lr := v.locks.lock(off, int64(len(p)), true)
		bad, err := v.readVerified(p, off)
		lr.unlock()
		if err != nil || len(bad) == 0 {
			return err
		}
		if attempt > 0 {
			return ErrChecksum
		}
		v.stats.checksumErrors.Add(int64(len(bad)))
		if err := v.repair(bad); err != nil {
			v.log.Error("checksum mismatch not repaired", "blocks", bad, "err", err)
			return ErrChecksum
		}
	}
}

// readVerified reads [off, off+len(p)) through whole blocks and returns the
// blocks whose data fails its checksum.
func (v *Volume) readVerified(p []byte, off int64) ([]int64, error) {
	bo, be := off&^(BlockSize-1), (off+int64(len(p))+BlockSize-1)&^(BlockSize-1)
	buf := p
	if bo != off || be != off+int64(len(p)) {
		buf = make([]byte, be-bo)
	}
	crcs, err := v.store.readBlocks(buf, bo, make([]uint32, 0, len(buf)/BlockSize))
	if err != nil {
		return nil, err
	}
	var bad []int64
	for _, i := range badBlocks(buf, crcs) {
		bad = append(bad, bo/BlockSize+int64(i))
	}
	if len(bad) == 0 && &buf[0] != &p[0] {
		copy(p, buf[off-bo:])
	}
	return bad, nil
}

// repair replaces bad local blocks by the peer's copies, if the peer's
// copies are current and good.
func (v *Volume) repair(blocks []int64) error {
	for _, b := range blocks {
		off := b * BlockSize
		lr := v.locks.lock(off, BlockSize, false)
		err := v.repairLocked(b)
		lr.unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (v *Volume) repairLocked(b int64) error {
	off := b * BlockSize
	buf := make([]byte, BlockSize)
	crcs, err := v.store.readBlocks(buf, off, nil)
	if err != nil {
		return err
	}
	if BlockCRC(buf) == crcs[0] {
		return nil // repaired meanwhile
	}
	l := v.currentLink()
	if l == nil || v.store.IsOutOfSync(b) {
		return errors.New("no current peer copy of the block")
	}
	r, err := l.call(&Frame{Type: FrameRead, Offset: uint64(off), Length: BlockSize})
	if err != nil {
		return fmt.Errorf("read from peer: %w", err)
	}
	if r.Type != FrameReadReply || r.Length != BlockSize {
		return fmt.Errorf("peer answered %s to READ", r.Type)
	}
	data, pc := r.Payload[:BlockSize], getCRCs(r.Payload[BlockSize:], nil)
	if BlockCRC(data) != pc[0] {
		return errors.New("the peer's copy is bad too")
	}
	if err := v.store.beginWrite(off, BlockSize); err != nil {
		return err
	}
	defer v.store.endWrite(off, BlockSize)
	if err := v.store.writeBlocks(data, off, pc, true); err != nil {
		return err
	}
	v.stats.repaired.Add(1)
	v.log.Warn("repaired a block from the peer's copy", "offset", off)
	return nil
}

// WriteAt implements nbd.Backend: acknowledged once on both copies.
func (v *Volume) WriteAt(p []byte, off int64, fua bool) error {
	if err := v.checkPrimary(); err != nil || len(p) == 0 {
		return err
	}
	v.freeze.RLock()
	defer v.freeze.RUnlock()
	return v.writeAt(p, off, fua)
}

func (v *Volume) writeAt(p []byte, off int64, fua bool) error {
	start := time.Now()
	defer v.stats.writes.observe(start, len(p))
	bo, be := off&^(BlockSize-1), (off+int64(len(p))+BlockSize-1)&^(BlockSize-1)
	lr := v.locks.lock(bo, be-bo, false)
	defer lr.unlock()
	buf := p
	if bo != off || be != off+int64(len(p)) {
		// read-modify-write of the partial blocks at either end
		buf = make([]byte, be-bo)
		if err := v.readWhole(buf[:BlockSize], bo); err != nil {
			return err
		}
		if be-bo > BlockSize {
			if err := v.readWhole(buf[len(buf)-BlockSize:], be-BlockSize); err != nil {
				return err
			}
		}
		copy(buf[off-bo:], p)
	}
	crcs := make([]uint32, len(buf)/BlockSize)
	for i := range crcs {
		crcs[i] = BlockCRC(buf[i*BlockSize : (i+1)*BlockSize])
	}
	var flags uint16
	if fua {
		flags = FlagFUA
	}
	return v.replicate(&Frame{Type: FrameWrite, Flags: flags, Offset: uint64(bo), Length: uint32(len(buf))}, buf, crcs)
}

// readWhole reads one whole block for a read-modify-write, under the
// caller's exclusive lock, repairing it first if it is bad.
func (v *Volume) readWhole(p []byte, off int64) error {
	crcs, err := v.store.readBlocks(p, off, nil)
	if err != nil {
		return err
	}
	if BlockCRC(p) == crcs[0] {
		return nil
	}
	v.stats.checksumErrors.Add(1)
	if err := v.repairLocked(off / BlockSize); err != nil {
		return ErrChecksum
	}
	_, err = v.store.readBlocks(p, off, nil)
	return err
}

// Flush implements nbd.Backend: durable on both copies.
func (v *Volume) Flush() error {
	if err := v.checkPrimary(); err != nil {
		return err
	}
	return v.replicate(&Frame{Type: FrameFlush}, nil, nil)
}

// Trim implements nbd.Backend: the whole blocks of the range become holes
// on both copies (reading zeroes); partial blocks keep their data.
func (v *Volume) Trim(off, length int64) error {
	if err := v.checkPrimary(); err != nil {
		return err
	}
	bo, be := (off+BlockSize-1)&^(BlockSize-1), (off+length)&^(BlockSize-1)
	if be <= bo {
		return nil
	}
	v.freeze.RLock()
	defer v.freeze.RUnlock()
	lr := v.locks.lock(bo, be-bo, false)
	defer lr.unlock()
	return v.replicate(&Frame{Type: FrameTrim, Offset: uint64(bo), Length: uint32(be - bo)}, nil, nil)
}

// WriteZeroes implements nbd.Backend.
func (v *Volume) WriteZeroes(off, length int64, fua bool) error {
	if err := v.checkPrimary(); err != nil {
		return err
	}
	v.freeze.RLock()
	defer v.freeze.RUnlock()
	bo, be := (off+BlockSize-1)&^(BlockSize-1), (off+length)&^(BlockSize-1)
	if be <= bo {
		return v.writeAt(make([]byte, length), off, fua)
	}
	if bo > off {
		if err := v.writeAt(make([]byte, bo-off), off, fua); err != nil {
			return err
		}
	}
	if off+length > be {
		if err := v.writeAt(make([]byte, off+length-be), be, fua); err != nil {
			return err
		}
	}
	var flags uint16
	if fua {
		flags = FlagFUA
	}
	lr := v.locks.lock(bo, be-bo, false)
	defer lr.unlock()
	return v.replicate(&Frame{Type: FrameZero, Flags: flags, Offset: uint64(bo), Length: uint32(be - bo)}, nil, nil)
}

// largeWrite is the size from which sending to the peer and writing the
// local copy overlap.
const largeWrite = 128 << 10

// replicate applies a request to the local copy and, when connected, to
// the peer's at the same time; it returns once both are done. Without a
// peer it returns once the local copy is done and the cluster has
// committed that the peer is outdated. The caller holds the range lock.
func (v *Volume) replicate(f *Frame, data []byte, crcs []uint32) error {
	off, length := int64(f.Offset), int64(f.Length)
	changes := f.Type != FrameFlush
	if changes {
		if err := v.store.beginWrite(off, length); err != nil {
			return err
		}
		defer v.store.endWrite(off, length)
	}
	l := v.currentLink()
	var peer <-chan reply
	var sent chan (<-chan reply)
	if l != nil {
		var crcBytes []byte
		if crcs != nil {
			crcBytes = putCRCs(crcs)
		}
		if len(data) >= largeWrite {
			// a large write goes out while the local copy takes it
			sent = make(chan (<-chan reply), 1)
			go func() { sent <- l.send(f, data, crcBytes) }()
		} else {
			peer = l.send(f, data, crcBytes)
		}
	} else {
		if err := v.goAlone(); err != nil {
			return err
		}
		if changes {
			v.store.MarkOutOfSync(off, length)
		}
	}
	localErr := v.applyLocal(f, data, crcs)
	if sent != nil {
		peer = <-sent
	}
	if peer != nil {
		r := <-peer
		err := r.err
		if err == nil && r.f.Type != FrameAck {
			err = fmt.Errorf("peer: %s: %s", r.f.Type, r.f.Payload)
		}
		if err != nil {
			// The peer may or may not have it: it is out of sync now, and
			// the request is acknowledged only once the peer is fenced.
			if changes {
				v.store.MarkOutOfSync(off, length)
			}
			v.linkFailed(l, err)
			if err := v.goAlone(); err != nil {
				return err
			}
		} else if changes && localErr == nil {
			v.store.ClearOutOfSync(off, length)
		}
	}
	if localErr != nil && changes {
		v.store.MarkOutOfSync(off, length)
	}
	return localErr
}

func (v *Volume) applyLocal(f *Frame, data []byte, crcs []uint32) error {
	fua := f.Flags&FlagFUA != 0
	switch f.Type {
	case FrameWrite, FrameResyncData:
		return v.store.writeBlocks(data, int64(f.Offset), crcs, fua)
	case FrameZero, FrameTrim:
		return v.store.zeroBlocks(int64(f.Offset), int64(f.Length), fua)
	case FrameFlush:
		return v.store.flush()
	}
	return fmt.Errorf("cannot apply %s", f.Type)
}

// --- alone -----------------------------------------------------------

// goAlone returns once the primary may write without its peer: the cluster
// committed the peer outdated and the copy took a new generation.
func (v *Volume) goAlone() error {
	v.mu.Lock()
	if v.role != Primary {
		v.mu.Unlock()
		return ErrNotPrimary
	}
	if v.alone {
		v.mu.Unlock()
		return v.diverge()
	}
	if v.fencing == nil {
		v.fencing = make(chan struct{})
		go v.fence(v.fencing)
	}
	ch := v.fencing
	v.mu.Unlock()
	t := time.NewTimer(v.cfg.FenceTimeout)
	defer t.Stop()
	// The cluster may also say so by a new role (Promote with the peer
	// outdated: a fault-tolerant VM's pairing began): checked as it
	// waits.
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
wait:
	for {
		select {
		case <-ch:
			break wait
		case <-t.C:
			return ErrNoQuorum
		case <-v.ctx.Done():
			return ErrNoQuorum
		case <-poll.C:
			v.mu.Lock()
			alone := v.alone
			v.mu.Unlock()
			if alone {
				break wait
			}
		}
	}
	v.mu.Lock()
	alone := v.alone
	v.mu.Unlock()
	if !alone {
		return ErrNoQuorum
	}
	return v.diverge()
}

// diverge takes a new generation before the first write made alone.
func (v *Volume) diverge() error {
	if g, _ := v.store.Generations(); g.Bitmap != 0 {
		return nil
	}
	return v.store.updateHeader(func(h *header) {
		if h.Generations.Bitmap == 0 {
			h.Generations.startDiverging()
		}
	})
}

// fence asks the cluster to mark the peer outdated, retrying until it
// succeeds or the volume closes; waiters give up after FenceTimeout.
func (v *Volume) fence(done chan struct{}) {
	defer func() {
		v.mu.Lock()
		v.fencing = nil
		v.mu.Unlock()
		close(done)
	}()
	if v.cfg.Fence == nil {
		v.mu.Lock()
		v.fenceErr = errors.New("no fence configured")
		v.mu.Unlock()
		return
	}
	backoff := 100 * time.Millisecond
	deadline := time.Now().Add(v.cfg.FenceTimeout)
	for {
		v.mu.Lock()
		alone := v.alone
		v.mu.Unlock()
		if alone {
			return // a new role said it meanwhile
		}
		ctx, cancel := context.WithTimeout(v.ctx, 5*time.Second)
		err := v.cfg.Fence(ctx)
		cancel()
		v.mu.Lock()
		if err == nil {
			v.alone, v.fenceErr = true, nil
			v.mu.Unlock()
			v.log.Warn("peer's copy marked outdated; going on alone")
			return
		}
		v.fenceErr = err
		v.mu.Unlock()
		v.log.Error("cannot mark the peer's copy outdated; writes wait", "err", err)
		if time.Now().After(deadline) || v.ctx.Err() != nil {
			return
		}
		select {
		case <-time.After(backoff):
		case <-v.ctx.Done():
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// --- the link ------------------------------------------------------------

func (v *Volume) currentLink() *link {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.link
}

// linkFailed drops l if it is still the volume's link.
func (v *Volume) linkFailed(l *link, err error) {
	v.mu.Lock()
	if v.link == l {
		v.link = nil
	}
	v.mu.Unlock()
	if l.close(err) {
		v.log.Warn("replication stream lost", "err", err)
	}
}

// --- status ------------------------------------------------------------

// Status is a volume's state for the API.
type Status struct {
	Role           string        `json:"role"`
	RoleGeneration uint64        `json:"role_generation"`
	Peer           string        `json:"peer"` // connected, syncing, outdated (alone), waiting (no quorum yet), absent
	InSyncPercent  float64       `json:"in_sync_percent"`
	OutOfSyncBytes int64         `json:"out_of_sync_bytes"`
	ResyncRate     int64         `json:"resync_bytes_per_second"`
	ResyncedBytes  int64         `json:"resynced_bytes"`
	ChecksumErrors int64         `json:"checksum_errors"`
	Repaired       int64         `json:"repaired_blocks"`
	Consistent     bool          `json:"consistent"`
	Generations    Generations   `json:"generations"`
	Reads          Latency       `json:"reads"`
	Writes         Latency       `json:"writes"`
	HotExtents     int           `json:"activity_log_extents"`
	FenceError     string        `json:"fence_error,omitempty"`
	LastVerify     *VerifyReport `json:"last_verify,omitempty"`
}

// Status reports the volume's state.
func (v *Volume) Status() Status {
	g, syncBase := v.store.Generations()
	oos := v.store.OutOfSyncBytes()
	s := Status{
		OutOfSyncBytes: oos,
		InSyncPercent:  100 * float64(v.store.size-oos) / float64(v.store.size),
		ChecksumErrors: v.stats.checksumErrors.Load(),
		Repaired:       v.stats.repaired.Load(),
		ResyncedBytes:  v.stats.resynced.Load(),
		ResyncRate:     v.stats.resyncRate.Load(),
		Consistent:     syncBase == 0,
		Generations:    g,
		Reads:          v.stats.reads.snapshot(),
		Writes:         v.stats.writes.snapshot(),
		HotExtents:     v.store.HotExtents(),
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	s.Role, s.RoleGeneration = v.role.String(), v.roleGen
	switch {
	case v.role == Secondary && v.serving != nil:
		s.Peer = "connected"
	case v.link != nil && oos > 0:
		s.Peer = "syncing"
	case v.link != nil:
		s.Peer = "connected"
	case v.alone:
		s.Peer = "outdated"
	case v.fencing != nil:
		s.Peer = "waiting"
	default:
		s.Peer = "absent"
	}
	if v.fenceErr != nil {
		s.FenceError = v.fenceErr.Error()
	}
	s.LastVerify = v.stats.lastVerify.Load()
	return s
}

type stats struct {
	reads, writes  latencyHistogram
	checksumErrors atomic.Int64
	repaired       atomic.Int64
	resynced       atomic.Int64
	resyncRate     atomic.Int64
	lastVerify     atomic.Pointer[VerifyReport]
}

// Freeze is the snapshot hook: it waits for the writes in flight, makes
// them durable on both copies, and holds new writes (reads go on) until
// thaw is called. A backup copies the frozen copy, or takes its own
// snapshot of the backing store, in between.
func (v *Volume) Freeze() (thaw func(), err error) {
	v.freeze.Lock()
	if err := v.Flush(); err != nil {
		v.freeze.Unlock()
		return nil, fmt.Errorf("freeze: %w", err)
	}
	return sync.OnceFunc(v.freeze.Unlock), nil
}
