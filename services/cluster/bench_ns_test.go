package cluster_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
)

// TestBenchFailover is the failover benchmark behind make bench-failover
// (it runs only with TANDEM_BENCH=failover): leader kill -9 to a new
// leader and to the cluster IP answering, over TANDEM_BENCH_RUNS runs
// (default 20); directory write throughput and latency through the front
// door; then an idle run of TANDEM_BENCH_IDLE (default 10m) counting
// leader changes nobody caused. The last line it logs is the summary.
func TestBenchFailover(t *testing.T) {
	if os.Getenv("TANDEM_BENCH") != "failover" {
		t.Skip("run with make bench-failover (TANDEM_BENCH=failover)")
	}
	runs := 20
	if v, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	idle := 10 * time.Minute
	if v, err := time.ParseDuration(os.Getenv("TANDEM_BENCH_IDLE")); err == nil {
		idle = v
	}
	c := clustertest.New(t, clustertest.Options{Firewall: true})
	c.Form()
	ctx := context.Background()

	var toLeader, toIP []time.Duration
	for i := 0; i < runs; i++ {
		leader := c.Leader(ctx)
		if leader == nil || leader.Role != "node" {
			c.WaitHealthy(30 * time.Second)
			leader = c.Leader(ctx)
		}
		other := c.A
		if leader == c.A {
			other = c.B
		}
		killed := time.Now()
		leader.KillAgent()
		var elected, answered time.Duration
		for elected == 0 || answered == 0 {
			if time.Since(killed) > 20*time.Second {
				s, err := c.Status(ctx, other)
				var ip cluster.Status
				_, ipErr := c.Do(ctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/cluster/status", nil, &ip)
				t.Fatalf("run %d: no failover within 20 s (elected %v, answered %v)\n%s says %+v (%v)\ncluster IP says %+v (%v)", i, elected, answered, other.Name, s, err, ip, ipErr)
			}
			pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			if elected == 0 {
				if s, err := c.Status(pctx, other); err == nil && s.State == "Leader" {
					elected = time.Since(killed)
				}
			}
			if answered == 0 {
				var s cluster.Status
				if _, err := c.Do(pctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/cluster/status", nil, &s); err == nil &&
					s.State == "Leader" && s.Member.Name == other.Name {
					answered = time.Since(killed)
				}
			}
			cancel()
			time.Sleep(5 * time.Millisecond)
		}
		toLeader, toIP = append(toLeader, elected), append(toIP, answered)
		t.Logf("run %2d: %s killed, %s leads after %v, cluster IP answers after %v", i+1, leader.Name, other.Name,
			elected.Round(time.Millisecond), answered.Round(time.Millisecond))
		leader.Kill()
		leader.Start()
		c.WaitHealthy(30 * time.Second)
		time.Sleep(time.Second)
	}

	writes := benchWrites(t, c, 8, 10*time.Second)
	t.Logf("directory writes through the cluster IP with fsync: %s", writes)

	// Idle: nothing is done to the cluster; the leader must not change.
	start, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	term := start.Term
	for deadline := time.Now().Add(idle); time.Now().Before(deadline); {
		time.Sleep(5 * time.Second)
		h, err := c.Health(ctx)
		if err != nil {
			changes++
			t.Logf("idle: cluster health unanswered: %v", err)
			continue
		}
		if h.Term != term {
			changes++
			t.Logf("idle: leader change, term %d to %d (leader %s)", term, h.Term, h.LeaderID)
			term = h.Term
		}
	}
	t.Logf("idle %v: %d leader changes", idle, changes)

	med, maxIP := median(toIP), slices.Max(toIP)
	t.Logf("to a new leader: median %.3fs, max %.3fs; to the cluster IP answering: median %.3fs, max %.3fs",
		median(toLeader).Seconds(), slices.Max(toLeader).Seconds(), med.Seconds(), maxIP.Seconds())
	t.Logf("failover_median_s=%.3f failover_max_s=%.3f runs=%d unexpected_leader_changes=%d", med.Seconds(), maxIP.Seconds(), runs, changes)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchWrites has n clients write labels through the cluster IP for a
// while and reports throughput and latency percentiles.
func benchWrites(t *testing.T, c *clustertest.Cluster, n int, d time.Duration) string {
	var mu sync.Mutex
	var lat []time.Duration
	var failed int
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; time.Now().Before(end); j++ {
				start := time.Now()
				_, err := c.Do(context.Background(), c.ClientNS, "PUT", clustertest.ClusterIP, fmt.Sprintf("/api/v1/labels/bench%d", i), map[string]string{"value": strconv.Itoa(j)}, nil)
				took := time.Since(start)
				mu.Lock()
				if err != nil {
					failed++
				} else {
					lat = append(lat, took)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	if len(lat) == 0 {
		t.Fatalf("no write succeeded (%d failed)", failed)
	}
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	return fmt.Sprintf("%d clients, %.0f writes/s, p50 %.2f ms, p99 %.2f ms, %d failed",
		n, float64(len(lat))/d.Seconds(), float64(p(0.5).Microseconds())/1000, float64(p(0.99).Microseconds())/1000, failed)
}
