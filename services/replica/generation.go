package replica

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// Generations name versions of a volume's data, as DRBD's data generation
// UUIDs do. Current names the data a copy holds now. Bitmap, when not zero,
// is the Current the copy had when it started recording changes in its
// out-of-sync bitmap, i.e. the last version both copies shared. History
// keeps the versions before that. Comparing the two copies' generations
// when they meet says who has newer data and whether the bitmaps suffice or
// a full sync is needed, and catches a split brain (both changed alone).
type Generations struct {
	Current uint64    `json:"current"`
	Bitmap  uint64    `json:"bitmap"`
	History [2]uint64 `json:"history"`
}

// NoData is the Current of a copy that holds nothing yet (new or wiped).
const NoData = 0

// newGeneration returns a fresh nonzero generation.
func newGeneration() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			// crypto/rand does not fail on Linux ≥ 3.17; keep going regardless
			continue
		}
		if g := binary.BigEndian.Uint64(b[:]); g != NoData {
			return g
		}
	}
}

// startDiverging is what a copy does when it changes while the other copy
// cannot follow: it keeps the shared version as Bitmap (unless it already
// records one) and takes a new Current.
func (g *Generations) startDiverging() {
	if g.Bitmap == 0 {
		g.Bitmap = g.Current
	}
	g.Current = newGeneration()
}

// syncedTo is what a copy does when it holds the same data as a copy of
// generation src: it takes src.Current and keeps its own history.
func (g *Generations) syncedTo(src uint64) {
	if g.Current != src && g.Current != NoData {
		g.History = [2]uint64{g.Current, g.History[0]}
	}
	g.Current = src
	g.Bitmap = 0
}

// settle is what the sync source does once the target holds its data: the
// bitmap's base version is history now.
func (g *Generations) settle() {
	if g.Bitmap != 0 {
		g.History = [2]uint64{g.Bitmap, g.History[0]}
		g.Bitmap = 0
	}
}

// Relation is how two copies' data relate when they meet.
type Relation int

const (
	// InSync: the same version; the union of both bitmaps (writes in flight
	// when a node crashed) is all that may differ.
	InSync Relation = iota
	// LocalNewer: this copy changed since the shared version the peer holds;
	// copy the union of the bitmaps to the peer.
	LocalNewer
	// PeerNewer: the other way round.
	PeerNewer
	// LocalNewerFull: this copy is newer but the bitmap no longer covers the
	// difference (or the peer holds nothing): a full sync to the peer.
	LocalNewerFull
	// PeerNewerFull: the other way round.
	PeerNewerFull
	// SplitBrain: both changed since the version they share. Both are kept
	// until an admin chooses; then the union of the bitmaps is copied.
	SplitBrain
	// SplitBrainFull: both changed and no shared version is known any more.
	SplitBrainFull
	// Unrelated: the copies share no history (different volumes?).
	Unrelated
)

func (r Relation) String() string {
	switch r {
	case InSync:
		return "in sync"
	case LocalNewer:
		return "local newer"
	case PeerNewer:
		return "peer newer"
	case LocalNewerFull:
		return "local newer, full sync"
	case PeerNewerFull:
		return "peer newer, full sync"
	case SplitBrain:
		return "split brain"
	case SplitBrainFull:
		return "split brain, full sync"
	case Unrelated:
		return "unrelated data"
	}
	return fmt.Sprintf("Relation(%d)", int(r))
}

// Compare relates the local copy's generations to the peer's.
func Compare(local, peer Generations) Relation {
	switch {
	case local.Current == NoData && peer.Current == NoData:
		return InSync
	case peer.Current == NoData:
		return LocalNewerFull
	case local.Current == NoData:
		return PeerNewerFull
	case local.Current == peer.Current:
		return InSync
	case local.Bitmap != 0 && local.Bitmap == peer.Current:
		return LocalNewer
	case peer.Bitmap != 0 && peer.Bitmap == local.Current:
		return PeerNewer
	case local.Bitmap != 0 && local.Bitmap == peer.Bitmap:
		return SplitBrain
	case inHistory(peer.Current, local):
		return LocalNewerFull
	case inHistory(local.Current, peer):
		return PeerNewerFull
	case shareHistory(local, peer):
		return SplitBrainFull
	}
	return Unrelated
}

func inHistory(g uint64, of Generations) bool {
	return g != 0 && (of.Bitmap == g || of.History[0] == g || of.History[1] == g)
}

func shareHistory(a, b Generations) bool {
	for _, x := range []uint64{a.Bitmap, a.History[0], a.History[1]} {
		if x != 0 && inHistory(x, b) {
			return true
		}
	}
	return false
}
