package vmm_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandemhci/tandem/initramfs/watchdog"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/nstest"
	"github.com/tandemhci/tandem/services/vmm"
)

// The VM tests run the real thing in namespaces: both nodes' cluster
// agent, front door, storage service and VM manager, the witness, and
// QEMU running the test guest (images/testguest) from a replicated volume.

const guestIP = clustertest.Subnet + "200"

// testGuest and tandemQEMU are built once per machine (clustertest).
func testGuest(t *testing.T) string { return clustertest.TestGuest(t) }

func tandemQEMU(t *testing.T) string { return clustertest.TandemQEMU(t) }

type env struct {
	t *testing.T
	c *clustertest.Cluster
}

func newEnv(t *testing.T, fenceCommand ...string) *env {
	c := clustertest.New(t, clustertest.Options{Storage: true, VMs: true, BootDir: testGuest(t), APITimeout: 30 * time.Second,
		FenceCommand: fenceCommand, QEMU: tandemQEMU(t)})
	c.Form()
	c.WaitHealthy(30 * time.Second)
	return &env{t: t, c: c}
}

func (e *env) do(method, path string, in, out any) error {
	_, err := e.c.DoRetry(context.Background(), e.c.ClientNS, method, clustertest.ClusterIP, path, in, out)
	return err
}

func (e *env) must(method, path string, in, out any) {
	e.t.Helper()
	if err := e.do(method, path, in, out); err != nil {
		e.t.Fatal(err)
	}
}

// counterVM defines the test guest with a new volume, started on node.
func (e *env) counterVM(name, node string, ha ...bool) directory.VM {
	e.t.Helper()
	return e.counterVMAt(name, node, guestIP, len(ha) > 0 && ha[0])
}

// counterVMAt defines the test guest at ip.
func (e *env) counterVMAt(name, node, ip string, ha bool) directory.VM {
	e.t.Helper()
	e.must("POST", "/api/v1/volumes", map[string]any{"name": name + "-disk", "size_bytes": 16 << 20, "node": node}, nil)
	var vm directory.VM
	e.must("POST", "/api/v1/vms", map[string]any{
		"name": name, "cpus": 1, "memory_mib": 128,
		"disks": []map[string]any{{"volume": name + "-disk"}},
		"nics":  []map[string]any{{"network": "lan"}},
		"boot":  map[string]any{"kernel": "vmlinux", "initrd": "initrd.gz", "cmdline": "quiet cryptomgr.notests tandem.ip=" + ip + "/24"},
		"start": true, "node": node, "ha": ha,
	}, &vm)
	return vm
}

// count asks the guest's counter from the client namespace.
func (e *env) count(timeout time.Duration) (int, error) { return e.countAt(guestIP, timeout) }

func (e *env) countAt(ip string, timeout time.Duration) (int, error) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: e.c.ClientNS.DialContext, DisableKeepAlives: true}}
	resp, err := client.Get("http://" + ip + "/")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(b), "count ")))
	if err != nil {
		return 0, fmt.Errorf("guest answered %q", b)
	}
	return n, nil
}

