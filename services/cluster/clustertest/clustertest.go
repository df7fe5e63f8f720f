// Package clustertest runs a real Tandem cluster on one machine for tests
// and benchmarks: node A, node B and the witness W in network namespaces,
// each running the real tandem binary (front door and cluster agent, or
// the witness), joined by a management switch (with a client host on it)
// and, between the nodes, an interconnect link. Members can be killed,
// powered off (processes killed and links down) and cut apart.
//
//	10.77.0.0/24 on the switch: A .11, B .12, W .13, client .50, cluster IP .100
//	ic0: A <-> B, IPv6 link-local only
package clustertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/nstest"
	"github.com/tandemhci/tandem/services/nstest/netns"
)

// Addresses of the test network.
const (
	Subnet    = "10.77.0."
	ClusterIP = Subnet + "100"
	ClientIP  = Subnet + "50"
)

// Options shape the cluster.
type Options struct {
	Heartbeat time.Duration // raft heartbeat timeout; 0: the default
	Lease     time.Duration
	Firewall  bool   // allow only TCP 443 (and the ICMPv6 IPv6 needs) into every host
	Storage   bool   // run the storage service on the nodes
	VMs       bool   // run the VM manager on the nodes (needs Storage)
	BootDir   string // where the VM manager finds guest kernels
	// APITimeout bounds each API call (default 5 s). Tests that run
	// guests want more: a forwarded request on a loaded machine can take
	// seconds.
	APITimeout time.Duration
	// QEMU is the VM managers' system emulator (-qemu), if not the
	// default.
	QEMU string
	// FenceCommand is the nodes' board fence (-fence-command), if any.
	FenceCommand []string
}

// Cluster is the test cluster.
type Cluster struct {
	tb       testing.TB
	opts     Options
	bin      string
	Switch   *nstest.NS
	ClientNS *nstest.NS
	A, B, W  *Member
	Admin    string
	Password string
	Token    string

	mu      sync.Mutex
	clients map[string]*http.Client
}

// Member is one host of the cluster.
type Member struct {
	Name string
	Role string // node or witness
	NS   *nstest.NS
	Dir  string
	IP   string
	LAN  string // the device with the member's address (and the cluster IP)
	c    *Cluster

	mu    sync.Mutex
	procs map[string]*exec.Cmd // by command name
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// BuildDir is the folder of what the tests of the checkout at root
// build (the tandem binary, the test guest): one per checkout and user,
// so that runs do not pile up copies.
func BuildDir(root string) (string, error) {
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tandem-test-%d-%x", os.Getuid(), sum[:6]))
	return dir, os.MkdirAll(dir, 0o700)
}

// Binary builds the tandem multi-call binary once per process, into
// one place per checkout (a temporary folder per process would leave a
// binary behind on every run): built beside it and renamed over it, so
// a test process still running the previous one keeps its file.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := BuildDir(root)
		if err != nil {
			buildErr = err
			return
		}
		tmp := filepath.Join(dir, fmt.Sprintf("tandem.%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", tmp, "./initramfs/cmd/tandem")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			buildErr = fmt.Errorf("build tandem: %v\n%s", err, out)
			return
		}
		buildBin = filepath.Join(dir, "tandem")
		buildErr = os.Rename(tmp, buildBin)
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return buildBin
}

