// Package supervisor runs the node's services from one declared table and
// keeps them running: dependencies first, restarts with exponential backoff
// up to a cap, each service in its own process group, SIGTERM then SIGKILL
// on stop, the last lines of output kept in memory and in a rotated log.
//
// The supervisor reaps every child of its process itself (one wait4 loop),
// so that processes orphaned by a service are reaped too when the process
// is a child subreaper. Once Run has started, nothing else in the process
// may wait for children (no os/exec): its exit status would be taken here.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// Policy says when a service that ended is started again.
type Policy int

// Restart policies.
const (
	Always    Policy = iota // whatever the exit status
	OnFailure               // unless it exited with status 0
	Never                   // one run only
)

// Service is one entry of the service table.
type Service struct {
	Name  string
	Path  string   // executable
	Args  []string // arguments after argv[0]
	Env   []string // added to the supervisor's environment
	After []string // services that must be running before this one starts

	// ReadyDial, when set, is where the service accepts connections once
	// it is ready ("unix:/run/tandem/x.sock" or "tcp:127.0.0.1:443"):
	// until a dial succeeds it is starting, and services that run after it
	// wait. Without it a service is running as soon as its process is.
	ReadyDial string

	Restart  Policy
	Critical bool // down for longer than the watchdog grace: the node resets

	// TTY, when set, runs the service on that terminal (stdin, stdout,
	// stderr and controlling terminal); its output is then not captured.
	TTY string

	BackoffMin  time.Duration // first restart delay (default 100ms)
	BackoffMax  time.Duration // cap on the delay (default 30s)
	StableAfter time.Duration // a run this long resets the delay (default 10s)
	StopTimeout time.Duration // SIGTERM to SIGKILL (default 10s)
}

// Config is the supervisor's configuration.
type Config struct {
	Services []Service
	// LogDir receives <service>.log files, rotated; empty keeps logs in
	// memory only.
	LogDir      string
	LogLines    int   // lines kept in memory per service (default 200)
	LogMaxBytes int64 // rotate a log file past this size (default 1 MiB)
	LogFiles    int   // rotated files kept besides the current one (default 3)
	Logger      *slog.Logger
}

// Supervisor runs the table.
type Supervisor struct {
	cfg      Config
	log      *slog.Logger
	order    []*service // dependency order
	byName   map[string]*service
	start    time.Time
	reaper   *reaper
	mu       sync.Mutex    // guards every service's status and changed
	changed  chan struct{} // closed and replaced on every state change
	runOnce  sync.Once
	runError error
}

type service struct {
	spec Service
	ctl  chan string   // start, stop, restart from operators
	quit chan struct{} // closed at shutdown, in reverse dependency order
	done chan struct{} // closed when the service's loop has ended
	logs *outputLog

	// guarded by Supervisor.mu
	status    statusapi.Service
	downSince time.Time
}

// New validates the table: unique names, executables named, dependencies
// that exist and do not loop.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogLines <= 0 {
		cfg.LogLines = 200
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = 1 << 20
	}
	if cfg.LogFiles <= 0 {
		cfg.LogFiles = 3
	}
	s := &Supervisor{cfg: cfg, log: cfg.Logger, byName: map[string]*service{}, changed: make(chan struct{}), start: time.Now()}
	for i, spec := range cfg.Services {
		switch {
		case spec.Name == "":
			return nil, fmt.Errorf("service table entry %d: no name", i)
		case spec.Path == "":
			return nil, fmt.Errorf("service %q: no executable path", spec.Name)
		case spec.ReadyDial != "" && !strings.HasPrefix(spec.ReadyDial, "unix:") && !strings.HasPrefix(spec.ReadyDial, "tcp:"):
			return nil, fmt.Errorf("service %q: ready address %q: want unix:PATH or tcp:HOST:PORT", spec.Name, spec.ReadyDial)
		case s.byName[spec.Name] != nil:
			return nil, fmt.Errorf("service %q is in the table twice", spec.Name)
		}
		withDefaults(&spec)
		sv := &service{
			spec: spec,
			ctl:  make(chan string),
			quit: make(chan struct{}),
			done: make(chan struct{}),
			logs: newOutputLog(cfg.Logger, cfg.LogLines, cfg.LogDir, spec.Name, cfg.LogMaxBytes, cfg.LogFiles),
			status: statusapi.Service{
				Name: spec.Name, State: statusapi.StateWaiting, Critical: spec.Critical, Since: s.start,
			},
			downSince: s.start,
		}
		s.byName[spec.Name] = sv
	}
	order, err := dependencyOrder(cfg.Services)
	if err != nil {
		return nil, err
	}
	for _, name := range order {
		s.order = append(s.order, s.byName[name])
	}
	return s, nil
}