func (e *env) waitCount(timeout time.Duration) int {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		var n int
		if n, err = e.count(2 * time.Second); err == nil {
			return n
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.t.Fatalf("the guest did not answer within %v: %v\nnode-a:\n%s\nnode-b:\n%s", timeout, err, tail(e.c.A.Log()), tail(e.c.B.Log()))
	return 0
}

func tail(s string) string {
	if len(s) > 5000 {
		return s[len(s)-5000:]
	}
	return s
}

// status is the VM's state as m's VM manager reports it (zero while the
// manager does not answer).
func (e *env) status(m *clustertest.Member, name string) vmm.VMStatus {
	var st vmm.VMStatus
	if _, err := e.c.Do(context.Background(), e.c.ClientNS, "GET", m.IP, "/api/v1/vmm/vms/"+name, nil, &st); err != nil {
		e.t.Logf("status of %s on %s: %v", name, m.Name, err)
	}
	return st
}

func (e *env) waitState(m *clustertest.Member, name, state string, timeout time.Duration) vmm.VMStatus {
	e.t.Helper()
	var st vmm.VMStatus
	nstest.WaitFor(e.t, timeout, name+" "+state+" on "+m.Name, func() bool {
		st = e.status(m, name)
		return st.State == state
	})
	return st
}

func (e *env) events(m *clustertest.Member, name string) []vmm.Event {
	var evs []vmm.Event
	if _, err := e.c.DoRetry(context.Background(), e.c.ClientNS, "GET", m.IP, "/api/v1/vmm/vms/"+name+"/history?node="+m.Name, nil, &evs); err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// lastEvent is the time of the last event of kind in m's history of name.
func (e *env) lastEvent(m *clustertest.Member, name, kind string) time.Time {
	var at time.Time
	for _, ev := range e.events(m, name) {
		if ev.Kind == kind {
			at = ev.Time
		}
	}
	return at
}

func (e *env) history(name string) string {
	var evs []vmm.Event
	e.must("GET", "/api/v1/vmm/vms/"+name+"/history", nil, &evs)
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%s: %s\n", ev.Kind, ev.Detail)
	}
	return b.String()
}

// TestLifecycle: create and start, the manager restarted under a running
// guest, stop, force off, start on the other node (the count goes on from
// the replicated disk), bad definitions and a QEMU that will not start.
func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	c := e.c
	start := time.Now()
	e.counterVM("web", "node-a")
	first := e.waitCount(90 * time.Second)
	t.Logf("guest answered %.1fs after the start request (count %d)", time.Since(start).Seconds(), first)
	st := e.waitState(c.A, "web", "running", 10*time.Second)

	// The VM manager dies and comes back: the guest never notices.
	c.A.KillProcess("tandem-vmm")
	n := e.waitCount(5 * time.Second)
	c.A.StartVMM()
	again := e.waitState(c.A, "web", "running", 30*time.Second)
	if again.PID != st.PID {
		t.Fatalf("QEMU %d replaced by %d across a manager restart", st.PID, again.PID)
	}
	if m := e.waitCount(5 * time.Second); m != n+1 {
		t.Errorf("count %d after %d across a manager restart", m, n)
	}
	if h := e.history("web"); !strings.Contains(h, "adopted") {
		t.Errorf("history has no adoption:\n%s", h)
	}
	e.consoles(t, "web")

	// Stop: the ACPI power button; the guest powers itself off.
	var vm directory.VM
	e.must("POST", "/api/v1/vms/web/stop", nil, &vm)
	e.waitState(c.A, "web", "stopped", 40*time.Second)
	if h := e.history("web"); !strings.Contains(h, "shut down by the guest (ACPI)") {
		t.Errorf("history:\n%s", h)
	}
	if _, err := e.count(time.Second); err == nil {
		t.Fatal("the guest answers after stop")
	}

	// Start on node-b: its copy of the disk becomes primary, the count
	// goes on from what the guest wrote on node-a.
	before := e.waitCountAfterStart(t, "node-b")
	if before <= n+1 {
		t.Errorf("count %d on node-b, was %d on node-a: not from the disk", before, n+1)
	}
	e.waitState(c.B, "web", "running", 10*time.Second)
	var disk directory.Volume
	e.must("GET", "/api/v1/volumes/web-disk", nil, &disk)
	if ids := nodeID(t, c.B); disk.Primary != ids {
		t.Errorf("the disk's primary is %s, not node-b (%s)", disk.Primary, ids)
	}

	// Force off is at once.
	forced := time.Now()
	e.must("POST", "/api/v1/vms/web/stop", map[string]any{"force": true}, nil)
	e.waitState(c.B, "web", "stopped", 15*time.Second)
	t.Logf("forced off in %.1fs", time.Since(forced).Seconds())

	// Bad definitions are refused with a reason.
	for name, body := range map[string]map[string]any{
		"missing volume": {"name": "bad", "cpus": 1, "memory_mib": 64, "disks": []map[string]any{{"volume": "nope"}}},
		"zero memory":    {"name": "bad", "cpus": 1, "memory_mib": 0, "boot": map[string]any{"kernel": "vmlinux"}},
		"name clash":     {"name": "web", "cpus": 1, "memory_mib": 64, "boot": map[string]any{"kernel": "vmlinux"}},
		"bad network":    {"name": "bad", "cpus": 1, "memory_mib": 64, "boot": map[string]any{"kernel": "vmlinux"}, "nics": []map[string]any{{"network": "dmz"}}},
		"unknown field":  {"name": "bad", "cpus": 1, "memory_mib": 64, "boot": map[string]any{"kernel": "vmlinux"}, "gpu": true},
	} {
		code, err := c.Do(context.Background(), c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/vms", body, nil)
		if code/100 != 4 || err == nil {
			t.Errorf("%s: %d %v", name, code, err)
		}
	}
	// A VM whose QEMU cannot start: the reason is in its history and
	// status, and the other VM is not touched.
	e.must("POST", "/api/v1/vms", map[string]any{"name": "broken", "cpus": 1, "memory_mib": 64,
		"boot": map[string]any{"kernel": "no-such-kernel"}, "start": true, "node": "node-a"}, nil)
	var bst vmm.VMStatus
	nstest.WaitFor(t, 30*time.Second, "broken's problem", func() bool {
		bst = e.status(c.A, "broken")
		return bst.Problem != ""
	})
	if !strings.Contains(bst.Problem, "no-such-kernel") {
		t.Errorf("problem %q does not say what failed", bst.Problem)
	}
	if h := e.history("broken"); !strings.Contains(h, "start-failed") {
		t.Errorf("history:\n%s", h)
	}
}

// consoles opens the VM's consoles through the front door on the
// cluster IP: VNC greets with its protocol version; the serial console
// carries what the guest prints after a reset. Without credentials,
// neither opens.
func (e *env) consoles(t *testing.T, name string) {
	t.Helper()
	dialer := websocket.Dialer{NetDialContext: e.c.ClientNS.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		HandshakeTimeout: 10 * time.Second}
	auth := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(e.c.Admin+":"+e.c.Password))}}
	url := "wss://" + clustertest.ClusterIP + "/api/v1/vmm/vms/" + name + "/console/"
	if _, resp, err := dialer.Dial(url+"vnc", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("console without credentials: %v %v", resp, err)
	}
	read := func(ws *websocket.Conn, want string, timeout time.Duration) string {
		var got []byte
		ws.SetReadDeadline(time.Now().Add(timeout))
		for !bytes.Contains(got, []byte(want)) {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				t.Errorf("console: waited for %q, got %q: %v", want, got, err)
				return string(got)
			}
			got = append(got, msg...)
		}
		return string(got)
	}
	vnc, _, err := dialer.Dial(url+"vnc", auth)
	if err != nil {
		t.Fatalf("VNC console: %v", err)
	}
	read(vnc, "RFB 003.008\n", 10*time.Second)
	vnc.Close()
	serial, _, err := dialer.Dial(url+"serial", auth)
	if err != nil {
		t.Fatalf("serial console: %v", err)
	}
	defer serial.Close()
	e.must("POST", "/api/v1/vmm/vms/"+name+"/reset", nil, nil)
	read(serial, "TESTGUEST READY", 90*time.Second)
	e.waitCount(30 * time.Second)
}

