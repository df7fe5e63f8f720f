package cluster

import (
	"context"
	"net/url"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/metrics"
)

// statsFeed brings every node's samples (its VM manager's, see
// /api/v1/vmm/stats) to this member's events websockets, asking each
// node every statsPoll while at least one console listens, and not at
// all otherwise.
type statsFeed struct {
	mu     sync.Mutex
	subs   map[int]chan metrics.Sample
	next   int
	cancel context.CancelFunc // of the poll loop, while it runs
}

const statsPoll = 2 * time.Second

// subscribeStats returns a channel of samples as they come, and the
// function that ends the subscription.
func (a *Agent) subscribeStats() (<-chan metrics.Sample, func()) {
	f := &a.stats
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[int]chan metrics.Sample{}
	}
	ch := make(chan metrics.Sample, 16)
	id := f.next
	f.next++
	f.subs[id] = ch
	if f.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f.cancel = cancel
		go a.pollStats(ctx)
	}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[id]; !ok {
			return
		}
		delete(f.subs, id)
		close(ch)
		if len(f.subs) == 0 && f.cancel != nil {
			f.cancel()
			f.cancel = nil
		}
	}
}

// pollStats asks every node for its samples since the newest it has
// seen of it, and hands them to the subscribers. A node's first answer
// gives only its newest sample: a console reads the history itself.
func (a *Agent) pollStats(ctx context.Context) {
	newest := map[string]time.Time{}
	t := time.NewTicker(statsPoll)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var got []metrics.Sample
		for _, m := range a.Directory().Members() {
			if m.Role != directory.MemberNode {
				continue
			}
			wg.Add(1)
			go func(m directory.Member) {
				defer wg.Done()
				mu.Lock()
				since := newest[m.ID]
				mu.Unlock()
				cctx, cancel := context.WithTimeout(ctx, statsPoll)
				defer cancel()
				var st struct {
					Samples []metrics.Sample `json:"samples"`
				}
				path := "/api/v1/vmm/stats?node=" + url.QueryEscape(m.ID)
				if !since.IsZero() {
					path += "&since=" + url.QueryEscape(since.Format(time.RFC3339Nano))
				}
				if err := a.memberCall(cctx, m, "GET", path, nil, &st); err != nil || len(st.Samples) == 0 {
					return
				}
				if since.IsZero() {
					st.Samples = st.Samples[len(st.Samples)-1:]
				}
				mu.Lock()
				defer mu.Unlock()
				newest[m.ID] = st.Samples[len(st.Samples)-1].Time
				got = append(got, st.Samples...)
			}(m)
		}
		wg.Wait()
		a.stats.mu.Lock()
		for _, s := range got {
			for _, ch := range a.stats.subs {
				select {
				case ch <- s:
				default: // a slow console misses a point of its chart
				}
			}
		}
		a.stats.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
