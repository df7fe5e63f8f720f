package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/services/directory"
)

// instance is one running QEMU, started by this manager or adopted from
// an earlier run of it.
type instance struct {
	name string
	p    paths
	pid  int

	mon  *qmp.SocketMonitor
	raw  *raw.Monitor
	done chan struct{} // closed when QEMU is gone (its QMP socket closed)

	mu        sync.Mutex
	def       directory.VM // what it runs: its start's definition and hot-adds since
	status    string       // QEMU's run state: running, paused, shutdown, …
	guestOff  bool         // the guest powered itself off
	stopping  bool         // this manager asked it to stop
	incoming  bool         // it waits for (or has received) a migrating VM
	migrating bool         // it is sending its VM to another node
	secondary bool         // it is a fault-tolerant VM's secondary (ft.go)
	ft        *ftPair      // its side of a fault-tolerant VM's pairing
	owned     uint64       // the FT epoch from which it runs its VM (a takeover)
	started   time.Time
}

// startQEMU starts a VM's QEMU, with extra arguments for an incoming
// migration, waits until it runs (QEMU daemonizes once its devices are
// set up, so a bad definition fails here, with QEMU's own message) and
// tracks it. The fence lease covers it before it starts.
func (m *Manager) startQEMU(ctx context.Context, vm directory.VM, secondary *coloSecondary, extra ...string) (*instance, error) {
	if err := m.beginStart(); err != nil {
		return nil, err
	}
	defer m.endStart()
	p := paths{dir: m.vmDir(vm.Name)}
	if err := os.RemoveAll(p.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	if err := writeDefinition(p, vm); err != nil {
		return nil, err
	}
	acc := m.acc.Get(ctx)
	args := append(qemuArgs(vm, p, acc, m.cfg.NBDSocket, m.cfg.BootDir, secondary), extra...)
	cmd := exec.CommandContext(ctx, m.cfg.QEMU, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// Its own session: the supervisor's signals to this service's process
	// group never reach the guests.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String() + "\n" + tailOf(p.qemuLog(), 2048))
		if acc.KVM && strings.Contains(strings.ToLower(msg), "kvm") {
			// The probe passed but this host cannot run guests on KVM.
			m.log.Warn("QEMU failed on KVM: running guests under TCG from now on", "vm", vm.Name, "err", msg)
			m.acc.FallBack("a guest failed to start on KVM: " + msg)
			return m.startQEMU(ctx, vm, secondary, extra...)
		}
		return nil, fmt.Errorf("QEMU did not start: %v: %s", err, msg)
	}
	inst, err := m.attach(vm.Name, p)
	if err != nil {
		// A QEMU nobody can drive must not run on.
		if b, rerr := os.ReadFile(p.pidfile()); rerr == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 1 {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		return nil, err
	}
	inst.setDefinition(vm)
	inst.started = time.Now()
	for i := range vm.NICs {
		if err := m.plugTap(tapName(vm.Name, i)); err != nil {
			inst.kill()
			return nil, fmt.Errorf("NIC %d: %w", i, err)
		}
	}
	// Tracked before the start ends: the lease always counts it.
	m.mu.Lock()
	m.vms[vm.Name] = inst
	m.mu.Unlock()
	return inst, nil
}

// tailOf is the end of a log file, at most max bytes ("" if unreadable).
func tailOf(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	return strings.TrimSpace(string(b))
}

// attach connects to a QEMU's QMP socket and follows its events.
func (m *Manager) attach(name string, p paths) (*instance, error) {
	b, err := os.ReadFile(p.pidfile())
	if err != nil {
		return nil, fmt.Errorf("QEMU pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("QEMU pid file %q: not a pid", b)
	}
	if err := unix.Kill(pid, 0); err != nil {
		return nil, fmt.Errorf("QEMU %d: %w", pid, err)
	}
	mon, err := qmp.NewSocketMonitor("unix", p.qmp(), 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("QMP: %w", err)
	}
	if err := mon.Connect(); err != nil {
		return nil, fmt.Errorf("QMP handshake: %w", err)
	}
	events, err := mon.Events(context.Background())
	if err != nil {
		mon.Disconnect()
		return nil, err
	}
	inst := &instance{name: name, p: p, pid: pid, mon: mon, raw: raw.NewMonitor(mon), done: make(chan struct{})}
	go func() {
		// Every event must be read, or go-qemu's reader stalls the
		// monitor; the channel closes when QEMU goes away.
		for e := range events {
			inst.event(e)
		}
		close(inst.done)
	}()
	if st, err := inst.raw.QueryStatus(); err == nil {
		inst.setStatus(st.Status.String())
	}
	return inst, nil
}

func (in *instance) event(e qmp.Event) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch e.Event {
	case "SHUTDOWN":
		in.status = "shutdown"
		if guest, _ := e.Data["guest"].(bool); guest {
			in.guestOff = true
		}
	case "STOP":
		in.status = "paused"
		if in.ft != nil {
			in.ft.checkpointStarts(time.Now())
		}
	case "RESUME":
		in.status = "running"
		if in.ft != nil {
			in.ft.checkpointEnds(time.Now())
		}
	}
}

// definition is what the QEMU runs.
func (in *instance) definition() directory.VM {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.def
}

// setDefinition records what the QEMU runs, also in its run folder: a
// restarted manager adopts the QEMU with it.
func (in *instance) setDefinition(vm directory.VM) {
	in.mu.Lock()
	in.def = vm
	in.mu.Unlock()
	_ = writeDefinition(in.p, vm)
}

// writeDefinition replaces the run folder's vm.json at once. Not synced
// (unlike pki.WriteFileAtomic): it lives in /run and means nothing after a
// reboot, and an fsync here could stall the reconcile loop behind a busy
// disk.
func writeDefinition(p paths, vm directory.VM) error {
	b, err := json.Marshal(vm)
	if err != nil {
		return err
	}
	tmp := p.def() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.def())
}

func (in *instance) setStatus(s string) {
	in.mu.Lock()
	in.status = s
	in.mu.Unlock()
}

func (in *instance) state() (status string, guestOff, stopping bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.status, in.guestOff, in.stopping
}

// beginStop marks the instance as being stopped by the manager; false
// if it already was.
func (in *instance) beginStop() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopping {
		return false
	}
	in.stopping = true
	return true
}

