package replica

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// latencyHistogram counts request latencies in power-of-two microsecond
// buckets: cheap enough for every request, precise enough to tell a slow
// disk (percentiles within a factor of two).
type latencyHistogram struct {
	buckets [32]atomic.Int64
	count   atomic.Int64
	bytes   atomic.Int64
}

func (h *latencyHistogram) observe(start time.Time, n int) {
	us := time.Since(start).Microseconds()
	b := 0
	if us > 0 {
		b = min(bits.Len64(uint64(us)), len(h.buckets)-1)
	}
	h.buckets[b].Add(1)
	h.count.Add(1)
	h.bytes.Add(int64(n))
}

// Latency is a snapshot of a histogram.
type Latency struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
	P50us int64 `json:"p50_us"`
	P99us int64 `json:"p99_us"`
	Maxus int64 `json:"max_us"` // upper bound of the highest bucket used
}

func (h *latencyHistogram) snapshot() Latency {
	var c [32]int64
	var total int64
	for i := range c {
		c[i] = h.buckets[i].Load()
		total += c[i]
	}
	l := Latency{Count: h.count.Load(), Bytes: h.bytes.Load()}
	if total == 0 {
		return l
	}
	upper := func(i int) int64 { return int64(1) << i } // bucket i holds [2^(i-1), 2^i) µs
	var seen int64
	for i, n := range c {
		seen += n
		if l.P50us == 0 && seen*2 >= total {
			l.P50us = upper(i)
		}
		if l.P99us == 0 && seen*100 >= total*99 {
			l.P99us = upper(i)
		}
		if n > 0 {
			l.Maxus = upper(i)
		}
	}
	return l
}