// hardware asks the guest what hardware it sees.
type guestHardware struct {
	CPUs      int      `json:"cpus"`
	MemoryMiB int      `json:"memory_mib"`
	Disks     []string `json:"disks"`
	NICs      []string `json:"nics"`
}

func (e *env) hardware() (guestHardware, error) {
	var hw guestHardware
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: e.c.ClientNS.DialContext, DisableKeepAlives: true}}
	resp, err := client.Get("http://" + guestIP + "/hw")
	if err != nil {
		return hw, err
	}
	defer resp.Body.Close()
	return hw, json.NewDecoder(resp.Body).Decode(&hw)
}

func (e *env) waitHardware(what string, timeout time.Duration, ok func(guestHardware) bool) guestHardware {
	e.t.Helper()
	var hw guestHardware
	var err error
	nstest.WaitFor(e.t, timeout, what, func() bool {
		hw, err = e.hardware()
		return err == nil && ok(hw)
	})
	return hw
}

// TestEditHotAddAndReboot: an edit of a running VM hot-adds a CPU, a
// disk and a NIC the guest sees at once; more memory waits for the next
// start, which a reboot (a guest shutdown through ACPI, then a start)
// brings. A VM with hot-added hardware and a pending edit migrates with
// the hardware it runs.
func TestEditHotAddAndReboot(t *testing.T) {
	e := newEnv(t)
	c := e.c
	vm := e.counterVM("web", "node-a")
	e.waitCount(90 * time.Second)
	before := e.waitHardware("the guest's hardware", 10*time.Second, func(hw guestHardware) bool { return true })
	if before.CPUs != 1 || len(before.Disks) != 1 || len(before.NICs) != 1 {
		t.Fatalf("guest sees %+v, want 1 CPU, 1 disk, 1 NIC", before)
	}
	e.must("POST", "/api/v1/volumes", map[string]any{"name": "web-data", "size_bytes": 8 << 20, "node": "node-a"}, nil)
	e.must("GET", "/api/v1/vms/web", nil, &vm)
	edited := map[string]any{
		"cpus": 2, "memory_mib": 256,
		"disks": []map[string]any{{"volume": "web-disk"}, {"volume": "web-data"}},
		"nics":  []map[string]any{{"network": "lan", "mac": vm.NICs[0].MAC}, {"network": "lan"}},
		"boot":  vm.Boot, "expected_generation": vm.Generation,
	}
	e.must("PUT", "/api/v1/vms/web", edited, &vm)
	hot := e.waitHardware("the hot-added CPU, disk and NIC", 60*time.Second, func(hw guestHardware) bool {
		return hw.CPUs == 2 && len(hw.Disks) == 2 && len(hw.NICs) == 2
	})
	if hot.MemoryMiB != before.MemoryMiB {
		t.Errorf("memory %d MiB → %d without a restart", before.MemoryMiB, hot.MemoryMiB)
	}
	st := e.status(c.A, "web")
	if len(st.Pending) != 1 || !strings.Contains(st.Pending[0], "memory 128 → 256 MiB") || st.CPUs != 2 || st.Disks != 2 || st.NICs != 2 {
		t.Errorf("status after the edit: %+v", st)
	}
	n := e.waitCount(5 * time.Second)

	// The VM moves with what it runs: the incoming QEMU has the hot-added
	// hardware and 128 MiB, or the migration would fail.
	e.must("POST", "/api/v1/vms/web/migrate", map[string]any{"node": "node-b"}, nil)
	idB := nodeID(t, c.B)
	nstest.WaitFor(t, 120*time.Second, "web on node-b", func() bool {
		var v directory.VM
		return e.do("GET", "/api/v1/vms/web", nil, &v) == nil && v.Node == idB && v.MigrateTo == ""
	})
	e.waitState(c.B, "web", "running", 30*time.Second)
	if m := e.waitCount(10 * time.Second); m != n+1 {
		t.Errorf("count %d after %d across the migration", m, n)
	}
	if hw, err := e.hardware(); err != nil || hw.CPUs != 2 || len(hw.Disks) != 2 || len(hw.NICs) != 2 || hw.MemoryMiB != before.MemoryMiB {
		t.Errorf("after the migration the guest sees %+v (%v)", hw, err)
	}
	if st := e.status(c.B, "web"); len(st.Pending) != 1 {
		t.Errorf("status on node-b: %+v", st)
	}

	// Reboot: the guest shuts down through ACPI and starts again with
	// 256 MiB; its count goes on.
	rebooted := time.Now()
	e.must("POST", "/api/v1/vmm/vms/web/reboot", nil, nil)
	after := e.waitHardware("the rebooted guest with more memory", 90*time.Second, func(hw guestHardware) bool {
		return hw.MemoryMiB > before.MemoryMiB
	})
	t.Logf("rebooted in %.1fs: the guest sees %+v (was %+v)", time.Since(rebooted).Seconds(), after, before)
	if after.CPUs != 2 || len(after.Disks) != 2 || len(after.NICs) != 2 || after.MemoryMiB < before.MemoryMiB+100 {
		t.Errorf("after the reboot the guest sees %+v", after)
	}
	if m := e.waitCount(5 * time.Second); m <= n+1 {
		t.Errorf("count %d after the reboot, was %d", m, n+1)
	}
	if st := e.status(c.B, "web"); len(st.Pending) != 0 || st.MemoryMiB != 256 {
		t.Errorf("status after the reboot: %+v", st)
	}
	if h := e.history("web"); !strings.Contains(h, "stopped: shut down by the guest (ACPI); starting again") || !strings.Contains(h, "reboot: asked by admin from "+clustertest.Subnet+"50") {
		t.Errorf("history on node-b:\n%s", h)
	}
	hotAdded := ""
	for _, ev := range e.events(c.A, "web") {
		if ev.Kind == "hot-added" {
			hotAdded = ev.Detail
		}
	}
	if !strings.HasPrefix(hotAdded, "1 CPU(s), disk web-data, NIC 1") {
		t.Errorf("node-a's history says it hot-added %q", hotAdded)
	}
	// Reboot of a VM that does not run is refused.
	e.must("POST", "/api/v1/vms/web/stop", map[string]any{"force": true}, nil)
	e.waitState(c.B, "web", "stopped", 15*time.Second)
	if code, err := c.Do(context.Background(), c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/vmm/vms/web/reboot", nil, nil); code != http.StatusConflict {
		t.Errorf("reboot of a stopped VM: %d %v", code, err)
	}
}

