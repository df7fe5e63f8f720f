package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// VerifyReport says what an online verify found and did.
type VerifyReport struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Checked  int64     `json:"checked_bytes"`
	// LocalRepaired: blocks bad on this node, rewritten from the peer.
	LocalRepaired int64 `json:"local_repaired_blocks"`
	// PeerRepaired: blocks bad on the peer, rewritten from this node.
	PeerRepaired int64 `json:"peer_repaired_blocks"`
	// Differed: blocks good on both but different (not known out of sync);
	// the primary's copy was sent to the peer.
	Differed int64 `json:"differed_blocks"`
	// Unrecoverable: blocks bad on both nodes (offsets, at most 100).
	Unrecoverable []int64 `json:"unrecoverable_offsets,omitempty"`
	Error         string  `json:"error,omitempty"`
}

const verifyChunk = 1 << 20

var errNoPeer = errors.New("no replication stream to the peer")

// Verify compares both copies block by block, each against its checksums
// and against each other, and repairs what it can from the good copy.
// Blocks known to be out of sync are left to the resync.
func (v *Volume) Verify(ctx context.Context) (rep VerifyReport, err error) {
	rep.Started = time.Now()
	defer func() {
		rep.Finished = time.Now() // the named result: the caller sees it too
		r := rep
		v.stats.lastVerify.Store(&r)
	}()
	if err := v.checkPrimary(); err != nil {
		rep.Error = err.Error()
		return rep, err
	}
	for off := int64(0); off < v.store.size; off += verifyChunk {
		if err := ctx.Err(); err != nil {
			rep.Error = err.Error()
			return rep, err
		}
		l := v.currentLink()
		if l == nil {
			rep.Error = errNoPeer.Error()
			return rep, errNoPeer
		}
		length := min(int64(verifyChunk), v.store.size-off)
		if err := v.verifyChunk(l, off, length, &rep); err != nil {
			rep.Error = err.Error()
			return rep, err
		}
		rep.Checked += length
	}
	v.log.Info("verify finished", "checked_bytes", rep.Checked, "local_repaired", rep.LocalRepaired,
		"peer_repaired", rep.PeerRepaired, "differed", rep.Differed, "unrecoverable", len(rep.Unrecoverable))
	return rep, nil
}

func (v *Volume) verifyChunk(l *link, off, length int64, rep *VerifyReport) error {
	lr := v.locks.lock(off, length, false)
	defer lr.unlock()
	n := length / BlockSize
	data := make([]byte, length)
	crcs, err := v.store.readBlocks(data, off, make([]uint32, 0, n))
	if err != nil {
		return err
	}
	r, err := l.call(&Frame{Type: FrameVerify, Offset: uint64(off), Length: uint32(length)})
	if err != nil {
		return fmt.Errorf("verify at %d: %w", off, err)
	}
	if r.Type != FrameVerifyReply || int64(len(r.Payload)) != n*5 {
		return fmt.Errorf("verify at %d: peer answered %s", off, r.Type)
	}
	for i := int64(0); i < n; i++ {
		b := off/BlockSize + i
		if v.store.IsOutOfSync(b) {
			continue
		}
		block := data[i*BlockSize : (i+1)*BlockSize]
		actual := BlockCRC(block)
		localOK := actual == crcs[i]
		peerCRC := binary.BigEndian.Uint32(r.Payload[i*5:])
		peerOK := r.Payload[i*5+4] == 1
		boff := b * BlockSize
		switch {
		case localOK && peerOK && actual == peerCRC:
		case !localOK && peerOK:
			v.stats.checksumErrors.Add(1)
			if err := v.repairLocked(b); err != nil {
				return fmt.Errorf("repair block at %d: %w", boff, err)
			}
			rep.LocalRepaired++
		case localOK:
			// the peer's block is bad, or differs: send ours
			if err := v.pushBlock(l, block, boff, actual); err != nil {
				return err
			}
			if peerOK {
				rep.Differed++
				v.log.Warn("verify: copies differed; the primary's block was sent to the peer", "offset", boff)
			} else {
				rep.PeerRepaired++
				v.log.Warn("verify: the peer's block failed its checksum; repaired from this copy", "offset", boff)
			}
		default:
			v.stats.checksumErrors.Add(1)
			if len(rep.Unrecoverable) < 100 {
				rep.Unrecoverable = append(rep.Unrecoverable, boff)
			}
			v.log.Error("verify: the block is bad on both copies", "offset", boff)
		}
	}
	return nil
}

func (v *Volume) pushBlock(l *link, block []byte, off int64, crc uint32) error {
	if err := v.store.beginWrite(off, BlockSize); err != nil {
		return err
	}
	defer v.store.endWrite(off, BlockSize)
	_, err := l.call(&Frame{Type: FrameResyncData, Offset: uint64(off), Length: BlockSize}, block, putCRCs([]uint32{crc}))
	if err != nil {
		return fmt.Errorf("repair the peer's block at %d: %w", off, err)
	}
	return nil
}
