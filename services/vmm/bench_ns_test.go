package vmm_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/nstest"
	"github.com/tandemhci/tandem/services/vmm"
)

// TestBenchHA is `make bench-ha` (TANDEM_BENCH=ha): on one cluster in
// namespaces, the node running an HA test guest loses power
// TANDEM_BENCH_RUNS times (default 10), alternating nodes; each run
// measures power cut → the guest's counter answering from the survivor,
// split into detection and fencing wait (until the leader moves the VM),
// QEMU start and guest boot. Then live migrations back and forth, with a
// client asking the counter every 10 ms: the longest time without an
// answer is the service downtime. Then 20 VMs defined: the VM manager's
// memory and CPU. The last line is the summary.
func TestBenchHA(t *testing.T) {
	if os.Getenv("TANDEM_BENCH") != "ha" {
		t.Skip("set TANDEM_BENCH=ha (make bench-ha)")
	}
	runs := 10
	if n, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	e := newEnv(t)
	c := e.c
	e.counterVM("db", "node-a", true)
	e.waitCount(90 * time.Second)
	byID := map[string]*clustertest.Member{nodeID(t, c.A): c.A, nodeID(t, c.B): c.B}

	var totals, detect, qemuStart, boot []float64
	for i := 0; i < runs; i++ {
		var vm directory.VM
		e.must("GET", "/api/v1/vms/db", nil, &vm)
		host := byID[vm.Node]
		var survivor *clustertest.Member
		for id, m := range byID {
			if id != vm.Node {
				survivor = m
			}
		}
		e.waitCount(30 * time.Second)
		cut := time.Now()
		host.PowerOff()
		var moved time.Time
		nstest.WaitFor(t, 60*time.Second, "the VM moved", func() bool {
			var v directory.VM
			if e.do("GET", "/api/v1/vms/db", nil, &v) == nil && v.Node != vm.Node {
				moved = time.Now()
				return true
			}
			return false
		})
		for {
			if _, err := e.count(500 * time.Millisecond); err == nil {
				break
			}
			if time.Since(cut) > 2*time.Minute {
				t.Fatalf("run %d: the guest did not answer from %s", i+1, survivor.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		total := time.Since(cut)
		started := e.lastEvent(survivor, "db", "started")
		totals = append(totals, total.Seconds())
		detect = append(detect, moved.Sub(cut).Seconds())
		qemuStart = append(qemuStart, started.Sub(moved).Seconds())
		boot = append(boot, total.Seconds()-started.Sub(cut).Seconds())
		t.Logf("run %d: %s lost power; guest answered from %s after %.2fs (moved at %.2fs, QEMU running at %.2fs)",
			i+1, host.Name, survivor.Name, total.Seconds(), moved.Sub(cut).Seconds(), started.Sub(cut).Seconds())
		host.PowerOn()
		c.WaitHealthy(60 * time.Second)
		hostID := nodeID(t, host)
		nstest.WaitFor(t, 120*time.Second, host.Name+"'s copy up to date", func() bool {
			var v directory.Volume
			return e.do("GET", "/api/v1/volumes/db-disk", nil, &v) == nil && v.Copies[hostID] == directory.CopyUpToDate
		})
	}

	// Live migration downtime, as a client sees it.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.ClientNS.DialContext}}
	var downtimes, gaps, migTotals []float64
	for i := 0; i < 4; i++ {
		var vm directory.VM
		e.must("GET", "/api/v1/vms/db", nil, &vm)
		stop := make(chan struct{})
		gapc := make(chan time.Duration)
		go func() {
			var gap time.Duration
			lastOK := time.Now()
			for {
				select {
				case <-stop:
					gapc <- gap
					return
				default:
				}
				resp, err := client.Get("http://" + guestIP + "/peek")
				if err == nil {
					resp.Body.Close()
					gap = max(gap, time.Since(lastOK))
					lastOK = time.Now()
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		time.Sleep(500 * time.Millisecond)
		begin := time.Now()
		e.must("POST", "/api/v1/vms/db/migrate", nil, nil)
		nstest.WaitFor(t, 120*time.Second, "the migration", func() bool {
			var v directory.VM
			return e.do("GET", "/api/v1/vms/db", nil, &v) == nil && v.Node != vm.Node && v.MigrateTo == ""
		})
		migTotals = append(migTotals, time.Since(begin).Seconds())
		time.Sleep(2 * time.Second)
		close(stop)
		gap := <-gapc
		gaps = append(gaps, float64(gap.Milliseconds()))
		// The guest's pause: from the source QEMU stopping it (its
		// completion time less the downtime QEMU reports) to the target
		// resuming it (both events on this machine's one clock).
		from, to := byID[vm.Node], byID[vm.MigrateTo]
		if to == nil {
			for id, m := range byID {
				if id != vm.Node {
					to = m
				}
			}
		}
		var out, in vmm.Event
		for _, ev := range e.events(from, "db") {
			if ev.Kind == "migrated-out" {
				out = ev
			}
		}
		for _, ev := range e.events(to, "db") {
			if ev.Kind == "migrated-in" {
				in = ev
			}
		}
		var qemuDown int64
		fmt.Sscanf(out.Detail[strings.Index(out.Detail, "QEMU downtime")+len("QEMU downtime "):], "%d", &qemuDown)
		pause := in.Time.Sub(out.Time.Add(-time.Duration(qemuDown) * time.Millisecond))
		downtimes = append(downtimes, float64(pause.Milliseconds()))
		t.Logf("migration %d: %.1fs; guest paused %d ms (QEMU's own downtime %d ms, then the volumes moved and it resumed); longest time a client waited %d ms",
			i+1, time.Since(begin).Seconds()-2, pause.Milliseconds(), qemuDown, gap.Milliseconds())
	}

	// The VM manager with 20 VMs defined.
	for i := 0; i < 20; i++ {
		e.must("POST", "/api/v1/vms", map[string]any{"name": fmt.Sprintf("idle-%02d", i), "cpus": 1, "memory_mib": 64,
			"boot": map[string]any{"kernel": "vmlinux"}}, nil)
	}
	time.Sleep(2 * time.Second)
	rss0, cpu0 := vmmUsage(t, c.A)
	time.Sleep(30 * time.Second)
	rss1, cpu1 := vmmUsage(t, c.A)
	t.Logf("VM manager with 20 VMs defined: %.1f MiB resident, %.2f%% of a core over 30s", float64(max(rss0, rss1))/(1<<20), 100*(cpu1-cpu0)/30)

	t.Logf("HA restart (s): median %.2f, max %.2f; detection+fencing median %.2f, QEMU start %.2f, guest boot %.2f",
		median(totals), slices.Max(totals), median(detect), median(qemuStart), median(boot))
	t.Logf("migration: total median %.1fs; guest paused median %.0f ms, max %.0f ms; a client polling every 10 ms waited at most %.0f ms (median of runs; TCP retransmission adds to the pause)",
		median(migTotals), median(downtimes), slices.Max(downtimes), median(gaps))
	t.Logf("ha_restart_median_s=%.2f ha_restart_max_s=%.2f runs=%d migration_downtime_ms=%.0f",
		median(totals), slices.Max(totals), runs, median(downtimes))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// vmmUsage is the member's VM manager's resident memory and CPU seconds.
func vmmUsage(t *testing.T, m *clustertest.Member) (rss int64, cpu float64) {
	out, err := exec.Command("pgrep", "-f", "tandem-vmm -run "+m.Dir).Output()
	if err != nil {
		t.Fatalf("find the VM manager: %v", err)
	}
	pid := strings.Fields(string(out))[0]
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	return pages * int64(os.Getpagesize()), (utime + stime) / 100
}