// waitCountAfterStart starts web on node and returns its first count.
func (e *env) waitCountAfterStart(t *testing.T, node string) int {
	t.Helper()
	e.must("POST", "/api/v1/vms/web/start", map[string]any{"node": node}, nil)
	return e.waitCount(90 * time.Second)
}

func nodeID(t *testing.T, m *clustertest.Member) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir, "cluster", "member-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// counter polls the guest's counter every 100 ms and records the last
// count seen and when answers stop and resume.
type counter struct {
	mu   sync.Mutex
	last int
	at   time.Time // when the last answer came
	sent time.Time // when its request was sent
	gaps []time.Duration
	stop chan struct{}
	done chan struct{}
}

func (e *env) startCounter() *counter {
	c := &counter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			sent := time.Now()
			n, err := e.count(time.Second)
			if err != nil {
				continue
			}
			c.mu.Lock()
			if !c.at.IsZero() {
				if gap := time.Since(c.at); gap > time.Second {
					c.gaps = append(c.gaps, gap)
				}
			}
			if n <= c.last {
				e.t.Errorf("count went from %d to %d: the guest lost what it wrote", c.last, n)
			}
			c.last, c.at, c.sent = n, time.Now(), sent
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *counter) state() (int, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.at
}

// waitAfter waits until the guest answers a request sent after t (one
// in flight at t proves nothing) and returns when.
func (c *counter) waitAfter(t *testing.T, after time.Time, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	nstest.WaitFor(t, timeout, "the guest answering again", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		at = c.at
		return c.sent.After(after)
	})
	return at
}

