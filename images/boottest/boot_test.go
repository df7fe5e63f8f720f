// Package boottest boots the built firmware image in QEMU and checks it the
// way an operator would: through the console and the health endpoint.
// It needs images/out: `make test` builds it and sets TANDEM_E2E=1.
package boottest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/qemubox"
	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

const imageDir = "../out"

// nestedGuestBoot bounds the test guest's boot inside a node.
const nestedGuestBoot = 10 * time.Minute

// requireImage skips the boot tests in the fast loop (make check) and fails
// them when the image is missing under make test, which sets TANDEM_E2E=1.
func requireImage(t *testing.T) {
	t.Helper()
	if os.Getenv("TANDEM_E2E") != "1" {
		t.Skip("boot tests run under make test (TANDEM_E2E=1)")
	}
	if _, err := os.Stat(filepath.Join(imageDir, "disk.img")); err != nil {
		t.Fatalf("no built image in %s (make image): %v", imageDir, err)
	}
}

// boot starts one node and stops it when the test ends; the console log is
// copied into the test output on failure.
func boot(t *testing.T, nc qemubox.NodeConfig) *qemubox.Node {
	t.Helper()
	requireImage(t)
	b, err := board.LoadNamed("../..", "qemu-2node")
	if err != nil {
		t.Fatal(err)
	}
	nc.FreshDisk = true
	box, err := qemubox.Start(context.Background(), qemubox.Config{
		ImageDir: imageDir, Board: b, WorkDir: t.TempDir(), Nodes: []qemubox.NodeConfig{nc},
	})
	if err != nil {
		t.Fatal(err)
	}
	n := box.Nodes[0]
	t.Cleanup(func() {
		box.Stop()
		keepConsole(t, n)
	})
	return n
}

func service(h frontdoor.Health, name string) (frontdoor.ServiceHealth, bool) {
	for _, s := range h.Services {
		if s.Name == name {
			return s, true
		}
	}
	return frontdoor.ServiceHealth{}, false
}

