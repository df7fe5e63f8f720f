package replica

import (
	"context"
	"encoding/json"
	"time"
)

const (
	// resyncChunk is the most a resync request carries.
	resyncChunk = 1 << 20
	// resyncWindow is how many resync requests are in flight at once.
	resyncWindow = 8
)

// resync copies every out-of-sync block to the peer over l, oldest first,
// in chunks of contiguous blocks, within the rate limit; guest writes to a
// chunk wait for it (the chunk holds the range lock until the peer has it).
// When nothing is out of sync it tells the peer it is current and records
// that in the cluster.
func (v *Volume) resync(ctx context.Context, l *link) {
	if v.store.OutOfSyncBytes() == 0 {
		v.resyncDone(ctx, l)
		return
	}
	start := time.Now()
	total := v.store.OutOfSyncBytes()
	v.log.Info("resync started", "bytes", total)
	bucket := newTokenBucket(v.cfg.ResyncRate)
	window := make(chan struct{}, resyncWindow)
	failed := 0
	var sent int64
	rateStart, rateBytes := time.Now(), int64(0)
	for pass := 0; l.closed() == nil && ctx.Err() == nil; pass++ {
		from := int64(0)
		progress := false
		for l.closed() == nil && ctx.Err() == nil {
			b, n, ok := v.store.NextOutOfSync(from, resyncChunk/BlockSize)
			if !ok {
				break
			}
			from = b + n
			off, length := b*BlockSize, n*BlockSize
			if err := bucket.take(ctx, length); err != nil {
				break
			}
			window <- struct{}{}
			lr := v.locks.lock(off, length, false)
			// the bits may have been cleared by a guest write meanwhile
			if !v.store.IsOutOfSync(b) {
				lr.unlock()
				<-window
				continue
			}
			data := make([]byte, length)
			crcs, err := v.store.readBlocks(data, off, make([]uint32, 0, n))
			if err == nil {
				if bad := badBlocks(data, crcs); len(bad) > 0 {
					v.stats.checksumErrors.Add(int64(len(bad)))
					v.log.Error("resync: the source's own copy fails its checksum; block left out of sync", "offset", off+int64(bad[0])*BlockSize, "blocks", len(bad))
					err = ErrChecksum
				}
			}
			if err != nil {
				lr.unlock()
				<-window
				failed++
				continue
			}
			if err := v.store.beginWrite(off, length); err != nil {
				lr.unlock()
				<-window
				break
			}
			ch := l.send(&Frame{Type: FrameResyncData, Offset: uint64(off), Length: uint32(length)}, data, putCRCs(crcs))
			progress = true
			go func() {
				defer func() { v.store.endWrite(off, length); lr.unlock(); <-window }()
				r := <-ch
				if r.err != nil || r.f.Type != FrameAck {
					if r.err == nil {
						v.log.Error("resync: peer refused a chunk", "offset", off, "err", string(r.f.Payload))
					}
					return
				}
				v.store.ClearOutOfSync(off, length)
				v.stats.resynced.Add(length)
			}()
			sent += length
			rateBytes += length
			if el := time.Since(rateStart); el >= time.Second {
				v.stats.resyncRate.Store(int64(float64(rateBytes) / el.Seconds()))
				rateStart, rateBytes = time.Now(), 0
			}
		}
		// drain the window
		for i := 0; i < resyncWindow; i++ {
			window <- struct{}{}
		}
		for i := 0; i < resyncWindow; i++ {
			<-window
		}
		if v.store.OutOfSyncBytes() == 0 {
			break
		}
		if !progress {
			// what is left failed: try again later
			select {
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
			case <-l.done:
			}
		}
	}
	v.stats.resyncRate.Store(0)
	if l.closed() != nil || ctx.Err() != nil {
		v.log.Warn("resync interrupted; it resumes when the peer is back", "left_bytes", v.store.OutOfSyncBytes())
		return
	}
	v.log.Info("resync copied", "bytes", sent, "seconds", time.Since(start).Seconds(), "failed_chunks", failed)
	v.resyncDone(ctx, l)
}

// resyncDone makes both copies durable, moves the peer to this copy's
// generation, and records the peer as current in the cluster.
func (v *Volume) resyncDone(ctx context.Context, l *link) {
	if _, err := l.call(&Frame{Type: FrameFlush}); err != nil {
		return
	}
	if err := v.store.Checkpoint(false); err != nil {
		v.log.Error("resync: checkpoint", "err", err)
		return
	}
	// Writes made from here on reach both copies; the generation the peer
	// takes is this copy's current one.
	g, _ := v.store.Generations()
	b, _ := json.Marshal(ResyncDone{Current: g.Current})
	if _, err := l.call(&Frame{Type: FrameResyncDone}, b); err != nil {
		v.log.Error("resync: peer did not take the generation", "err", err)
		return
	}
	if err := v.store.updateHeader(func(h *header) { h.Generations.settle() }); err != nil {
		v.log.Error("resync: header", "err", err)
		return
	}
	if v.cfg.UpToDate != nil {
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			err := v.cfg.UpToDate(ctx)
			if err == nil {
				break
			}
			v.log.Warn("cannot record the peer's copy as current yet", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			case <-l.done:
				return
			}
		}
	}
	v.mu.Lock()
	if v.link == l {
		v.alone = false
	}
	v.mu.Unlock()
	v.log.Info("peer's copy is up to date")
}

// tokenBucket limits a rate in bytes per second (0: unlimited).
type tokenBucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate int64) *tokenBucket {
	return &tokenBucket{rate: float64(rate), tokens: float64(rate) / 10, last: time.Now()}
}

func (b *tokenBucket) take(ctx context.Context, n int64) error {
	if b.rate <= 0 {
		return ctx.Err()
	}
	for {
		now := time.Now()
		b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, max(b.rate/10, float64(n)))
		b.last = now
		if b.tokens >= float64(n) {
			b.tokens -= float64(n)
			return nil
		}
		wait := time.Duration((float64(n) - b.tokens) / b.rate * float64(time.Second))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