func (c *counter) close() {
	close(c.stop)
	<-c.done
}

// TestHA: the node running an HA VM loses power, then (the VM having
// moved) the other node is cut off from the cluster while alive: each
// time the guest answers from the survivor and counts on from its disk,
// and in the isolation the cut-off node stopped its copy before the
// survivor started one.
func TestHA(t *testing.T) {
	e := newEnv(t)
	c := e.c
	e.counterVM("db", "node-a", true)
	e.waitCount(90 * time.Second)
	cnt := e.startCounter()
	defer cnt.close()
	time.Sleep(time.Second)

	// 1. Power loss of node-a.
	before, _ := cnt.state()
	cut := time.Now()
	c.A.PowerOff()
	back := cnt.waitAfter(t, cut, 90*time.Second)
	after, _ := cnt.state()
	started := e.lastEvent(c.B, "db", "started")
	t.Logf("node-a powered off: the guest answered from node-b after %.1fs (QEMU started at +%.1fs); count %d → %d",
		back.Sub(cut).Seconds(), started.Sub(cut).Seconds(), before, after)
	if st := e.status(c.B, "db"); st.State != "running" {
		t.Fatalf("db on node-b: %+v", st)
	}

	// node-a returns; the VM stays where it is, and node-a's copy of its
	// disk catches up (an outdated copy is never started from).
	c.A.PowerOn()
	c.WaitHealthy(60 * time.Second)
	aID := nodeID(t, c.A)
	nstest.WaitFor(t, 60*time.Second, "node-a's copy up to date", func() bool {
		var v directory.Volume
		return e.do("GET", "/api/v1/volumes/db-disk", nil, &v) == nil && v.Copies[aID] == directory.CopyUpToDate
	})

	// 2. The node running the VM is cut off from the cluster but stays
	// up, three times over (node-b, node-a, node-b). Each time it stops
	// its QEMU before the survivor starts one, and its copy of the disk,
	// which the guest writes ten times a second and nothing else writes
	// while the node is cut off, was last written before that start: the
	// two never ran at once.
	var disk directory.Volume
	e.must("GET", "/api/v1/volumes/db-disk", nil, &disk)
	for run, holder := range []*clustertest.Member{c.B, c.A, c.B} {
		other := c.A
		if holder == c.A {
			other = c.B
		}
		before, _ = cnt.state()
		cut = time.Now()
		c.Isolate(holder)
		back = cnt.waitAfter(t, cut, 90*time.Second)
		after, _ = cnt.state()
		st, err := os.Stat(filepath.Join(holder.Dir, "volumes", disk.ID+".data"))
		if err != nil {
			t.Fatal(err)
		}
		lastWrite := st.ModTime()
		c.Heal()
		fenced := e.lastEvent(holder, "db", "fenced")
		started = e.lastEvent(other, "db", "started")
		t.Logf("run %d: %s isolated: fenced its QEMU at +%.1fs, its copy last written at +%.1fs; %s started one at +%.1fs, answered at +%.1fs; count %d → %d",
			run+1, holder.Name, fenced.Sub(cut).Seconds(), lastWrite.Sub(cut).Seconds(), other.Name, started.Sub(cut).Seconds(), back.Sub(cut).Seconds(), before, after)
		if fenced.Before(cut) || started.Before(cut) || !fenced.Before(started) {
			t.Fatalf("the isolated node stopped its QEMU at %v, the survivor started one at %v: they may have run at once", fenced, started)
		}
		if !lastWrite.Before(started) {
			t.Fatalf("%s's copy was written at %v, after %s started the VM at %v: both ran at once", holder.Name, lastWrite, other.Name, started)
		}
		id := nodeID(t, holder)
		nstest.WaitFor(t, 60*time.Second, holder.Name+"'s copy up to date", func() bool {
			var v directory.Volume
			return e.do("GET", "/api/v1/volumes/db-disk", nil, &v) == nil && v.Copies[id] == directory.CopyUpToDate
		})
	}

	// 3. node-a's VM manager hangs and node-a is cut off: nothing stops
	// its QEMU, so its fence lease lapses within the bound and the
	// supervisor withholds the watchdog (read here as the supervisor
	// reads it), which resets the node. Once the manager goes on it
	// fences the VM itself and the lease holds nothing.
	nstest.WaitFor(t, 60*time.Second, "node-b's copy up to date", func() bool {
		var v directory.Volume
		return e.do("GET", "/api/v1/volumes/db-disk", nil, &v) == nil && v.Copies[nodeID(t, c.B)] == directory.CopyUpToDate
	})
	lease := filepath.Join(c.A.Dir, "fence-lease")
	l, ok, err := watchdog.ReadLease(lease)
	if err != nil || !ok || l.VMs != 1 {
		t.Fatalf("node-a's lease while it runs db: %+v %v %v", l, ok, err)
	}
	bound := l.Deadline - l.QuorumAt
	c.A.Signal("tandem-vmm", syscall.SIGSTOP)
	cut = time.Now()
	c.Isolate(c.A)
	var lapsed time.Duration
	nstest.WaitFor(t, 30*time.Second, "node-a's fence lease to lapse", func() bool {
		lapsed = time.Since(cut)
		return watchdog.LeaseProblem(lease, watchdog.Monotonic()) != nil
	})
	c.A.Signal("tandem-vmm", syscall.SIGCONT)
	t.Logf("node-a's VM manager hung and node-a cut off: its lease lapsed after %.1fs (bound %.1fs after the last contact): the watchdog would reset it",
		lapsed.Seconds(), bound.Seconds())
	if lapsed > bound+time.Second {
		t.Errorf("the lease lapsed %.1fs after the cut, past its bound of %.1fs", lapsed.Seconds(), bound.Seconds())
	}
	nstest.WaitFor(t, 30*time.Second, "node-a's manager to fence its VM and release the lease", func() bool {
		l, _, err := watchdog.ReadLease(lease)
		return err == nil && l.VMs == 0 && watchdog.LeaseProblem(lease, watchdog.Monotonic()) == nil
	})
	c.Heal()
}

