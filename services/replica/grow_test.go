package replica

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestGrowKeepsDataBitmapsAndSync(t *testing.T) {
	const small, big = 8 << 20, 24 << 20
	a, b, s := inSyncPair(t, small)
	data := bytes.Repeat([]byte("grow"), BlockSize/4)
	if err := a.vol.WriteAt(data, small-BlockSize, false); err != nil {
		t.Fatal(err)
	}
	// The peer goes away: a write is recorded out of sync.
	s.stop()
	if err := a.vol.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}
	oos := a.vol.store.OutOfSyncBytes()
	if oos == 0 {
		t.Fatal("nothing out of sync while alone")
	}
	for _, n := range []*node{a, b} {
		n.close(t)
		if err := GrowStore(n.data(), n.meta(), big); err != nil {
			t.Fatal(err)
		}
		n.open(t)
		if n.vol.Size() != big {
			t.Fatalf("%s: size %d after growing", n.name, n.vol.Size())
		}
	}
	if got := a.vol.store.OutOfSyncBytes(); got != oos {
		t.Errorf("out of sync %d after growing, was %d", got, oos)
	}
	if err := a.vol.Promote(2, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, BlockSize)
	for _, off := range []int64{0, small - BlockSize} {
		if err := a.vol.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read at %d after growing: %v", off, err)
		}
	}
	// The new space reads as zeroes and takes writes.
	if err := a.vol.ReadAt(got, big-BlockSize); err != nil || !bytes.Equal(got, make([]byte, BlockSize)) {
		t.Fatalf("new space: %v", err)
	}
	if err := a.vol.WriteAt(data, big-BlockSize, true); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b, false)
	waitInSync(t, a, b)
	a.close(t)
	b.close(t)
	sameFiles(t, a.data(), b.data())
}

func TestGrowRefusesShrinkAndFinishesAfterCrash(t *testing.T) {
	n := newNode(t, "a", 8<<20, 7)
	n.close(t)
	if err := GrowStore(n.data(), n.meta(), 4<<20); err == nil || !strings.Contains(err.Error(), "shrink") {
		t.Errorf("shrink: %v", err)
	}
	if err := GrowStore(n.data(), n.meta(), 8<<20+1); err == nil {
		t.Error("unaligned size accepted")
	}
	// A crash after the data grew but before the new metadata replaced
	// the old: open finishes the grow.
	oldMeta, err := os.ReadFile(n.meta())
	if err != nil {
		t.Fatal(err)
	}
	if err := GrowStore(n.data(), n.meta(), 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(n.meta(), n.meta()+".grow"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.meta(), oldMeta, 0o600); err != nil {
		t.Fatal(err)
	}
	n.open(t)
	if n.vol.Size() != 16<<20 {
		t.Fatalf("size %d", n.vol.Size())
	}
	n.close(t)
	if _, err := os.Stat(n.meta() + ".grow"); !os.IsNotExist(err) {
		t.Errorf("pending metadata left behind: %v", err)
	}
}

func TestFreezeHoldsWritesNotReads(t *testing.T) {
	a, _, _ := inSyncPair(t, 8<<20)
	thaw, err := a.vol.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { wrote <- a.vol.WriteAt(bytes.Repeat([]byte{1}, BlockSize), 4<<20, false) }()
	if err := a.vol.ReadAt(make([]byte, BlockSize), 4<<20); err != nil {
		t.Fatalf("read while frozen: %v", err)
	}
	select {
	case err := <-wrote:
		t.Fatalf("write went through a freeze: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	thaw()
	thaw() // twice is harmless
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}