// New builds the network. Nothing runs until Form (or Start).
func New(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	nstest.Require(tb)
	c := &Cluster{tb: tb, opts: opts, bin: Binary(tb), Admin: "admin", Password: "correct-horse-battery", clients: map[string]*http.Client{}}
	c.Switch = nstest.New(tb, "sw")
	c.Switch.Run("ip", "link", "add", "br0", "type", "bridge")
	c.Switch.Run("ip", "link", "set", "br0", "up")
	attach := func(ns *nstest.NS, port, ip, lan string) {
		nstest.Veth(tb, ns, "mgmt0", c.Switch, port)
		c.Switch.Run("ip", "link", "set", port, "master", "br0")
		if lan != "mgmt0" {
			// A node's LAN is a bridge with its uplink as a port, as on the
			// image: VMs' taps join it and share the segment.
			// With the port's MAC set, as the image does: a bridge left to
			// pick the lowest of its ports' MACs changes address when a
			// VM's tap comes or goes, and clients' ARP caches go stale.
			mac := strings.TrimSpace(ns.Run("cat", "/sys/class/net/mgmt0/address"))
			ns.Run("ip", "link", "add", lan, "address", mac, "type", "bridge")
			ns.Run("ip", "link", "set", "mgmt0", "master", lan)
			ns.Run("ip", "link", "set", lan, "up")
		}
		ns.Run("ip", "addr", "add", ip+"/24", "dev", lan)
	}
	mk := func(name, role, ip string) *Member {
		m := &Member{Name: name, Role: role, NS: nstest.New(tb, name), Dir: tb.TempDir(), IP: ip, c: c, LAN: "mgmt0"}
		if role == "node" {
			m.LAN = "br-mgmt"
		}
		attach(m.NS, "p-"+name, ip, m.LAN)
		tb.Cleanup(func() {
			m.Kill()
			// TANDEM_TEST_LOGS=dir keeps every member's log after the test.
			if dir := os.Getenv("TANDEM_TEST_LOGS"); dir != "" {
				_ = os.MkdirAll(dir, 0o755)
				_ = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(tb.Name(), "/", "_")+"."+m.Name+".log"), []byte(m.Log()), 0o644)
			}
		})
		return m
	}
	c.A = mk("node-a", "node", Subnet+"11")
	c.B = mk("node-b", "node", Subnet+"12")
	c.W = mk("witness", "witness", Subnet+"13")
	nstest.Veth(tb, c.A.NS, "ic0", c.B.NS, "ic0")
	c.ClientNS = nstest.New(tb, "client")
	attach(c.ClientNS, "p-client", ClientIP, "mgmt0")
	if opts.Firewall {
		for _, m := range c.Members() {
			m.NS.Run("nft", "-f", "-", firewallRules)
		}
	}
	// Let IPv6 duplicate address detection finish on the interconnect.
	for _, m := range []*Member{c.A, c.B} {
		nstest.WaitFor(tb, 10*time.Second, "link-local address on "+m.Name, func() bool {
			out, _ := m.NS.Command("ip", "-6", "addr", "show", "dev", "ic0").Output()
			return strings.Contains(string(out), "fe80") && !strings.Contains(string(out), "tentative")
		})
	}
	return c
}

// firewallRules let in only what a site's one firewall rule allows: TCP
// 443, plus the ICMPv6 that IPv6 itself needs (neighbour discovery, and
// the echo the nodes use to find each other on the interconnect).
const firewallRules = `table inet tandem {
	chain input {
		type filter hook input priority 0; policy drop;
		iif lo accept
		ct state established,related accept
		tcp dport 443 accept
		meta l4proto ipv6-icmp accept
	}
}`

// Members returns A, B and W.
func (c *Cluster) Members() []*Member { return []*Member{c.A, c.B, c.W} }

