package vmm_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
)

// echoLoad runs conns connections of request-response on the guest's
// echo service (64-byte messages) for d: answers per second and the
// latency percentiles.
func (e *env) echoLoad(t *testing.T, conns int, d time.Duration) (perSecond float64, p50, p99 time.Duration) {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := 0; i < conns; i++ {
		c, err := e.c.ClientNS.DialContext(context.Background(), "tcp", guestIP+":7")
		if err != nil {
			t.Fatalf("echo: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			var mine []time.Duration
			for time.Now().Before(end) {
				start := time.Now()
				c.SetDeadline(start.Add(30 * time.Second))
				if _, err := c.Write(msg); err != nil {
					t.Errorf("echo: %v", err)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Errorf("echo: %v", err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(lat) == 0 {
		t.Fatal("no echo answered")
	}
	slices.Sort(lat)
	return float64(len(lat)) / d.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100]
}

// cpuByCommand is the CPU time every process has used so far, summed
// by command name (both nodes' processes alike: they share this
// machine's cores).
func cpuByCommand() map[string]time.Duration {
	out := map[string]time.Duration{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ... utime stime: fields 14 and 15, 100 Hz.
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(b[end+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[string(b[open+1:end])] += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return out
}

// cpuSince says which commands used the CPU since before, in cores (of
// the d elapsed), the largest first.
func cpuSince(before map[string]time.Duration, d time.Duration) string {
	type use struct {
		name  string
		cores float64
	}
	var uses []use
	total := 0.0
	for name, t := range cpuByCommand() {
		if c := (t - before[name]).Seconds() / d.Seconds(); c >= 0.01 {
			uses = append(uses, use{name, c})
			total += c
		}
	}
	slices.SortFunc(uses, func(a, b use) int { return cmp.Compare(b.cores, a.cores) })
	parts := []string{fmt.Sprintf("%.2f cores in all", total)}
	for _, u := range uses {
		parts = append(parts, fmt.Sprintf("%s %.2f", u.name, u.cores))
	}
	return strings.Join(parts, ", ")
}

// TestBenchFT is `make bench-ft` (TANDEM_BENCH=ft): on one cluster in
// namespaces, the test guest's echo service is loaded unprotected, then
// with FT on (throughput, latency, checkpoints and their pauses, time to
// protected); then the primary fails TANDEM_BENCH_RUNS times (default 6),
// alternating a kill -9 of its QEMU and a power cut of its node, with an
// echo connection and a kept-alive HTTP connection open: the failover
// gap (last echo before the fault to the first after), whether both
// connections survived, and the time to protected again once the failed
// node is back. The last line is the summary.
func TestBenchFT(t *testing.T) {
	if os.Getenv("TANDEM_BENCH") != "ft" {
		t.Skip("set TANDEM_BENCH=ft (make bench-ft)")
	}
	runs := 6
	if n, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	const load = 15 * time.Second
	e := newEnv(t)
	c := e.c
	ids := map[string]*clustertest.Member{nodeID(t, c.A): c.A, nodeID(t, c.B): c.B}
	vm := e.counterVM("ft", "node-a")
	e.waitCount(90 * time.Second)

	cpu := cpuByCommand()
	plainRate, plainP50, plainP99 := e.echoLoad(t, 4, load)
	t.Logf("unprotected: echo %.0f answers/s, latency p50 %v p99 %v", plainRate, plainP50.Round(10*time.Microsecond), plainP99.Round(10*time.Microsecond))
	t.Logf("unprotected: CPU during the load: %s", cpuSince(cpu, load))

	begin := time.Now()
	e.must("PUT", "/api/v1/vms/ft", map[string]any{"cpus": vm.CPUs, "memory_mib": vm.MemoryMiB, "disks": vm.Disks, "nics": vm.NICs, "boot": vm.Boot, "ft": true}, nil)
	vm = e.waitFT("ft", directory.FTProtected, nodeID(t, c.A), 3*time.Minute)
	toProtected := time.Since(begin)
	t.Logf("protected %.1fs after FT was switched on", toProtected.Seconds())

	before := e.status(c.A, "ft").FT
	cpu = cpuByCommand()
	ftRate, ftP50, ftP99 := e.echoLoad(t, 4, load)
	t.Logf("protected: CPU during the load: %s", cpuSince(cpu, load))
	after := e.status(c.A, "ft").FT
	ratio := ftRate / plainRate
	checkpoints := after.Checkpoints - before.Checkpoints
	t.Logf("protected: echo %.0f answers/s (%.2f× unprotected), latency p50 %v p99 %v; %.0f checkpoints/min, pause median %.1f ms, max %.1f ms",
		ftRate, ratio, ftP50.Round(10*time.Microsecond), ftP99.Round(10*time.Microsecond),
		float64(checkpoints)/load.Minutes(), after.CheckpointPauseMs, after.CheckpointMaxMs)

	var gaps, reprotect []float64
	kept, total := 0, 0
	for i := 0; i < runs; i++ {
		primary := ids[vm.Node]
		var survivor *clustertest.Member
		for id, m := range ids {
			if id != vm.Node {
				survivor = m
			}
		}
		fc := e.startFTClient(t)
		time.Sleep(2 * time.Second)
		how := "kill -9 of the primary's QEMU"
		at := time.Now()
		if i%2 == 0 {
			e.killQEMU(primary, "ft")
		} else {
			how = "power cut of the primary's node"
			primary.PowerOff()
		}
		e.waitFT("ft", directory.FTFailedOver, nodeID(t, survivor), 30*time.Second)
		failedOver := time.Now()
		fc.waitEcho(t, failedOver, 60*time.Second)
		gap := fc.longestWait(at, failedOver)
		time.Sleep(time.Second)
		fc.close()
		fc.mu.Lock()
		echoKept, httpKept := fc.echoErr == nil, fc.httpConns <= 1 && len(fc.countErr) == 0
		fc.mu.Unlock()
		total += 2
		for _, k := range []bool{echoKept, httpKept} {
			if k {
				kept++
			}
		}
		healed := failedOver
		if i%2 == 1 {
			primary.PowerOn()
			healed = time.Now()
		}
		vm = e.waitFT("ft", directory.FTProtected, nodeID(t, survivor), 3*time.Minute)
		gaps = append(gaps, gap.Seconds())
		reprotect = append(reprotect, time.Since(healed).Seconds())
		t.Logf("run %d, %s: gap %.3fs, echo connection kept %v, HTTP connection kept %v; protected again %.1fs after %s",
			i+1, how, gap.Seconds(), echoKept, httpKept, time.Since(healed).Seconds(), map[bool]string{true: "the node came back", false: "the failover"}[i%2 == 1])
	}
	e.checkConsoles("ft")
	slices.Sort(gaps)
	slices.Sort(reprotect)
	t.Logf("failover gap: median %.3fs, max %.3fs; re-protection median %.1fs; time to protected after enabling %.1fs",
		gaps[len(gaps)/2], gaps[len(gaps)-1], reprotect[len(reprotect)/2], toProtected.Seconds())
	t.Log(fmt.Sprintf("ft_failover_gap_median_s=%.3f connections_kept=%d/%d ft_throughput_ratio=%.2f runs=%d",
		gaps[len(gaps)/2], kept, total, ratio, runs))
}
