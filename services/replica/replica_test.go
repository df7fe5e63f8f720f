package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// node is one side of a test pair: a store in its own folder and its volume.
type node struct {
	name   string
	dir    string
	vol    *Volume
	fence  atomic.Int32 // 0: fencing succeeds, 1: it fails (no quorum)
	fenced atomic.Int32
}

func (n *node) data() string { return filepath.Join(n.dir, "vol.data") }
func (n *node) meta() string { return filepath.Join(n.dir, "vol.meta") }

func newNode(t *testing.T, name string, size int64, gen uint64) *node {
	t.Helper()
	return newNodeIn(t, t.TempDir(), name, size, gen)
}

// newNodeIn makes a node whose copy lives in dir.
func newNodeIn(t *testing.T, dir, name string, size int64, gen uint64) *node {
	t.Helper()
	n := &node{name: name, dir: dir}
	if err := CreateStore(n.data(), n.meta(), "vol-1", size, gen); err != nil {
		t.Fatal(err)
	}
	n.open(t)
	t.Cleanup(func() { n.close(t) })
	return n
}

func (n *node) open(t *testing.T) StoreInfo {
	t.Helper()
	s, info, err := OpenStore(n.data(), n.meta())
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{
		Store: s, Node: n.name, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Fence: func(context.Context) error {
			if n.fence.Load() != 0 {
				return errors.New("no quorum")
			}
			n.fenced.Add(1)
			return nil
		},
		FenceTimeout: 2 * time.Second,
		PeerTimeout:  2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.vol = v
	return info
}

func (n *node) close(t *testing.T) {
	if n.vol == nil {
		return
	}
	n.vol.Close()
	if err := n.vol.store.Close(); err != nil {
		t.Errorf("%s: close: %v", n.name, err)
	}
	n.vol = nil
}

// crash drops the node's volume without an orderly close: what is on disk
// is what a power cut would leave (the page cache aside).
func (n *node) crash() {
	n.vol.Close()
	s := n.vol.store
	s.unmap()
	s.data.Close()
	s.meta.Close()
	n.vol = nil
}

// stream is a replication stream between a primary and a secondary over
// loopback TCP.
type stream struct {
	cancel                context.CancelFunc
	attachDone, serveDone chan struct{}
	attachErr, serveErr   error
	conns                 [2]net.Conn
}

func connect(t *testing.T, primary, secondary *node, discard bool) *stream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{cancel: cancel, attachDone: make(chan struct{}), serveDone: make(chan struct{})}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.conns = [2]net.Conn{c, sc}
	go func() { s.serveErr = secondary.vol.Serve(ctx, sc); close(s.serveDone) }()
	go func() { s.attachErr = primary.vol.Attach(ctx, c, discard); close(s.attachDone) }()
	t.Cleanup(s.stop)
	return s
}

// cut breaks the stream as a failed link does.
func (s *stream) cut() {
	s.conns[0].Close()
	s.conns[1].Close()
}

func (s *stream) stop() {
	s.cancel()
	s.cut()
	<-s.attachDone
	<-s.serveDone
}

// attachResult waits for the primary's side to end and returns its error.
func (s *stream) attachResult() error {
	<-s.attachDone
	return s.attachErr
}

// inSyncPair makes two copies of a new volume, a primary (role generation
// 1) and a secondary, connected and in sync.
func inSyncPair(t *testing.T, size int64) (a, b *node, s *stream) {
	t.Helper()
	a, b = newNode(t, "a", size, 7), newNode(t, "b", size, 7)
	if err := a.vol.Promote(1, false); err != nil {
		t.Fatal(err)
	}
	s = connect(t, a, b, false)
	waitInSync(t, a, b)
	return a, b, s
}

// waitInSync waits until the primary reports its peer connected and nothing
// out of sync, and the secondary's generation equals the primary's.
func waitInSync(t *testing.T, p, s *node) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ps := p.vol.Status()
		pg, _ := p.vol.store.Generations()
		sg, base := s.vol.store.Generations()
		if ps.Peer == "connected" && ps.OutOfSyncBytes == 0 && pg.Current == sg.Current && base == 0 && s.vol.store.OutOfSyncBytes() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not in sync: primary %+v; secondary %+v", p.vol.Status(), s.vol.Status())
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != len(y) {
		t.Fatalf("%s is %d bytes, %s %d", a, len(x), b, len(y))
	}
	for i := 0; i < len(x); i += BlockSize {
		if !bytes.Equal(x[i:i+BlockSize], y[i:i+BlockSize]) {
			t.Fatalf("copies differ in the block at %d", i)
		}
	}
}

// writer records what it writes, to check reads against.
type writer struct {
	mu    sync.Mutex
	model []byte
}