func withDefaults(s *Service) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&s.BackoffMin, 100*time.Millisecond)
	def(&s.BackoffMax, 30*time.Second)
	def(&s.StableAfter, 10*time.Second)
	def(&s.StopTimeout, 10*time.Second)
}

// dependencyOrder sorts the table so every service comes after the ones it
// needs, keeping table order otherwise.
func dependencyOrder(table []Service) ([]string, error) {
	byName := map[string]Service{}
	for _, s := range table {
		byName[s.Name] = s
	}
	var order []string
	state := map[string]int{} // 0 unvisited, 1 visiting, 2 done
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("services depend on each other in a loop: %v", append(path, name))
		case 2:
			return nil
		}
		state[name] = 1
		for _, dep := range byName[name].After {
			if _, ok := byName[dep]; !ok {
				return fmt.Errorf("service %q runs after %q, which is not in the table", name, dep)
			}
			if err := visit(dep, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, s := range table {
		if err := visit(s.Name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// Run starts every service and supervises them until ctx ends; then it
// stops them in reverse dependency order and returns.
func (s *Supervisor) Run(ctx context.Context) error {
	started := false
	s.runOnce.Do(func() { started = true })
	if !started {
		return errors.New("supervisor: Run called twice")
	}
	s.reaper = newReaper(s.log)
	reapCtx, stopReaper := context.WithCancel(context.Background())
	reaperDone := make(chan struct{})
	go func() {
		s.reaper.run(reapCtx)
		close(reaperDone)
	}()

	for _, sv := range s.order {
		go s.runService(sv)
	}
	<-ctx.Done()
	s.log.Info("stopping services")
	for _, sv := range slices.Backward(s.order) {
		close(sv.quit)
		<-sv.done
	}
	stopReaper()
	<-reaperDone
	for _, sv := range s.order {
		sv.logs.close()
	}
	return nil
}

// runService is one service's life: wait for its dependencies, run it,
// restart it by policy, obey operators, and stop it at shutdown.
func (s *Supervisor) runService(sv *service) {
	defer close(sv.done)
	backoff := sv.spec.BackoffMin
	wantUp := true
	first := true
	for {
		if !wantUp {
			switch s.idle(sv) {
			case "quit":
				return
			case statusapi.ActionStart, statusapi.ActionRestart:
				wantUp, backoff = true, sv.spec.BackoffMin
			}
			continue
		}
		if !s.depsRunning(sv) {
			s.setState(sv, statusapi.StateWaiting, func(st *statusapi.Service) { st.PID = 0 })
			s.mu.Lock()
			changed := s.changed
			s.mu.Unlock()
			select {
			case <-sv.quit:
				return
			case <-changed:
			case a := <-sv.ctl:
				wantUp = a != statusapi.ActionStop
			}
			continue
		}

		if !first {
			s.setState(sv, "", func(st *statusapi.Service) { st.Restarts++ })
		}
		first = false
		startedAt := time.Now()
		pid, exited, err := s.spawn(sv)
		var action string
		if err != nil {
			s.log.Error("service did not start", "service", sv.spec.Name, "err", err)
			s.setState(sv, "", func(st *statusapi.Service) { st.LastError = err.Error() })
		} else {
			ready := s.watchReady(sv, pid)
			var ws unix.WaitStatus
			ws, action = s.waitRunning(sv, pid, exited)
			close(ready)
			s.setState(sv, "", func(st *statusapi.Service) { st.PID = 0; st.LastExit = describeExit(ws) })
			if action == "" {
				s.log.Warn("service ended", "service", sv.spec.Name, "status", describeExit(ws), "ran", time.Since(startedAt).Round(time.Millisecond))
			}
			if time.Since(startedAt) >= sv.spec.StableAfter {
				backoff = sv.spec.BackoffMin
			}
			switch {
			case action == "quit":
				s.setState(sv, statusapi.StateStopped, nil)
				return
			case action == statusapi.ActionStop:
				wantUp = false
				continue
			case action == statusapi.ActionRestart:
				backoff = sv.spec.BackoffMin
				continue
			case sv.spec.Restart == Never, sv.spec.Restart == OnFailure && ws.Exited() && ws.ExitStatus() == 0:
				s.setState(sv, statusapi.StateExited, nil)
				wantUp = false
				continue
			}
		}

		// Back off before the next start, interruptibly.
		next := time.Now().Add(backoff)
		s.setState(sv, statusapi.StateBackoff, func(st *statusapi.Service) { st.NextStart = &next })
		t := time.NewTimer(backoff)
		select {
		case <-sv.quit:
			t.Stop()
			s.setState(sv, statusapi.StateStopped, func(st *statusapi.Service) { st.NextStart = nil })
			return
		case <-t.C:
		case a := <-sv.ctl:
			t.Stop()
			if a == statusapi.ActionStop {
				wantUp = false
			}
		}
		s.setState(sv, "", func(st *statusapi.Service) { st.NextStart = nil })
		backoff = min(backoff*2, sv.spec.BackoffMax)
	}
}

// watchReady moves a started service to running: at once, or when a dial
// to its ReadyDial address first succeeds. Closing the returned channel
// stops the watch (the process ended).
func (s *Supervisor) watchReady(sv *service, pid int) chan struct{} {
	stop := make(chan struct{})
	// Only this run, still starting, becomes running: the process may
	// have ended while the dial was under way.
	running := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if sv.status.State == statusapi.StateStarting && sv.status.PID == pid {
			s.log.Info("service running", "service", sv.spec.Name, "pid", pid)
			s.setStateLocked(sv, statusapi.StateRunning, nil)
		}
	}
	s.setState(sv, statusapi.StateStarting, func(st *statusapi.Service) { st.PID = pid; st.LastError = "" })
	if sv.spec.ReadyDial == "" {
		running()
		return stop
	}
	network, addr, _ := strings.Cut(sv.spec.ReadyDial, ":")
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if c, err := net.DialTimeout(network, addr, time.Second); err == nil {
				c.Close()
				running()
				return
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return stop
}

// idle holds a service that should stay down until an operator starts it
// or the supervisor shuts down.
func (s *Supervisor) idle(sv *service) string {
	s.mu.Lock()
	if sv.status.State != statusapi.StateExited {
		s.setStateLocked(sv, statusapi.StateStopped, nil)
	}
	s.mu.Unlock()
	for {
		select {
		case <-sv.quit:
			return "quit"
		case a := <-sv.ctl:
			if a != statusapi.ActionStop {
				return a
			}
		}
	}
}

// waitRunning waits for the process to end on its own, or stops it for an
// operator or for shutdown; the action says which ("" for on its own).
func (s *Supervisor) waitRunning(sv *service, pid int, exited <-chan unix.WaitStatus) (unix.WaitStatus, string) {
	for {
		select {
		case ws := <-exited:
			// Take down whatever the service left behind in its group.
			_ = unix.Kill(-pid, unix.SIGKILL)
			return ws, ""
		case <-sv.quit:
			return s.terminate(sv, pid, exited), "quit"
		case a := <-sv.ctl:
			if a == statusapi.ActionStart {
				continue // already running
			}
			s.log.Info("operator action", "service", sv.spec.Name, "action", a)
			return s.terminate(sv, pid, exited), a
		}
	}
}

// terminate sends SIGTERM to the service's process group, then SIGKILL
// after the stop timeout, and waits for the process to be reaped.
func (s *Supervisor) terminate(sv *service, pid int, exited <-chan unix.WaitStatus) unix.WaitStatus {
	s.setState(sv, statusapi.StateStopping, nil)
	_ = unix.Kill(-pid, unix.SIGTERM)
	t := time.NewTimer(sv.spec.StopTimeout)
	defer t.Stop()
	select {
	case ws := <-exited:
		_ = unix.Kill(-pid, unix.SIGKILL)
		return ws
	case <-t.C:
	}
	s.log.Warn("service ignored SIGTERM; sending SIGKILL", "service", sv.spec.Name, "pid", pid, "after", sv.spec.StopTimeout)
	_ = unix.Kill(-pid, unix.SIGKILL)
	select {
	case ws := <-exited:
		return ws
	case <-time.After(10 * time.Second):
		// Stuck in the kernel (uninterruptible I/O): nothing more to do
		// than to say so; the reaper still collects it if it ever ends.
		s.log.Error("service did not die after SIGKILL", "service", sv.spec.Name, "pid", pid)
		return unix.WaitStatus(unix.SIGKILL)
	}
}

// spawn starts the service's process in its own process group (or session,
// for a terminal) and registers it with the reaper.
func (s *Supervisor) spawn(sv *service) (int, <-chan unix.WaitStatus, error) {
	attr := &os.ProcAttr{
		Env: append(os.Environ(), sv.spec.Env...),
		Sys: &syscall.SysProcAttr{Setpgid: true},
	}
	var closeAfter []*os.File
	defer func() {
		for _, f := range closeAfter {
			f.Close()
		}
	}()
	var output *os.File
	if sv.spec.TTY != "" {
		tty, err := os.OpenFile(sv.spec.TTY, os.O_RDWR, 0)
		if err != nil {
			return 0, nil, fmt.Errorf("open terminal: %w", err)
		}
		closeAfter = append(closeAfter, tty)
		attr.Files = []*os.File{tty, tty, tty}
		attr.Sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return 0, nil, fmt.Errorf("open %s: %w", os.DevNull, err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			null.Close()
			return 0, nil, fmt.Errorf("output pipe: %w", err)
		}
		closeAfter = append(closeAfter, null, w)
		attr.Files = []*os.File{null, w, w}
		output = r
	}

	argv := append([]string{sv.spec.Path}, sv.spec.Args...)
	pid, exited, err := s.reaper.start(func() (int, error) {
		p, err := os.StartProcess(sv.spec.Path, argv, attr)
		if err != nil {
			return 0, err
		}
		pid := p.Pid
		_ = p.Release() // the reaper waits for it, not os.Process
		return pid, nil
	})
	if err != nil {
		if output != nil {
			output.Close()
		}
		return 0, nil, err
	}
	if output != nil {
		go sv.logs.consume(output)
	}
	return pid, exited, nil
}

func (s *Supervisor) depsRunning(sv *service) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range sv.spec.After {
		if s.byName[d].status.State != statusapi.StateRunning {
			return false
		}
	}
	return true
}

// setState moves a service to a new state ("" keeps the state) and applies
// edit to its status, waking everything that waits for a change.
func (s *Supervisor) setState(sv *service, state string, edit func(*statusapi.Service)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(sv, state, edit)
}

func (s *Supervisor) setStateLocked(sv *service, state string, edit func(*statusapi.Service)) {
	if edit != nil {
		edit(&sv.status)
	}
	if state != "" && state != sv.status.State {
		if sv.status.State == statusapi.StateRunning {
			sv.downSince = time.Now()
		}
		sv.status.State = state
		sv.status.Since = time.Now()
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Services returns the status of every service, in table order.
func (s *Supervisor) Services() []statusapi.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]statusapi.Service, 0, len(s.cfg.Services))
	for _, spec := range s.cfg.Services {
		st := s.byName[spec.Name].status
		if st.NextStart != nil {
			t := *st.NextStart
			st.NextStart = &t
		}
		out = append(out, st)
	}
	return out
}

// Log returns up to n of the last lines a service wrote.
func (s *Supervisor) Log(name string, n int) ([]statusapi.LogLine, error) {
	sv, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("no service %q", name)
	}
	return sv.logs.last(n), nil
}

// ErrCritical is returned when an operator asks to stop a critical service:
// the watchdog would reset the node once its grace ran out.
var ErrCritical = errors.New("service is critical: restart it instead of stopping it")

// Control starts, stops or restarts a service for an operator.
func (s *Supervisor) Control(ctx context.Context, name, action string) error {
	sv, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("no service %q", name)
	}
	switch action {
	case statusapi.ActionStart, statusapi.ActionRestart:
	case statusapi.ActionStop:
		if sv.spec.Critical {
			return fmt.Errorf("stop %s: %w", name, ErrCritical)
		}
	default:
		return fmt.Errorf("unknown action %q (want start, stop or restart)", action)
	}
	select {
	case sv.ctl <- action:
		return nil
	case <-sv.done:
		return errors.New("the supervisor is shutting down")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Health reports why the node is unhealthy: a critical service that has
// been down for longer than grace. Nil means healthy.
func (s *Supervisor) Health(grace time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, sv := range s.order {
		if !sv.spec.Critical || sv.status.State == statusapi.StateRunning {
			continue
		}
		if down := time.Since(sv.downSince); down > grace {
			errs = append(errs, fmt.Errorf("critical service %s %s for %v", sv.spec.Name, sv.status.State, down.Round(time.Second)))
		}
	}
	return errors.Join(errs...)
}

// describeExit renders a wait status the way an operator reads it.
func describeExit(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by signal " + unix.SignalName(ws.Signal())
	default:
		return fmt.Sprintf("wait status %#x", uint32(ws))
	}
}
