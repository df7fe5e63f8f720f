package vmm_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/nstest"
	"github.com/tandemhci/tandem/services/vmm"
)

// ftClient is what a user of a fault-tolerant service sees: one TCP
// connection to the guest's echo service carrying a line every 100 ms,
// and one kept-alive HTTP connection asking the counter every 100 ms.
// Both must survive every failover, and the counter must count on by
// exactly one per answer.
type ftClient struct {
	t *testing.T
	e *env

	mu        sync.Mutex
	echoAt    []time.Time // when each echo came back
	echoErr   error       // the echo connection broke
	counts    int
	last      int
	countErr  []string
	httpConns int // connections the HTTP client had to open
	stop      chan struct{}
	wg        sync.WaitGroup
}

func (e *env) startFTClient(t *testing.T) *ftClient {
	t.Helper()
	fc := &ftClient{t: t, e: e, stop: make(chan struct{})}
	conn, err := e.c.ClientNS.DialContext(context.Background(), "tcp", guestIP+":7")
	if err != nil {
		t.Fatalf("echo: %v", err)
	}
	// Long timeouts: a failover holds the connection a moment, TCP
	// retransmits, nothing is reset.
	fc.wg.Add(2)
	go func() {
		defer fc.wg.Done()
		defer conn.Close()
		r := bufio.NewReader(conn)
		for i := 0; ; i++ {
			select {
			case <-fc.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			msg := fmt.Sprintf("line %d\n", i)
			conn.SetDeadline(time.Now().Add(60 * time.Second))
			_, err := io.WriteString(conn, msg)
			var got string
			if err == nil {
				got, err = r.ReadString('\n')
			}
			if err == nil && got != msg {
				err = fmt.Errorf("echo answered %q to %q", got, msg)
			}
			fc.mu.Lock()
			if err != nil {
				fc.echoErr = err
				fc.mu.Unlock()
				return
			}
			fc.echoAt = append(fc.echoAt, time.Now())
			fc.mu.Unlock()
		}
	}()
	tr := &http.Transport{DialContext: e.c.ClientNS.DialContext, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Hour}
	client := &http.Client{Timeout: 60 * time.Second, Transport: tr}
	go func() {
		defer fc.wg.Done()
		defer tr.CloseIdleConnections()
		for {
			select {
			case <-fc.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
				if !info.Reused {
					fc.mu.Lock()
					fc.httpConns++
					fc.mu.Unlock()
				}
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+guestIP+"/", nil)
			resp, err := client.Do(req)
			var n int
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				n, err = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(b), "count ")))
			}
			fc.mu.Lock()
			switch {
			case err != nil:
				fc.countErr = append(fc.countErr, err.Error())
			case fc.counts > 0 && n != fc.last+1:
				fc.countErr = append(fc.countErr, fmt.Sprintf("count %d after %d", n, fc.last))
			}
			if err == nil {
				fc.counts++
				fc.last = n
			}
			fc.mu.Unlock()
		}
	}()
	return fc
}

// longestWait is the longest wait between two echoes in a row that
// began before until and ended after from. The failover gap of a fault
// at t is longestWait(t, the moment the failover shows): the first
// echo after t can be one that was already on its way, the outage after
// it, and the pause when protection starts again comes later.
func (fc *ftClient) longestWait(from, until time.Time) time.Duration {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	var longest time.Duration
	for i := 1; i < len(fc.echoAt); i++ {
		prev, next := fc.echoAt[i-1], fc.echoAt[i]
		if next.After(from) && prev.Before(until) {
			longest = max(longest, next.Sub(prev))
		}
	}
	return longest
}

// check fails the test if a connection broke or the count skipped.
func (fc *ftClient) check(what string) {
	fc.t.Helper()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.echoErr != nil {
		fc.t.Fatalf("%s: the echo connection broke: %v\n%s", what, fc.echoErr, fc.e.ftReport("ft"))
	}
	if len(fc.countErr) > 0 {
		fc.t.Fatalf("%s: the counter: %v\n%s", what, fc.countErr[:min(3, len(fc.countErr))], fc.e.ftReport("ft"))
	}
	if fc.httpConns > 1 {
		fc.t.Fatalf("%s: the HTTP client had to open %d connections", what, fc.httpConns)
	}
}