// TestBoardFence: with a board fence (the BMC powering the other node
// off), an isolated node's HA VM restarts on the survivor as soon as the
// fence confirms the power-off, before the node's fence bound. The BMC
// here is a script the test answers: it asks for node-a's power-off,
// and exits 0 once the test has cut node-a's power.
func TestBoardFence(t *testing.T) {
	bmc := t.TempDir()
	script := filepath.Join(bmc, "fence")
	os.WriteFile(script, []byte(`#!/bin/sh
echo "$2" > "`+bmc+`/asked-$1"
while [ ! -e "`+bmc+`/off-$1" ]; do sleep 0.05; done
echo "$1 is off"
`), 0o755)
	e := newEnv(t, script, "{node}", "{bmc}")
	c := e.c
	e.must("PATCH", "/api/v1/cluster/settings", map[string]any{"set": map[string]string{"fence.bmc.node-a": "192.0.2.11"}}, nil)
	e.counterVM("db", "node-a", true)
	e.waitCount(90 * time.Second)
	cnt := e.startCounter()
	defer cnt.close()
	time.Sleep(time.Second)

	cut := time.Now()
	c.Isolate(c.A)
	var asked time.Duration
	nstest.WaitFor(t, 30*time.Second, "the fence to ask for node-a's power-off", func() bool {
		b, err := os.ReadFile(filepath.Join(bmc, "asked-node-a"))
		asked = time.Since(cut)
		if err == nil && strings.TrimSpace(string(b)) != "192.0.2.11" {
			t.Errorf("the fence was given BMC %q, not the setting's 192.0.2.11", b)
		}
		return err == nil
	})
	c.A.PowerOff()
	os.WriteFile(filepath.Join(bmc, "off-node-a"), nil, 0o644)
	back := cnt.waitAfter(t, cut, 90*time.Second)
	started := e.lastEvent(c.B, "db", "started")
	t.Logf("node-a cut off: the fence asked for its power-off at +%.1fs, node-b started db at +%.1fs, it answered at +%.1fs",
		asked.Seconds(), started.Sub(cut).Seconds(), back.Sub(cut).Seconds())
	var audit []directory.AuditEntry
	e.must("GET", "/api/v1/audit", nil, &audit)
	var fence, restart string
	for _, a := range audit {
		switch {
		case a.Action == "ha.fence" && a.Target == "node-a":
			fence = a.Result + ": " + a.Detail
		case a.Action == "ha.restart" && a.Target == "db":
			restart = a.Detail
		}
	}
	if !strings.HasPrefix(fence, "ok: node-a confirmed off by the board's fence") || !strings.Contains(restart, "confirmed off by the board's fence") {
		t.Errorf("audit: fence %q, restart %q", fence, restart)
	}
}

