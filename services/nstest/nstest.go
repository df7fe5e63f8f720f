// Package nstest builds test networks out of Linux network namespaces:
// hosts joined by veth pairs and bridges, processes started inside them,
// everything removed (processes by PID, then the namespaces) when the test
// ends. It needs root and iproute2; tests skip when either is missing.
//
// Test hosts only ever talk to addresses inside namespaces the test made.
package nstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/nstest/netns"
)

// NS is one network namespace.
type NS struct {
	t    testing.TB
	Name string
}

// Require skips the test when namespaces cannot be made here.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
}

// New makes a namespace with loopback up; it is deleted when the test
// ends, after every process started in it is killed.
func New(t testing.TB, label string) *NS {
	t.Helper()
	Require(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	ns := &NS{t: t, Name: "tt-" + label + "-" + hex.EncodeToString(b)}
	if err := netns.Add(ns.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(ns.Name); err != nil {
			t.Logf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns
}

// Run runs a command in the namespace and fails the test if it fails.
func (ns *NS) Run(args ...string) string {
	ns.t.Helper()
	return run(ns.t, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Command returns a command that runs in the namespace.
func (ns *NS) Command(args ...string) *exec.Cmd {
	return netns.Command(ns.Name, args...)
}

// Start starts a command in the namespace, its output going to the test
// log, and kills it when the test ends.
func (ns *NS) Start(args ...string) *exec.Cmd {
	ns.t.Helper()
	cmd := ns.Command(args...)
	cmd.Stdout = logWriter{ns.t, ns.Name}
	cmd.Stderr = logWriter{ns.t, ns.Name}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		ns.t.Fatalf("start %v in %s: %v", args, ns.Name, err)
	}
	ns.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return cmd
}

// Veth joins two namespaces with a veth pair, named aName in a and bName
// in b, both up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	run(t, "ip", "-n", a.Name, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	run(t, "ip", "-n", a.Name, "link", "set", aName, "up")
	run(t, "ip", "-n", b.Name, "link", "set", bName, "up")
}

// WaitFor polls cond every 20 ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

type logWriter struct {
	t    testing.TB
	name string
}

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Logf("[%s] %s", w.name, line)
	}
	return len(p), nil
}

// DialContext dials from inside the namespace, so the test process can
// be a client on the test network.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return netns.Dial(ctx, ns.Name, network, addr)
}