// nodeStatus reads supervisorctl's JSON status through the serial console.
func nodeStatus(t *testing.T, c *qemubox.Console) statusapi.Node {
	t.Helper()
	out, err := c.Run("supervisorctl -json status", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var n statusapi.Node
	if err := json.Unmarshal(qemubox.JSONLine(out), &n); err != nil {
		t.Fatalf("supervisorctl output %q: %v", out, err)
	}
	return n
}

func TestFirmware(t *testing.T) {
	ctx := context.Background()
	started := time.Now()
	n := boot(t, qemubox.NodeConfig{
		Name: "node-a",
		// A typo and a bad value must be reported, never stop the boot.
		Append: []string{"tandem.colour=blue", "tandem.frontdoor.port=99999"},
	})
	h, err := n.WaitHealthy(ctx, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to all services running (QEMU start to health answering, %s): %.1fs", n.Accel.Name(), time.Since(started).Seconds())
	if h.Node != "node-a" || h.Board != "qemu-2node" || h.Version == "" || !h.Healthy {
		t.Errorf("health %+v", h)
	}
	for _, want := range []string{`unknown setting "colour"`, `setting "frontdoor.port": "99999"`} {
		if !strings.Contains(strings.Join(h.Problems, "\n"), want) {
			t.Errorf("problems %q do not report %q", h.Problems, want)
		}
	}
	// Every service of the table reached running, as the console says too.
	for _, s := range h.Services {
		re := regexp.MustCompile(`msg="service running" service=` + regexp.QuoteMeta(s.Name) + ` `)
		if _, _, err := n.WaitConsole(re, 0, 10*time.Second); err != nil {
			t.Error(err)
		}
	}
	if _, _, err := n.WaitConsole(regexp.MustCompile(`msg="data partition mounted" device=/dev/vda5 formatted=true grown=true`), 0, time.Second); err != nil {
		t.Errorf("first boot did not grow and format the data partition: %v", err)
	}

	c := n.Console()
	// The shell may still be starting: wait until it answers.
	if _, err := c.Run("true", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := nodeStatus(t, c)
	if !st.DataMounted || st.Watchdog != "armed" {
		t.Errorf("status: data mounted %v, watchdog %q", st.DataMounted, st.Watchdog)
	}
	// What the supervisor set up, seen from the shell.
	for cmd, want := range map[string]string{
		"hostname":                              "node-a",
		"grep cgroup /proc/mounts":              "/sys/fs/cgroup cgroup2",
		"ls /data/log":                          "frontdoor.log",
		"ip addr show dev br-mgmt":              qemubox.NodeIP(0) + "/24",
		"ip link show dev mgmt0":                "master br-mgmt",
		"cat /sys/fs/cgroup/cgroup.controllers": "memory",
		// Tandem's own QEMU build (scripts/qemu/build), not Debian's.
		"qemu-system-x86_64 -version": "(tandem 7.2",
	} {
		out, err := c.Run(cmd, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, want) {
			t.Errorf("%s: %q does not contain %q", cmd, out, want)
		}
	}

	t.Run("KilledServiceComesBack", func(t *testing.T) {
		h, _ := n.Health(ctx)
		before, _ := service(h, "frontdoor")
		offset := len(n.ConsoleOutput())
		sent := time.Now()
		if _, err := c.Run(fmt.Sprintf("kill -9 %d", before.PID), 20*time.Second); err != nil {
			t.Fatal(err)
		}
		h, err := n.WaitHealth(ctx, 30*time.Second, func(h frontdoor.Health) bool {
			s, _ := service(h, "frontdoor")
			return s.State == "running" && s.PID != before.PID
		})
		if err != nil {
			t.Fatal(err)
		}
		after, _ := service(h, "frontdoor")
		if after.Restarts != before.Restarts+1 {
			t.Errorf("restarts %d, want %d", after.Restarts, before.Restarts+1)
		}
		// The supervisor's own timestamps: exit noticed to running again.
		ended, _, err1 := n.WaitConsole(regexp.MustCompile(`time=\S+ level=WARN msg="service ended" service=frontdoor`), offset, 5*time.Second)
		running, _, err2 := n.WaitConsole(regexp.MustCompile(`time=\S+ level=INFO msg="service running" service=frontdoor`), offset, 5*time.Second)
		if err1 != nil || err2 != nil {
			t.Fatalf("console lines: %v %v", err1, err2)
		}
		latency := parseTime(t, ended, running)
		t.Logf("restart latency of a killed service: %v in the guest (exit seen to running), %v from the host (kill typed to health showing the new pid)",
			latency, time.Since(sent).Round(time.Millisecond))
		if latency > 2*time.Second {
			t.Errorf("service took %v to come back, want at most 2s", latency)
		}
	})

	t.Run("CrashLoopBacksOff", func(t *testing.T) {
		h, _ := n.Health(ctx)
		before, _ := service(h, "frontdoor")
		// Take the service's binary away and kill it: every restart fails.
		if _, err := c.Run(fmt.Sprintf("mv /usr/bin/tandem-frontdoor /usr/bin/tandem-frontdoor.away && kill -9 %d", before.PID), 20*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second)
		st := nodeStatus(t, c)
		var fd statusapi.Service
		for _, s := range st.Services {
			if s.Name == "frontdoor" {
				fd = s
			}
		}
		restarts := fd.Restarts - before.Restarts
		t.Logf("in 20 s of crash loop: %d restarts, state %s, last error %q", restarts, fd.State, fd.LastError)
		// Delays of 0.1, 0.2, 0.4 … 6.4 s: about 7 starts in 20 s, where a
		// loop without backoff would make thousands.
		if restarts < 4 || restarts > 10 {
			t.Errorf("%d restarts in 20 s, want about 7", restarts)
		}
		if fd.State != statusapi.StateBackoff || fd.NextStart == nil || !strings.Contains(fd.LastError, "no such file") {
			t.Errorf("frontdoor status %+v", fd)
		}
		// The other services are untouched.
		for _, s := range st.Services {
			if s.Name != "frontdoor" && s.State != statusapi.StateRunning {
				t.Errorf("%s is %s", s.Name, s.State)
			}
		}
		if _, err := c.Run("mv /usr/bin/tandem-frontdoor.away /usr/bin/tandem-frontdoor", 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := n.WaitHealthy(ctx, 45*time.Second); err != nil {
			t.Fatalf("did not recover once the binary was back: %v", err)
		}
	})

	t.Run("RebootKeepsData", func(t *testing.T) {
		certBefore := certFingerprint(t, n)
		offset := len(n.ConsoleOutput())
		if err := c.Send("supervisorctl reboot"); err != nil {
			t.Fatal(err)
		}
		// Services stop in reverse order, then the data partition is
		// unmounted and the node restarts.
		for _, re := range []string{`msg="stopping services" for=reboot`, `msg=bye action=reboot`, `Linux version`, `msg="tandem-init starting"`} {
			_, next, err := n.WaitConsole(regexp.MustCompile(re), offset, 2*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			offset = next
		}
		if _, _, err := n.WaitConsole(regexp.MustCompile(`msg="data partition mounted" device=/dev/vda5 formatted=false`), offset, time.Minute); err != nil {
			t.Errorf("second boot: %v", err)
		}
		if _, err := n.WaitHealthy(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if certFingerprint(t, n) != certBefore {
			t.Error("the front door's certificate changed across a reboot: /data was not kept")
		}
	})

	t.Run("PowerOff", func(t *testing.T) {
		if _, err := c.Run("true", time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := c.Send("supervisorctl poweroff"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-n.Exited():
		case <-time.After(time.Minute):
			t.Fatal("QEMU still running a minute after poweroff")
		}
		if _, _, err := n.WaitConsole(regexp.MustCompile(`msg=bye action=poweroff`), 0, time.Second); err != nil {
			t.Error(err)
		}
	})
}

func TestWatchdogResetsAHungNode(t *testing.T) {
	ctx := context.Background()
	n := boot(t, qemubox.NodeConfig{Name: "node-w"})
	if _, err := n.WaitHealthy(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	c := n.Console()
	if _, err := c.Run("true", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	offset := len(n.ConsoleOutput())
	stopped := time.Now()
	// tandem-init runs as /bin/uinit: stop it, and with it the pets.
	if _, err := c.Run("kill -SIGSTOP $(pidof uinit)", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.WaitConsole(regexp.MustCompile(`Linux version`), offset, 60*time.Second); err != nil {
		t.Fatalf("no reset after the supervisor stopped: %v", err)
	}
	elapsed := time.Since(stopped)
	t.Logf("watchdog reset %v after the supervisor was stopped (timeout 15s)", elapsed.Round(100*time.Millisecond))
	if elapsed < 5*time.Second {
		t.Errorf("reset after only %v: not the watchdog's timeout", elapsed)
	}
	if _, err := n.WaitHealthy(ctx, 3*time.Minute); err != nil {
		t.Fatalf("node did not come back after the reset: %v", err)
	}
}

func TestUEFIDiskBoot(t *testing.T) {
	ctx := context.Background()
	started := time.Now()
	n := boot(t, qemubox.NodeConfig{Name: "node-u", Boot: qemubox.UEFI})
	h, err := n.WaitHealthy(ctx, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("UEFI boot from the disk image to all services running: %.1fs", time.Since(started).Seconds())
	// No tandem.hostname on GRUB's command line: the name comes from the MAC.
	if h.Node != "tandem-7a0101" {
		t.Errorf("node name %q, want tandem-7a0101", h.Node)
	}
	c := n.Console()
	if _, err := c.Run("true", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := nodeStatus(t, c); st.Slot != "a" {
		t.Errorf("booted from slot %q, want a", st.Slot)
	}
}

func certFingerprint(t *testing.T, n *qemubox.Node) [32]byte {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(n.URL(), "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
}

// parseTime returns the time between the timestamps of two console log
// lines.
func parseTime(t *testing.T, first, second string) time.Duration {
	t.Helper()
	ts := func(line string) time.Time {
		m := regexp.MustCompile(`time=(\S+)`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("no timestamp in %q", line)
		}
		v, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return ts(second).Sub(ts(first))
}

// TestClusterOfTwoNodesAndAWitness boots both nodes of the box, forms the
// cluster as an installer would (bootstrap on node-a, node-b joins over
// the interconnect, the witness runs on the site host), and then cuts the
// leader's power: the other node takes over the cluster IP.
func TestClusterOfTwoNodesAndAWitness(t *testing.T) {
	requireImage(t)
	ctx := context.Background()
	b, err := board.LoadNamed("../..", "qemu-2node")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	box, err := qemubox.Start(ctx, qemubox.Config{
		ImageDir: imageDir, Board: b, WorkDir: work,
		Nodes: []qemubox.NodeConfig{{Name: "node-a", FreshDisk: true}, {Name: "node-b", FreshDisk: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		box.Stop()
		for _, n := range box.Nodes {
			keepConsole(t, n)
		}
	})
	// Runs before the box stops: a failure shows what the services said.
	t.Cleanup(func() {
		for _, n := range box.Nodes {
			showServiceLogs(t, n, "cluster", "storage", "vmm")
		}
	})
	for _, n := range box.Nodes {
		if _, err := n.WaitHealthy(ctx, 4*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := box.FormCluster(ctx, "admin", "correct-horse-battery")
	if err != nil {
		t.Fatal(err)
	}
	witness := filepath.Join(work, "tandem-witness")
	if out, err := exec.Command("go", "build", "-o", witness, "../witness").CombinedOutput(); err != nil {
		t.Fatalf("build the witness: %v\n%s", err, out)
	}
	w, err := box.StartWitness(witness, filepath.Join(work, "witness"), creds.JoinToken, "-heartbeat", "1s", "-lease", "500ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Stop()
		if t.Failed() {
			out, _ := os.ReadFile(w.Log)
			t.Logf("witness log:\n%s", tailLines(string(out), 40))
		}
	})
	formed := time.Now()
	h, err := box.WaitClusterHealthy(ctx, creds, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster of %d members healthy %.1fs after the witness started", len(h.Members), time.Since(formed).Seconds())
	roles := map[string]int{}
	for _, m := range h.Members {
		if m.Suffrage == "Voter" {
			roles[m.Role]++
		}
	}
	if roles["node"] != 2 || roles["witness"] != 1 {
		t.Fatalf("voters by role %v, want 2 nodes and 1 witness: %+v", roles, h.Members)
	}

	consoleOnTheImage(t, ctx, box, creds)
	vmFromReplicatedVolume(t, ctx, box, creds)

	// The leader's node loses power: the other node leads and answers on
	// the cluster IP.
	var st cluster.Status
	if _, err := box.ClusterAPI(creds).Do(ctx, "GET", "/api/v1/cluster/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	var leader, survivor *qemubox.Node
	for _, n := range box.Nodes {
		if n.Name == st.Member.Name {
			leader = n
		} else {
			survivor = n
		}
	}
	if leader == nil {
		t.Fatalf("the cluster IP is answered by %q, not a node", st.Member.Name)
	}
	// The test guest runs as an HA VM on the leader's node.
	guestStart := time.Now()
	if _, err := box.CreateTestGuest(ctx, creds, "testguest", leader.Name); err != nil {
		t.Fatal(err)
	}
	// QEMU inside a TCG node runs the guest some sixty times slower than
	// QEMU on the host: its 3 s boot takes 2 to 4 minutes, more on a slow
	// CI host. The bound only has to catch a guest that never comes up.
	count, err := box.WaitGuest(ctx, nestedGuestBoot)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test guest answered on %s %.1fs after it was defined (QEMU in QEMU, %s)", leader.Name, time.Since(guestStart).Seconds(), box.Accel.Name())
	cut := time.Now()
	leader.Kill()
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := box.ClusterAPI(creds).Do(cctx, "GET", "/api/v1/cluster/status", nil, &st)
		cancel()
		if err == nil && st.State == "Leader" && st.Member.Name == survivor.Name {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not take over the cluster IP within a minute of %s's power cut (last: %+v, %v)", survivor.Name, leader.Name, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s powered off; %s answers on the cluster IP after %.1fs (%s)", leader.Name, survivor.Name, time.Since(cut).Seconds(), box.Accel.Name())
	// The HA VM comes back on the survivor and counts on from its disk.
	after, err := box.WaitGuest(ctx, nestedGuestBoot+time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if after <= count {
		t.Errorf("the test guest counts %d after %d: its disk did not follow it", after, count)
	}
	t.Logf("test guest answered from %s %.1fs after %s lost power (count %d → %d)", survivor.Name, time.Since(cut).Seconds(), leader.Name, count, after)
}

// showServiceLogs logs the end of a live node's service logs when the
// test failed, read on its console.
func showServiceLogs(t *testing.T, n *qemubox.Node, services ...string) {
	if !t.Failed() {
		return
	}
	select {
	case <-n.Exited():
		return
	default:
	}
	show := func(what, cmd string) {
		out, err := n.Console().Run(cmd, 20*time.Second)
		if err != nil {
			t.Logf("%s's %s: %v", n.Name, what, err)
			return
		}
		t.Logf("%s's %s:\n%s", n.Name, what, out)
	}
	for _, s := range services {
		show(s+" log (end)", "tail -n 40 /data/log/"+s+".log")
	}
	show("VMs' serial consoles (end)", "tail -n 30 /run/tandem/vms/*/serial.log")
	show("links", "ip link")
}

// keepConsole saves a node's console as a test artifact and shows its end
// when the test failed.
func keepConsole(t *testing.T, n *qemubox.Node) {
	out := n.ConsoleOutput()
	artifact := filepath.Join(imageDir, "artifacts", strings.ReplaceAll(t.Name(), "/", "_")+"."+n.Name+".console.log")
	if err := os.MkdirAll(filepath.Dir(artifact), 0o755); err == nil {
		_ = os.WriteFile(artifact, []byte(out), 0o644)
	}
	if t.Failed() {
		t.Logf("console of %s (end; all of it in %s):\n%s", n.Name, artifact, tailLines(out, 60))
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// consoleOnTheImage checks what the image's front door serves besides the
// API: the web console's files, the API's document, each node's health
// and its services' logs from its supervisor (which the namespace tests
// do not run), and the node's metrics.
func consoleOnTheImage(t *testing.T, ctx context.Context, box *qemubox.Box, creds qemubox.Credentials) {
	t.Helper()
	api := box.ClusterAPI(creds)
	for path, want := range map[string]string{"/": `src="app.js"`, "/api/v1/openapi.json": `"openapi": "3.1.0"`} {
		code, body, err := api.Raw(ctx, "GET", path, nil)
		if err != nil || code != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d %v, want %s in %.200s", path, code, err, want, body)
		}
	}
	var members []directory.Member
	if _, err := api.Do(ctx, "GET", "/api/v1/cluster/members", nil, &members); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.Role != directory.MemberNode {
			continue
		}
		var h frontdoor.Health
		if _, err := api.Do(ctx, "GET", "/api/v1/cluster/members/"+m.ID+"/health", nil, &h); err != nil || h.Node != m.Name || len(h.Services) == 0 {
			t.Errorf("%s's health through the cluster IP: %v %+v", m.Name, err, h)
		}
		var lines []cluster.LogLine
		if _, err := api.Do(ctx, "GET", "/api/v1/cluster/members/"+m.ID+"/logs/cluster?lines=5", nil, &lines); err != nil || len(lines) == 0 {
			t.Errorf("%s's cluster agent log through the cluster IP: %v %+v", m.Name, err, lines)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := api.Raw(ctx, "GET", "/metrics", nil)
		if err == nil && code == 200 && strings.Contains(string(body), "tandem_node_cpu_percent{") && strings.Contains(string(body), `tandem_scrape_part_up{part="storage"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("/metrics: %d %v %.500s", code, err, body)
			break
		}
		time.Sleep(time.Second)
	}
}