// TestLiveMigration: the guest moves to the other node and back while a
// client keeps asking its counter: no request fails, the count never
// goes back.
func TestLiveMigration(t *testing.T) {
	e := newEnv(t)
	c := e.c
	e.counterVM("app", "node-a")
	e.waitCount(90 * time.Second)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.ClientNS.DialContext}}
	var mu sync.Mutex
	var failures []string
	var maxGap time.Duration
	last := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			resp, err := client.Get("http://" + guestIP + "/")
			var n int
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				n, err = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(b), "count ")))
			}
			mu.Lock()
			if err != nil {
				failures = append(failures, err.Error())
			} else if n <= last {
				failures = append(failures, fmt.Sprintf("count %d after %d", n, last))
			} else {
				last = n
			}
			maxGap = max(maxGap, time.Since(start))
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for _, to := range []*clustertest.Member{c.B, c.A} {
		begin := time.Now()
		e.must("POST", "/api/v1/vms/app/migrate", map[string]any{"node": to.Name}, nil)
		id := nodeID(t, to)
		nstest.WaitFor(t, 120*time.Second, "app on "+to.Name, func() bool {
			var vm directory.VM
			return e.do("GET", "/api/v1/vms/app", nil, &vm) == nil && vm.Node == id && vm.MigrateTo == ""
		})
		e.waitState(to, "app", "running", 30*time.Second)
		var detail string
		for _, ev := range e.events(to, "app") {
			if ev.Kind == "migrated-in" {
				detail = ev.Detail
			}
		}
		t.Logf("migrated to %s in %.1fs (%s)", to.Name, time.Since(begin).Seconds(), detail)
		time.Sleep(time.Second)
	}
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d answers, slowest %v", last, maxGap)
	if len(failures) > 0 {
		t.Fatalf("%d requests failed during the migrations: %v", len(failures), failures[:min(len(failures), 5)])
	}
}