func (in *instance) gone() bool {
	select {
	case <-in.done:
		return true
	default:
		return false
	}
}

// stop ends the VM: an ACPI power button press and up to timeout for the
// guest to power off, then QEMU is told to quit, then killed.
func (in *instance) stop(force bool, timeout time.Duration) (how string) {
	if !force {
		if err := in.raw.SystemPowerdown(); err == nil {
			select {
			case <-in.done:
				return "shut down by the guest (ACPI)"
			case <-time.After(timeout):
			}
		}
	}
	_ = in.raw.Quit()
	select {
	case <-in.done:
		if force {
			return "powered off"
		}
		return fmt.Sprintf("powered off: the guest did not shut down within %v", timeout)
	case <-time.After(5 * time.Second):
	}
	in.kill()
	return "killed: QEMU did not quit"
}

func (in *instance) kill() {
	_ = unix.Kill(in.pid, unix.SIGKILL)
	select {
	case <-in.done:
	case <-time.After(5 * time.Second):
	}
	in.mon.Disconnect()
}

// plugTap puts a VM's tap on the LAN bridge and brings it up.
func (m *Manager) plugTap(name string) error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	tap, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", name, err)
	}
	br, err := net.InterfaceByName(m.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", m.cfg.Bridge, err)
	}
	master := uint32(br.Index)
	if err := c.Link.Set(&rtnetlink.LinkMessage{Index: uint32(tap.Index), Flags: unix.IFF_UP, Change: unix.IFF_UP,
		Attributes: &rtnetlink.LinkAttributes{Master: &master}}); err != nil {
		return fmt.Errorf("tap %s onto %s: %w", name, m.cfg.Bridge, err)
	}
	return nil
}

// errNotRunning means no QEMU of this VM runs here.
var errNotRunning = errors.New("the VM is not running on this node")