// waitEcho waits until an echo comes back after at.
func (fc *ftClient) waitEcho(t *testing.T, at time.Time, timeout time.Duration) {
	t.Helper()
	nstest.WaitFor(t, timeout, "the echo after the fault", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if fc.echoErr != nil {
			t.Fatalf("the echo connection broke: %v\n%s", fc.echoErr, fc.e.ftReport("ft"))
		}
		return len(fc.echoAt) > 0 && fc.echoAt[len(fc.echoAt)-1].After(at)
	})
}

func (fc *ftClient) close() {
	close(fc.stop)
	fc.wg.Wait()
}

// vm reads the VM's record.
func (e *env) vm(name string) directory.VM {
	var vm directory.VM
	e.must("GET", "/api/v1/vms/"+name, nil, &vm)
	return vm
}

// waitFT waits until the VM's fault tolerance is state with its primary
// on node (ID).
func (e *env) waitFT(name, state, node string, timeout time.Duration) directory.VM {
	e.t.Helper()
	var vm directory.VM
	deadline := time.Now().Add(timeout)
	for {
		vm = directory.VM{}
		if e.do("GET", "/api/v1/vms/"+name, nil, &vm) == nil && vm.FTState == state && vm.Node == node {
			return vm
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("%s not %s on %s within %v: %+v\n%s", name, state, node, timeout, vm, e.ftReport(name))
	return vm
}

// ftReport is what the nodes say of a VM's fault tolerance.
func (e *env) ftReport(name string) string {
	var b strings.Builder
	for _, m := range []*clustertest.Member{e.c.A, e.c.B} {
		var st vmm.VMStatus
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := e.c.Do(ctx, e.c.ClientNS, "GET", m.IP, "/api/v1/vmm/vms/"+name+"?node="+m.Name, nil, &st)
		var evs []vmm.Event
		if err == nil {
			_, err = e.c.Do(ctx, e.c.ClientNS, "GET", m.IP, "/api/v1/vmm/vms/"+name+"/history?node="+m.Name, nil, &evs)
		}
		cancel()
		fmt.Fprintf(&b, "%s: %+v ft %+v (%v)\n", m.Name, st, st.FT, err)
		for _, line := range strings.Split(m.Log(), "\n") {
			if strings.Contains(line, "FT") || strings.Contains(line, "COLO") || strings.Contains(line, "level=ERROR") {
				fmt.Fprintf(&b, "  %s\n", line)
			}
		}
		for _, ev := range evs {
			fmt.Fprintf(&b, "  %s %s: %s\n", ev.Time.Format("15:04:05.000"), ev.Kind, ev.Detail)
		}
	}
	return tail(b.String())
}

var oops = regexp.MustCompile(`(?i)oops|BUG:|kernel panic|list_add corruption|general protection|Call Trace`)

// checkConsoles fails on a guest kernel error in either node's serial
// logs of the VM.
func (e *env) checkConsoles(name string) {
	e.t.Helper()
	for _, m := range []*clustertest.Member{e.c.A, e.c.B} {
		b, _ := os.ReadFile(filepath.Join(m.Dir, "vms", name, "serial.log"))
		if loc := oops.FindIndex(b); loc != nil {
			e.t.Fatalf("the guest's console on %s shows an error:\n%s", m.Name, b[max(0, loc[0]-2000):min(len(b), loc[1]+2000)])
		}
	}
}

// TestFaultTolerance: a VM with FT on is protected by a secondary on the
// other node (the first secondary killed while it starts); its
// primary's QEMU is killed, its node loses power, its node is cut off,
// its node enters maintenance; its secondary's QEMU is killed; then five
// kill cycles in a row. Each time the guest goes on with the client's
// TCP connections open and its counter counts on exactly, and protection
// comes back by itself, roles swapped as they fall. Last, FT switched
// off ends the pairing, and switching it on with the other node down is
// refused with the reason.
func TestFaultTolerance(t *testing.T) {
	e := newEnv(t)
	c := e.c
	ids := map[string]*clustertest.Member{nodeID(t, c.A): c.A, nodeID(t, c.B): c.B}
	other := func(id string) string {
		for o := range ids {
			if o != id {
				return o
			}
		}
		return ""
	}
	vm := e.counterVM("ft", "node-a")
	e.waitCount(90 * time.Second)
	fc := e.startFTClient(t)
	defer fc.close()
	// FT switched on for the running VM, the client connected. The
	// first secondary's QEMU is killed as soon as it runs (a QEMU lost
	// mid-transition): the VM runs on alone, the manager says why, and
	// a next attempt protects it.
	setFT := func(on bool) (int, error) {
		return c.Do(context.Background(), c.ClientNS, "PUT", clustertest.ClusterIP, "/api/v1/vms/ft",
			map[string]any{"cpus": vm.CPUs, "memory_mib": vm.MemoryMiB, "disks": vm.Disks, "nics": vm.NICs, "boot": vm.Boot, "ft": on}, nil)
	}
	begin := time.Now()
	if _, err := setFT(true); err != nil {
		t.Fatalf("switch FT on: %v", err)
	}
	var firstSecondary int
	nstest.WaitFor(t, 2*time.Minute, "the first secondary's QEMU", func() bool {
		b, err := os.ReadFile(filepath.Join(c.B.Dir, "vms", "ft", "qemu.pid"))
		firstSecondary, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && firstSecondary > 1
	})
	if err := syscall.Kill(firstSecondary, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the first secondary: %v", err)
	}
	vm = e.waitFT("ft", directory.FTProtected, nodeID(t, c.A), 3*time.Minute)
	t.Logf("protected %.1fs after FT was switched on (its first secondary killed)", time.Since(begin).Seconds())
	failed := ""
	for _, ev := range e.events(c.A, "ft") {
		if ev.Kind == "ft-failed" {
			failed = ev.Detail
		}
	}
	if failed == "" {
		t.Errorf("no failed protection recorded on %s for the killed secondary:\n%s", c.A.Name, e.ftReport("ft"))
	}
	t.Logf("the protection whose secondary was killed: %s", failed)
	time.Sleep(3 * time.Second)
	fc.check("while protected")

	var gaps []time.Duration
	faults := []struct {
		name  string
		apply func(primary, secondary *clustertest.Member)
		heal  func(primary, secondary *clustertest.Member)
		// the primary's node survives (the secondary was lost)
		primarySurvives bool
	}{
		{name: "kill -9 of the primary's QEMU", apply: func(p, _ *clustertest.Member) { e.killQEMU(p, "ft") }},
		{name: "power cut of the primary's node", apply: func(p, _ *clustertest.Member) { p.PowerOff() }, heal: func(p, _ *clustertest.Member) { p.PowerOn() }},
		{name: "isolation of the primary's node", apply: func(p, _ *clustertest.Member) { c.Isolate(p) }, heal: func(p, _ *clustertest.Member) { c.Heal() }},
		// A planned failover: the secondary takes over at once.
		{name: "maintenance of the primary's node", apply: func(p, _ *clustertest.Member) { e.maintenance(p, true) }, heal: func(p, _ *clustertest.Member) { e.maintenance(p, false) }},
		{name: "kill -9 of the secondary's QEMU", apply: func(_, s *clustertest.Member) { e.killQEMU(s, "ft") }, primarySurvives: true},
	}
	// Failover and re-protection cycles in a row (TANDEM_FT_CYCLES, five
	// by default), the primary's QEMU and the secondary's by turns.
	cycles := 5
	if n, err := strconv.Atoi(os.Getenv("TANDEM_FT_CYCLES")); err == nil && n >= 0 {
		cycles = n
	}
	killPrimary, killSecondary := faults[0], faults[len(faults)-1]
	for i := 0; i < cycles; i++ {
		f := killPrimary
		if i%2 == 1 {
			f = killSecondary
		}
		f.name = fmt.Sprintf("cycle %d: %s", i+1, f.name)
		faults = append(faults, f)
	}
	for _, f := range faults {
		primaryID := vm.Node
		primary, secondary := ids[primaryID], ids[other(primaryID)]
		survivor := secondary
		if f.primarySurvives {
			survivor = primary
		}
		at := time.Now()
		f.apply(primary, secondary)
		e.waitFT("ft", directory.FTFailedOver, nodeID(t, survivor), 30*time.Second)
		failedOver := time.Now()
		fc.waitEcho(t, failedOver, 60*time.Second)
		gap := fc.longestWait(at, failedOver)
		gaps = append(gaps, gap)
		fc.check(f.name)
		t.Logf("%s: failover gap %v (VM on %s)", f.name, gap.Round(time.Millisecond), survivor.Name)
		if f.heal != nil {
			f.heal(primary, secondary)
		}
		back := time.Now()
		vm = e.waitFT("ft", directory.FTProtected, nodeID(t, survivor), 3*time.Minute)
		protected := time.Now()
		fc.waitEcho(t, protected, 60*time.Second)
		t.Logf("%s: protected again %.1fs after the healing; the longest wait for an echo meanwhile %v", f.name, time.Since(back).Seconds(),
			fc.longestWait(failedOver, protected).Round(time.Millisecond))
		fc.check(f.name + ", re-protected")
		e.checkConsoles("ft")
	}

	// Switching FT off ends the pairing: the secondary's QEMU goes, the
	// guest runs on alone with its connections.
	primary, secondary := ids[vm.Node], ids[other(vm.Node)]
	secondaryPID := e.qemuPID(secondary, "ft")
	if _, err := setFT(false); err != nil {
		t.Fatalf("switch FT off: %v", err)
	}
	e.waitFT("ft", "", vm.Node, 30*time.Second)
	nstest.WaitFor(t, 30*time.Second, "the secondary's QEMU to exit", func() bool { return syscall.Kill(secondaryPID, 0) != nil })
	fc.check("FT switched off")
	// With the other node down, FT cannot be switched on: refused, with
	// the reason, and the VM runs on unprotected.
	secondary.PowerOff()
	nstest.WaitFor(t, 30*time.Second, secondary.Name+" unreachable to the leader", func() bool {
		var h cluster.Health
		if e.do("GET", "/api/v1/cluster/health", nil, &h) != nil {
			return false
		}
		for _, m := range h.Members {
			if m.Name == secondary.Name {
				return !m.Reachable
			}
		}
		return false
	})
	code, err := setFT(true)
	if code != http.StatusConflict || !strings.Contains(fmt.Sprint(err), "cannot be protected") {
		t.Errorf("FT switched on with the other node down: %d %v", code, err)
	}
	if got := e.vm("ft"); got.FT || got.Node != nodeID(t, primary) {
		t.Errorf("after the refusal: ft %v on %s", got.FT, got.Node)
	}
	time.Sleep(time.Second)
	fc.check("FT refused")
	secondary.PowerOn()

	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	t.Logf("failover gaps: median %v, max %v over %d failovers; %d counter answers", gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond), len(gaps), fc.counts)
}

// maintenance switches m's maintenance mode.
func (e *env) maintenance(m *clustertest.Member, on bool) {
	e.t.Helper()
	e.must("POST", "/api/v1/cluster/members/"+m.Name+"/maintenance", map[string]any{"on": on}, nil)
}

// killQEMU kills the VM's QEMU on m (kill -9).
func (e *env) killQEMU(m *clustertest.Member, name string) {
	e.t.Helper()
	if err := syscall.Kill(e.qemuPID(m, name), syscall.SIGKILL); err != nil {
		e.t.Fatalf("kill %s's QEMU on %s: %v", name, m.Name, err)
	}
}

// qemuPID is the pid of the VM's QEMU on m.
func (e *env) qemuPID(m *clustertest.Member, name string) int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir, "vms", name, "qemu.pid"))
	if err != nil {
		e.t.Fatalf("%s's QEMU on %s: %v", name, m.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		e.t.Fatalf("%s's QEMU pid file on %s: %q", name, m.Name, b)
	}
	return pid
}