// Start runs the member's processes; the witness joins with the token.
func (m *Member) Start() {
	c := m.c
	c.tb.Helper()
	logf, err := os.OpenFile(filepath.Join(m.Dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		c.tb.Fatal(err)
	}
	timing := []string{}
	if c.opts.Heartbeat > 0 {
		timing = []string{"-heartbeat", c.opts.Heartbeat.String(), "-lease", c.opts.Lease.String()}
	}
	nodeOnly := []string{}
	if len(c.opts.FenceCommand) > 0 {
		fence, _ := json.Marshal(c.opts.FenceCommand)
		nodeOnly = append(nodeOnly, "-fence-command", string(fence))
	}
	var cmds [][]string
	if m.Role == "node" {
		cmds = [][]string{
			{"tandem-frontdoor", "-listen", ":443", "-state", m.Dir + "/frontdoor", "-member-tls", m.Dir + "/cluster/tls",
				"-supervisor", m.Dir + "/no-supervisor.sock", "-cluster", m.Dir + "/cluster.sock", "-storage", m.Dir + "/storage.sock", "-vmm", m.Dir + "/vmm.sock"},
			append([]string{"tandem-cluster", "-data", m.Dir + "/cluster", "-socket", m.Dir + "/cluster.sock", "-name", m.Name,
				"-mgmt", m.LAN, "-interconnect", "ic0", "-console", "", "-supervisor", m.Dir + "/no-supervisor.sock"}, append(timing, nodeOnly...)...),
		}
		if c.opts.Storage {
			cmds = append(cmds, m.storageArgs())
		}
		if c.opts.VMs {
			cmds = append(cmds, m.vmmArgs())
		}
	} else {
		cmds = [][]string{append([]string{"tandem-witness", "-listen", ":443", "-data", m.Dir + "/witness", "-name", m.Name,
			"-advertise", m.IP + ":443", "-join", c.A.IP + ":443," + c.B.IP + ":443", "-token", c.Token}, timing...)}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, args := range cmds {
		m.startLocked(logf, args)
	}
	logf.Close()
}

// storageArgs runs the storage service with its files in the member's
// folder.
func (m *Member) storageArgs() []string {
	return []string{"tandem-storage", "-data", m.Dir + "/volumes", "-nbd", m.NBDSocket(), "-socket", m.Dir + "/storage.sock",
		"-cluster", m.Dir + "/cluster.sock", "-member-tls", m.Dir + "/cluster/tls", "-fence-timeout", "5s"}
}

// vmmArgs runs the VM manager with its files in the member's folder and
// the test guest's boot files from BootDir.
func (m *Member) vmmArgs() []string {
	args := []string{"tandem-vmm", "-run", m.Dir + "/vms", "-state", m.Dir + "/vmm", "-boot", m.c.opts.BootDir, "-nbd", m.NBDSocket(),
		"-bridge", m.LAN, "-socket", m.Dir + "/vmm.sock", "-cluster", m.Dir + "/cluster.sock", "-member-tls", m.Dir + "/cluster/tls",
		"-shutdown-timeout", "10s", "-fence-lease", m.Dir + "/fence-lease"}
	if m.c.opts.QEMU != "" {
		args = append(args, "-qemu", m.c.opts.QEMU)
	}
	return args
}

// StartVMM starts the member's VM manager again (after KillProcess).
func (m *Member) StartVMM() { m.startNamed(m.vmmArgs()) }

// NBDSocket is where the member's storage service serves its volumes.
func (m *Member) NBDSocket() string { return m.Dir + "/nbd.sock" }

func (m *Member) startLocked(logf *os.File, args []string) {
	c := m.c
	cmd := m.NS.Command(append([]string{c.bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.tb.Fatalf("start %s on %s: %v", args[0], m.Name, err)
	}
	if m.procs == nil {
		m.procs = map[string]*exec.Cmd{}
	}
	m.procs[args[0]] = cmd
}

// StartStorage starts the member's storage service again (after
// KillProcess).
func (m *Member) StartStorage() { m.startNamed(m.storageArgs()) }

func (m *Member) startNamed(args []string) {
	logf, err := os.OpenFile(filepath.Join(m.Dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		m.c.tb.Fatal(err)
	}
	defer logf.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.startLocked(logf, args)
}

// Kill ends every process of the member at once (kill -9).
func (m *Member) Kill() {
	m.mu.Lock()
	procs := m.procs
	m.procs = nil
	m.mu.Unlock()
	for _, p := range procs {
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
	}
	// And whatever else runs on the machine: VMs' QEMUs live in sessions
	// of their own.
	for _, pid := range netns.PIDs(m.NS.Name) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, p := range procs {
		_ = p.Wait()
	}
}

// KillAgent kills only the cluster agent (or the witness process).
func (m *Member) KillAgent() {
	if m.Role == "node" {
		m.KillProcess("tandem-cluster")
	} else {
		m.KillProcess("tandem-witness")
	}
}

// KillProcess kills one of the member's processes (kill -9).
func (m *Member) KillProcess(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.procs[name]
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
	_ = p.Wait()
	delete(m.procs, name)
}

// Signal sends sig to a process the member runs (SIGSTOP hangs it,
// SIGCONT lets it go on).
func (m *Member) Signal(name string, sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.procs[name]; p != nil {
		_ = syscall.Kill(-p.Process.Pid, sig)
	}
}

// PowerOff is a power cut: every process dies, the links go down, and
// what the kernel held is gone (the cluster IP, if this member had it).
func (m *Member) PowerOff() {
	m.Kill()
	m.LinksDown()
	_ = m.NS.Command("ip", "addr", "del", ClusterIP+"/24", "dev", m.LAN).Run()
}

// PowerOn brings the links back and starts the processes.
func (m *Member) PowerOn() {
	m.LinksUp()
	m.Start()
}

// LinksDown takes the member's network links down (it stays running).
func (m *Member) LinksDown() {
	for _, l := range m.links() {
		m.NS.Run("ip", "link", "set", l, "down")
	}
}

// LinksUp brings the member's links back.
func (m *Member) LinksUp() {
	for _, l := range m.links() {
		m.NS.Run("ip", "link", "set", l, "up")
	}
}

func (m *Member) links() []string {
	if m.Role == "node" {
		return []string{"mgmt0", "ic0"}
	}
	return []string{"mgmt0"}
}

// Wipe deletes the member's data, as if its disk had been replaced (and
// the machine restarted).
func (m *Member) Wipe() {
	m.Kill()
	_ = m.NS.Command("ip", "addr", "del", ClusterIP+"/24", "dev", m.LAN).Run()
	entries, _ := os.ReadDir(m.Dir)
	for _, e := range entries {
		if e.Name() != "log" {
			os.RemoveAll(filepath.Join(m.Dir, e.Name()))
		}
	}
}

// SetupCode is the member's setup code, once its agent has made it.
func (m *Member) SetupCode() string {
	var code string
	nstest.WaitFor(m.c.tb, 20*time.Second, m.Name+"'s setup code", func() bool {
		b, err := os.ReadFile(filepath.Join(m.Dir, "cluster", "setup-code"))
		code = strings.TrimSpace(string(b))
		return err == nil && code != ""
	})
	return code
}

// Log returns the member's process output.
func (m *Member) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.Dir, "log"))
	return string(b)
}

// client returns an HTTPS client dialling from the namespace.
func (c *Cluster) client(ns *nstest.NS) *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc, ok := c.clients[ns.Name]; ok {
		return hc
	}
	timeout := c.opts.APITimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:         ns.DialContext,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     10 * time.Second,
	}}
	c.clients[ns.Name] = hc
	return hc
}