func newWriter(size int64) *writer { return &writer{model: make([]byte, size)} }

// random writes n requests of up to maxLen bytes (unaligned ones too) from
// several goroutines to disjoint stripes, so the model stays exact.
func (w *writer) random(t *testing.T, v *Volume, seed uint64, n, maxLen int) {
	t.Helper()
	const workers = 8
	stripe := int64(len(w.model)) / workers
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			base := int64(g) * stripe
			for i := 0; i < n/workers; i++ {
				l := 1 + r.IntN(maxLen)
				off := base + r.Int64N(stripe-int64(l))
				p := make([]byte, l)
				for j := range p {
					p[j] = byte(r.Uint32())
				}
				if err := v.WriteAt(p, off, r.IntN(10) == 0); err != nil {
					errs <- fmt.Errorf("write %d+%d: %w", off, l, err)
					return
				}
				w.mu.Lock()
				copy(w.model[off:], p)
				w.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func (w *writer) check(t *testing.T, v *Volume) {
	t.Helper()
	got := make([]byte, len(w.model))
	for off := 0; off < len(got); off += 1 << 20 {
		end := min(off+1<<20, len(got))
		if err := v.ReadAt(got[off:end], int64(off)); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if !bytes.Equal(got, w.model) {
		for i := range got {
			if got[i] != w.model[i] {
				t.Fatalf("read back differs from what was written, first at byte %d", i)
			}
		}
	}
}

func TestReplicatedWrites(t *testing.T) {
	const size = 64 << 20
	a, b, _ := inSyncPair(t, size)
	w := newWriter(size)
	w.random(t, a.vol, 1, 2000, 300<<10)
	if err := a.vol.WriteZeroes(5<<20+100, 3<<20, false); err != nil {
		t.Fatal(err)
	}
	copy(w.model[5<<20+100:], make([]byte, 3<<20))
	if err := a.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	w.check(t, a.vol)
	sameFiles(t, a.data(), b.data())
	if st := a.vol.Status(); st.Peer != "connected" || st.OutOfSyncBytes != 0 || st.Writes.Count < 2000 {
		t.Fatalf("status %+v", st)
	}
	if a.fenced.Load() != 0 {
		t.Fatal("fenced while connected")
	}
}

func TestNotPrimaryRefusesIO(t *testing.T) {
	b := newNode(t, "b", 1<<20, 7)
	if err := b.vol.WriteAt([]byte("x"), 0, false); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("write on a secondary: %v", err)
	}
	if err := b.vol.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("read on a secondary: %v", err)
	}
}

func TestDegradedThenResyncCopiesOnlyTheChanges(t *testing.T) {
	const size = 256 << 20
	a, b, s := inSyncPair(t, size)
	w := newWriter(size)
	w.random(t, a.vol, 2, 200, 64<<10)
	s.cut()
	s.attachResult()
	// The peer is away: 1% of the volume changes.
	for i := int64(0); i < size/100; i += 64 << 10 {
		off := (i * 97) % (size - 64<<10) &^ (BlockSize - 1)
		p := bytes.Repeat([]byte{byte(i >> 16)}, 64<<10)
		if err := a.vol.WriteAt(p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(w.model[off:], p)
	}
	if a.fenced.Load() != 1 {
		t.Fatalf("fenced %d times, want 1", a.fenced.Load())
	}
	st := a.vol.Status()
	if st.Peer != "outdated" || st.OutOfSyncBytes < size/100 || st.OutOfSyncBytes > size/100+(64<<10) {
		t.Fatalf("degraded status %+v", st)
	}
	if g, _ := a.vol.store.Generations(); g.Bitmap == 0 {
		t.Fatalf("generation did not diverge: %+v", g)
	}
	dirty := st.OutOfSyncBytes
	s.stop()
	connect(t, a, b, false)
	waitInSync(t, a, b)
	if got := b.vol.Status().ResyncedBytes; got != dirty {
		t.Fatalf("resync copied %d bytes, %d were out of sync", got, dirty)
	}
	a.vol.Flush()
	w.check(t, a.vol)
	sameFiles(t, a.data(), b.data())
}

func TestFullSyncResumesAfterInterruption(t *testing.T) {
	const size = 32 << 20
	a, b := newNode(t, "a", size, 7), newNode(t, "b", size, NoData)
	a.vol.Promote(1, true)
	w := newWriter(size)
	w.random(t, a.vol, 3, 400, 256<<10)
	a.vol.cfg.ResyncRate = 8 << 20 // 4 s for the whole volume
	s := connect(t, a, b, false)
	time.Sleep(1500 * time.Millisecond)
	s.stop()
	done := b.vol.Status().ResyncedBytes
	if done == 0 || done >= size {
		t.Fatalf("resynced %d bytes before the cut, want some", done)
	}
	if err := b.vol.Promote(2, false); err == nil {
		t.Fatal("an unfinished sync target was promoted")
	}
	// The target restarts too: the resync must resume from the bitmaps.
	b.close(t)
	b.open(t)
	a.vol.cfg.ResyncRate = 0
	connect(t, a, b, false)
	waitInSync(t, a, b)
	if total := done + b.vol.Status().ResyncedBytes; total > size+(4<<20) {
		t.Fatalf("resynced %d bytes in all for a %d-byte volume: not resumed", total, size)
	}
	w.check(t, a.vol)
	sameFiles(t, a.data(), b.data())
}

func TestCrashRecoveryMarksTheActivityLog(t *testing.T) {
	const size = 64 << 20
	a, b, s := inSyncPair(t, size)
	w := newWriter(size)
	w.random(t, a.vol, 4, 100, 64<<10)
	s.stop()
	a.crash()
	info := a.open(t)
	if info.Recovered == 0 {
		t.Fatal("no activity log extents recovered after a crash")
	}
	if oos := a.vol.store.OutOfSyncBytes(); oos != int64(info.Recovered)*ExtentSize {
		t.Fatalf("%d bytes out of sync after recovering %d extents", oos, info.Recovered)
	}
	// the crashed primary is made secondary; b takes over and resyncs the
	// union, so the copies are equal again.
	b.vol.Promote(2, false)
	connect(t, b, a, false)
	waitInSync(t, b, a)
	w.check(t, b.vol)
	sameFiles(t, a.data(), b.data())
}

func TestChecksumErrorsAreRepaired(t *testing.T) {
	const size = 8 << 20
	a, b, _ := inSyncPair(t, size)
	w := newWriter(size)
	w.random(t, a.vol, 5, 64, 256<<10)
	a.vol.Flush()
	flip := func(path string, off int64) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var c [1]byte
		f.ReadAt(c[:], off)
		c[0] ^= 0x10
		f.WriteAt(c[:], off)
	}
	flip(a.data(), 1<<20+17)
	flip(b.data(), 3<<20+5)
	flip(b.data(), 5<<20+9)
	w.check(t, a.vol) // reads the bad local block: repaired from b
	if st := a.vol.Status(); st.ChecksumErrors != 1 || st.Repaired != 1 {
		t.Fatalf("after a read of a bad block: %+v", st)
	}
	rep, err := a.vol.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.PeerRepaired != 2 || rep.LocalRepaired != 0 || rep.Differed != 0 || len(rep.Unrecoverable) != 0 || rep.Checked != size {
		t.Fatalf("verify: %+v", rep)
	}
	a.vol.Flush()
	sameFiles(t, a.data(), b.data())
	// bad on both: an error, never bad data
	flip(a.data(), 6<<20)
	flip(b.data(), 6<<20+1)
	if err := a.vol.ReadAt(make([]byte, 4096), 6<<20); !errors.Is(err, ErrChecksum) {
		t.Fatalf("read of a block bad on both copies: %v", err)
	}
}

func TestNoQuorumNoWritesAlone(t *testing.T) {
	a := newNode(t, "a", 8<<20, 7)
	a.fence.Store(1)
	a.vol.Promote(1, false)
	start := time.Now()
	if err := a.vol.WriteAt(make([]byte, 4096), 0, false); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("write without peer or quorum: %v", err)
	}
	if time.Since(start) < 2*time.Second {
		t.Fatal("gave up before the fence timeout")
	}
	if st := a.vol.Status(); st.FenceError == "" || st.Peer == "outdated" {
		t.Fatalf("status %+v", st)
	}
	// quorum returns: writes go on alone
	a.fence.Store(0)
	if err := a.vol.WriteAt(make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
}

func TestStalePrimaryIsRefused(t *testing.T) {
	a, b := newNode(t, "a", 8<<20, 7), newNode(t, "b", 8<<20, 7)
	b.vol.Demote(5) // b has seen role generation 5 committed
	a.vol.Promote(3, false)
	s := connect(t, a, b, false)
	var refused *RefusedError
	if err := s.attachResult(); !errors.As(err, &refused) {
		t.Fatalf("stale primary: %v", err)
	}
}

func TestSplitBrainNeedsAChoice(t *testing.T) {
	const size = 16 << 20
	a, b := newNode(t, "a", size, 7), newNode(t, "b", size, 7)
	// Forced single-node mode on both sides of a partition.
	a.vol.Promote(1, true)
	b.vol.Promote(1, true)
	if err := a.vol.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := b.vol.WriteAt(bytes.Repeat([]byte{2}, 1<<20), 4<<20, false); err != nil {
		t.Fatal(err)
	}
	b.vol.Demote(2)
	a.vol.Promote(2, false)
	s := connect(t, a, b, false)
	var refused *RefusedError
	if err := s.attachResult(); !errors.As(err, &refused) || refused.Relation != SplitBrain.String() {
		t.Fatalf("split brain: %v", err)
	}
	// b's changes are still there
	got := make([]byte, 1<<20)
	b.vol.store.readBlocks(got, 4<<20, nil)
	if !bytes.Equal(got, bytes.Repeat([]byte{2}, 1<<20)) {
		t.Fatal("the refused side lost its data")
	}
	// The admin keeps a's: only the regions either side changed are copied.
	s.stop()
	connect(t, a, b, true)
	waitInSync(t, a, b)
	if n := b.vol.Status().ResyncedBytes; n != 2<<20 {
		t.Fatalf("resynced %d bytes, want the 2 MiB both sides changed", n)
	}
	sameFiles(t, a.data(), b.data())
}

func TestHandshakeRefusesMismatches(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizeB int64
		idB   string
	}{
		{"wrong size", 4 << 20, "vol-1"},
		{"another volume", 8 << 20, "vol-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newNode(t, "a", 8<<20, 7)
			b := &node{name: "b", dir: t.TempDir()}
			if err := CreateStore(b.data(), b.meta(), tc.idB, tc.sizeB, 7); err != nil {
				t.Fatal(err)
			}
			b.open(t)
			t.Cleanup(func() { b.close(t) })
			a.vol.Promote(1, false)
			s := connect(t, a, b, false)
			var refused *RefusedError
			if err := s.attachResult(); !errors.As(err, &refused) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestOpenRefusesWrongSizedData(t *testing.T) {
	a := newNode(t, "a", 8<<20, 7)
	a.close(t)
	if err := os.Truncate(a.data(), 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenStore(a.data(), a.meta()); !errors.Is(err, ErrWrongSize) {
		t.Fatalf("open with a short backing file: %v", err)
	}
}

func TestCompare(t *testing.T) {
	g := func(cur, bm, h0 uint64) Generations {
		return Generations{Current: cur, Bitmap: bm, History: [2]uint64{h0}}
	}
	for _, tc := range []struct {
		name        string
		local, peer Generations
		want        Relation
	}{
		{"same", g(5, 0, 0), g(5, 0, 0), InSync},
		{"both empty", g(0, 0, 0), g(0, 0, 0), InSync},
		{"peer new", g(5, 0, 0), g(0, 0, 0), LocalNewerFull},
		{"local new", g(0, 0, 0), g(5, 0, 0), PeerNewerFull},
		{"local went on alone", g(6, 5, 0), g(5, 0, 0), LocalNewer},
		{"peer went on alone", g(5, 0, 0), g(6, 5, 0), PeerNewer},
		{"both went on alone", g(6, 5, 0), g(7, 5, 0), SplitBrain},
		{"local newer, bitmap gone", g(8, 0, 5), g(5, 0, 0), LocalNewerFull},
		{"peer newer, bitmap gone", g(5, 0, 0), g(8, 0, 5), PeerNewerFull},
		{"diverged long ago", g(8, 0, 5), g(9, 0, 5), SplitBrainFull},
		{"strangers", g(8, 0, 1), g(9, 0, 2), Unrelated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Compare(tc.local, tc.peer); got != tc.want {
				t.Fatalf("Compare = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestGenerationsAfterAResync(t *testing.T) {
	src := Generations{Current: 5}
	dst := Generations{Current: 5}
	src.startDiverging()
	if Compare(src, dst) != LocalNewer {
		t.Fatal("diverged source is not newer")
	}
	dst.syncedTo(src.Current)
	src.settle()
	if Compare(src, dst) != InSync || src.Bitmap != 0 || src.History[0] != 5 {
		t.Fatalf("after resync: %+v %+v", src, dst)
	}
}

func TestCoarsen(t *testing.T) {
	runs := []Run{{0, 1}, {2, 1}, {10, 2}, {13, 1}, {100, 5}}
	got := coarsen(append([]Run(nil), runs...), 3)
	if len(got) > 3 {
		t.Fatalf("coarsen left %d runs", len(got))
	}
	// every original block is still covered
	for _, r := range runs {
		for b := r.Start; b < r.Start+r.Count; b++ {
			covered := false
			for _, c := range got {
				covered = covered || (b >= c.Start && b < c.Start+c.Count)
			}
			if !covered {
				t.Fatalf("block %d lost: %v", b, got)
			}
		}
	}
}