// TestMaintenanceAndAdmission: a node entering maintenance sends its VMs
// to the other node, live, and gets no new ones; leaving it with return
// brings them back. HA admission refuses a VM the survivor of a failure
// could not take.
func TestMaintenanceAndAdmission(t *testing.T) {
	e := newEnv(t)
	c := e.c
	ips := []string{clustertest.Subnet + "201", clustertest.Subnet + "202"}
	for i, ip := range ips {
		e.counterVMAt(fmt.Sprintf("m%d", i), "node-a", ip, false)
	}
	for _, ip := range ips {
		nstest.WaitFor(t, 90*time.Second, "guest "+ip, func() bool { _, err := e.countAt(ip, time.Second); return err == nil })
	}
	aID, bID := nodeID(t, c.A), nodeID(t, c.B)
	e.must("POST", "/api/v1/cluster/members/node-a/maintenance", map[string]any{"on": true}, nil)
	nstest.WaitFor(t, 120*time.Second, "every VM off node-a", func() bool {
		var vms []directory.VM
		if e.do("GET", "/api/v1/vms", nil, &vms) != nil {
			return false
		}
		for _, vm := range vms {
			if vm.Node != bID || vm.MigrateTo != "" || vm.Home != aID {
				return false
			}
		}
		return true
	})
	for _, ip := range ips {
		if _, err := e.countAt(ip, 5*time.Second); err != nil {
			t.Fatalf("guest %s after the drain: %v", ip, err)
		}
	}
	// Nothing new lands on a node in maintenance.
	code, err := c.Do(context.Background(), c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/vms", map[string]any{
		"name": "new", "cpus": 1, "memory_mib": 64, "boot": map[string]any{"kernel": "vmlinux"}, "node": "node-a"}, nil)
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(err), "maintenance") {
		t.Errorf("a VM placed on a node in maintenance: %d %v", code, err)
	}
	// Leaving it with return brings them home.
	e.must("POST", "/api/v1/cluster/members/node-a/maintenance", map[string]any{"on": false, "return": true}, nil)
	nstest.WaitFor(t, 120*time.Second, "every VM back on node-a", func() bool {
		var vms []directory.VM
		if e.do("GET", "/api/v1/vms", nil, &vms) != nil {
			return false
		}
		for _, vm := range vms {
			if vm.Node != aID || vm.MigrateTo != "" || vm.Home != "" {
				return false
			}
		}
		return true
	})
	for _, ip := range ips {
		if _, err := e.countAt(ip, 5*time.Second); err != nil {
			t.Fatalf("guest %s back home: %v", ip, err)
		}
	}
	// HA admission: it fits on node-b (1 GiB of each node is kept for the
	// node), but if node-b failed node-a, which runs the two guests, could
	// not take it.
	e.must("POST", "/api/v1/volumes", map[string]any{"name": "huge-disk", "size_bytes": 1 << 20}, nil)
	code, err = c.Do(context.Background(), c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/vms", map[string]any{
		"name": "huge", "cpus": 1, "memory_mib": hostMemoryMiB(t) - 1200, "ha": true, "start": true,
		"disks": []map[string]any{{"volume": "huge-disk"}}}, nil)
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(err), "HA admission") {
		t.Errorf("an HA VM no survivor could take: %d %v", code, err)
	}
}

// hostMemoryMiB is this machine's memory: the namespaces' nodes share it.
func hostMemoryMiB(t *testing.T) int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	var kib int
	fmt.Sscanf(strings.TrimPrefix(strings.Split(string(b), "\n")[0], "MemTotal:"), "%d", &kib)
	return kib / 1024
}