// Do calls the API at host (an IP) from the namespace, as the admin. It
// returns the status code; a 2xx answer is decoded into out.
func (c *Cluster) Do(ctx context.Context, from *nstest.NS, method, host, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+host+path, body)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(c.Admin, c.Password)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client(from).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s on %s: %s: %s", method, path, host, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// DoRetry is Do, retried for a few seconds while the answer is 503 (a
// member catching up, or an election): what a patient client does.
func (c *Cluster) DoRetry(ctx context.Context, from *nstest.NS, method, host, path string, in, out any) (int, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, err := c.Do(ctx, from, method, host, path, in, out)
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return code, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Form starts A and B, bootstraps the cluster on A, has B join through
// the interconnect, starts the witness, and waits until all three vote.
func (c *Cluster) Form() {
	c.tb.Helper()
	ctx := context.Background()
	c.A.Start()
	c.B.Start()
	waitAnswer(c.tb, c, c.A)
	waitAnswer(c.tb, c, c.B)
	var boot cluster.BootstrapResponse
	if _, err := c.Do(ctx, c.ClientNS, "POST", c.A.IP, "/api/v1/cluster/bootstrap", cluster.BootstrapRequest{
		SetupCode: c.A.SetupCode(), AdminName: c.Admin, AdminPassword: c.Password, ClusterIP: ClusterIP + "/24",
	}, &boot); err != nil {
		c.tb.Fatalf("bootstrap: %v", err)
	}
	c.Token = boot.JoinToken
	// No peer address: B finds A on the interconnect.
	if _, err := c.Do(ctx, c.ClientNS, "POST", c.B.IP, "/api/v1/cluster/join", cluster.JoinRequest{
		SetupCode: c.B.SetupCode(), Token: c.Token,
	}, nil); err != nil {
		c.tb.Fatalf("join node-b: %v\nnode-b:\n%s\nnode-a:\n%s", err, tail(c.B.Log()), tail(c.A.Log()))
	}
	c.W.Start()
	c.WaitHealthy(20 * time.Second)
}

// Health asks the cluster IP for the leader's view.
func (c *Cluster) Health(ctx context.Context) (cluster.Health, error) {
	var h cluster.Health
	_, err := c.Do(ctx, c.ClientNS, "GET", ClusterIP, "/api/v1/cluster/health", nil, &h)
	return h, err
}

// WaitHealthy waits until the cluster IP answers and every member is a
// reachable voter.
func (c *Cluster) WaitHealthy(timeout time.Duration) cluster.Health {
	c.tb.Helper()
	var h cluster.Health
	var err error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err = c.Health(ctx)
		cancel()
		if err == nil && h.Healthy {
			return h
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.tb.Fatalf("cluster not healthy after %v: %+v (%v)\nnode-a:\n%s\nnode-b:\n%s\nwitness:\n%s", timeout, h, err, tail(quiet(c.A.Log())), tail(quiet(c.B.Log())), tail(quiet(c.W.Log())))
	return h
}

// Status asks one member for its own view.
func (c *Cluster) Status(ctx context.Context, m *Member) (cluster.Status, error) {
	var s cluster.Status
	_, err := c.Do(ctx, c.ClientNS, "GET", m.IP, "/api/v1/cluster/status", nil, &s)
	return s, err
}

// Leader returns the member that says it leads, if one does.
func (c *Cluster) Leader(ctx context.Context) *Member {
	for _, m := range c.Members() {
		if s, err := c.Status(ctx, m); err == nil && s.State == "Leader" {
			return m
		}
	}
	return nil
}

// WaitLeader waits until some member leads and the cluster IP answers.
func (c *Cluster) WaitLeader(timeout time.Duration) {
	c.tb.Helper()
	nstest.WaitFor(c.tb, timeout, "a leader behind the cluster IP", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var s cluster.Status
		_, err := c.Do(ctx, c.ClientNS, "GET", ClusterIP, "/api/v1/cluster/status", nil, &s)
		return err == nil && s.State == "Leader"
	})
}

// ByID returns the member with a cluster member ID.
func (c *Cluster) ByID(ctx context.Context, id string) *Member {
	for _, m := range c.Members() {
		if s, err := c.Status(ctx, m); err == nil && s.Member.MemberID == id {
			return m
		}
	}
	return nil
}

func waitAnswer(tb testing.TB, c *Cluster, m *Member) {
	tb.Helper()
	nstest.WaitFor(tb, 20*time.Second, m.Name+" answering", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+m.IP+"/api/v1/cluster/beacon", nil)
		resp, err := c.client(c.ClientNS).Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// quiet drops raft's routine lines from a log, for failure messages.
func quiet(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "component=raft") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
