package replica

import (
	"math/bits"
	"sync"
)

// rangeLocks orders requests that touch the same bytes: two overlapping
// writes must reach both copies in the same order, and a read must not see
// a block between its new data and its new checksum. The volume is cut
// into granules hashed onto a fixed set of reader/writer locks; a request
// takes the locks of all its granules in ascending stripe order, so two
// requests never wait on each other in a cycle.
type rangeLocks struct {
	stripes [rangeStripes]sync.RWMutex
}

const (
	rangeStripes = 1024
	granuleShift = 16 // 64 KiB
)

// stripesOf returns the distinct stripes of [off, off+length) in ascending
// order, in buf's storage.
func stripesOf(off, length int64, buf []uint16) []uint16 {
	if length <= 0 {
		length = 1
	}
	first, last := off>>granuleShift, (off+length-1)>>granuleShift
	if last-first+1 >= rangeStripes {
		buf = buf[:0]
		for i := 0; i < rangeStripes; i++ {
			buf = append(buf, uint16(i))
		}
		return buf
	}
	var seen [rangeStripes / 64]uint64
	for g := first; g <= last; g++ {
		s := g % rangeStripes
		seen[s>>6] |= 1 << (s & 63)
	}
	buf = buf[:0]
	for i, w := range seen {
		for w != 0 {
			b := w & -w
			w ^= b
			buf = append(buf, uint16(i*64+bits.TrailingZeros64(b)))
		}
	}
	return buf
}

// lockedRange is a held lock; unlock releases it.
type lockedRange struct {
	l      *rangeLocks
	s      []uint16
	shared bool
}

func (l *rangeLocks) lock(off, length int64, shared bool) lockedRange {
	s := stripesOf(off, length, make([]uint16, 0, 8))
	for _, i := range s {
		if shared {
			l.stripes[i].RLock()
		} else {
			l.stripes[i].Lock()
		}
	}
	return lockedRange{l: l, s: s, shared: shared}
}

func (r lockedRange) unlock() {
	for i := len(r.s) - 1; i >= 0; i-- {
		if r.shared {
			r.l.stripes[r.s[i]].RUnlock()
		} else {
			r.l.stripes[r.s[i]].Unlock()
		}
	}
}
