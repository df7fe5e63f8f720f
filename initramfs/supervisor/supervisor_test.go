package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// TestMain doubles as a service for the readiness test: with
// SUPERVISOR_TEST_LISTEN set, the test binary appends "db" to the mark
// file after a pause, then listens on that Unix socket until killed.
func TestMain(m *testing.M) {
	if sock := os.Getenv("SUPERVISOR_TEST_LISTEN"); sock != "" {
		time.Sleep(300 * time.Millisecond)
		f, err := os.OpenFile(os.Getenv("SUPERVISOR_TEST_MARK"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintln(f, "db")
		f.Close()
		l, err := net.Listen("unix", sock)
		if err != nil {
			os.Exit(1)
		}
		defer l.Close()
		time.Sleep(100 * time.Second)
		return
	}
	os.Exit(m.Run())
}

// sh is a service that runs a shell script.
func sh(name, script string) Service {
	return Service{Name: name, Path: "/bin/sh", Args: []string{"-c", script}}
}

// start runs a supervisor over the table until the test ends.
func start(t *testing.T, cfg Config) *Supervisor {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// status returns one service's status.
func status(s *Supervisor, name string) statusapi.Service {
	for _, st := range s.Services() {
		if st.Name == name {
			return st
		}
	}
	return statusapi.Service{}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func running(s *Supervisor, name string) func() bool {
	return func() bool { return status(s, name).State == statusapi.StateRunning }
}

func TestNewRejectsBadTables(t *testing.T) {
	tests := []struct {
		name  string
		table []Service
		want  string
	}{
		{"no name", []Service{{Path: "/bin/true"}}, "no name"},
		{"no path", []Service{{Name: "a"}}, `service "a": no executable path`},
		{"twice", []Service{sh("a", ""), sh("a", "")}, `"a" is in the table twice`},
		{"unknown dependency", []Service{{Name: "a", Path: "/bin/true", After: []string{"b"}}}, `runs after "b", which is not in the table`},
		{"loop", []Service{
			{Name: "a", Path: "/bin/true", After: []string{"b"}},
			{Name: "b", Path: "/bin/true", After: []string{"a"}},
		}, "loop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Services: tt.table})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDependencyOrder(t *testing.T) {
	got, err := dependencyOrder([]Service{
		{Name: "web", After: []string{"api"}},
		{Name: "api", After: []string{"db"}},
		{Name: "db"},
		{Name: "shell"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "db api web shell"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

func TestDependentStartsAfterItsDependencyRuns(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "order")
	// db is ready once it listens; it writes its mark before that.
	sock := filepath.Join(t.TempDir(), "db.sock")
	s := start(t, Config{Services: []Service{
		{Name: "web", Path: "/bin/sh", Args: []string{"-c", fmt.Sprintf("echo web >> %s; exec sleep 100", mark)}, After: []string{"db"}},
		{Name: "db", Path: os.Args[0], Env: []string{"SUPERVISOR_TEST_LISTEN=" + sock, "SUPERVISOR_TEST_MARK=" + mark}, ReadyDial: "unix:" + sock},
	}})
	if st := status(s, "web"); st.State != "waiting" {
		t.Errorf("web is %s while db is not ready, want waiting", st.State)
	}
	waitFor(t, 5*time.Second, "both running", func() bool { return running(s, "web")() && running(s, "db")() })
	waitFor(t, 5*time.Second, "both wrote", func() bool {
		b, _ := os.ReadFile(mark)
		return strings.Count(string(b), "\n") == 2
	})
	b, _ := os.ReadFile(mark)
	if string(b) != "db\nweb\n" {
		t.Errorf("start order %q, want db then web", b)
	}
}

func TestKilledServiceRestartsQuickly(t *testing.T) {
	s := start(t, Config{Services: []Service{sh("svc", "exec sleep 100")}})
	waitFor(t, 5*time.Second, "running", running(s, "svc"))
	before := status(s, "svc")
	if err := unix.Kill(before.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 2*time.Second, "restart", func() bool {
		st := status(s, "svc")
		return st.State == statusapi.StateRunning && st.PID != before.PID
	})
	after := status(s, "svc")
	t.Logf("back after %v", time.Since(killed))
	if after.Restarts != before.Restarts+1 {
		t.Errorf("restarts %d, want %d", after.Restarts, before.Restarts+1)
	}
	if after.LastExit != "killed by signal SIGKILL" {
		t.Errorf("last exit %q", after.LastExit)
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	s := start(t, Config{Services: []Service{{
		Name: "crasher", Path: "/bin/sh", Args: []string{"-c", "exit 3"},
		BackoffMin: 20 * time.Millisecond, BackoffMax: 320 * time.Millisecond,
	}}})
	time.Sleep(2 * time.Second)
	st := status(s, "crasher")
	// Delays 20+40+80+160+320+320+... ms: about 8 starts in 2 s. Without
	// backoff a shell that exits at once would start hundreds of times.
	if st.Restarts < 4 || st.Restarts > 12 {
		t.Errorf("%d restarts in 2s, want about 8", st.Restarts)
	}
	if st.LastExit != "exit status 3" {
		t.Errorf("last exit %q", st.LastExit)
	}
	waitFor(t, time.Second, "backoff state", func() bool {
		st := status(s, "crasher")
		return st.State == statusapi.StateBackoff && st.NextStart != nil
	})
}

func TestMissingBinaryIsReportedAndOthersRun(t *testing.T) {
	s := start(t, Config{Services: []Service{
		{Name: "ghost", Path: "/nonexistent/tandem-ghost", BackoffMin: 10 * time.Millisecond},
		sh("real", "exec sleep 100"),
	}})
	waitFor(t, 5*time.Second, "real running", running(s, "real"))
	waitFor(t, 5*time.Second, "ghost error", func() bool {
		return strings.Contains(status(s, "ghost").LastError, "no such file")
	})
	if st := status(s, "ghost"); st.State == statusapi.StateRunning {
		t.Errorf("ghost is %s", st.State)
	}
}

func TestStopKillsTheProcessGroup(t *testing.T) {
	dir := t.TempDir()
	childPID := filepath.Join(dir, "child")
	// The service ignores SIGTERM and leaves a child in its group.
	s := start(t, Config{Services: []Service{{
		Name: "stubborn", Path: "/bin/sh",
		Args:        []string{"-c", fmt.Sprintf(`trap "" TERM; sleep 1000 & echo $! > %s; while :; do sleep 1; done`, childPID)},
		StopTimeout: 300 * time.Millisecond,
	}}})
	waitFor(t, 5*time.Second, "child pid written", func() bool { _, err := os.Stat(childPID); return err == nil })
	time.Sleep(50 * time.Millisecond)
	b, _ := os.ReadFile(childPID)
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := s.Control(context.Background(), "stubborn", statusapi.ActionStop); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "stopped", func() bool { return status(s, "stubborn").State == statusapi.StateStopped })
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Errorf("stopped after %v: SIGKILL came before the stop timeout", d)
	}
	if got := status(s, "stubborn").LastExit; got != "killed by signal SIGKILL" {
		t.Errorf("last exit %q", got)
	}
	waitFor(t, 2*time.Second, "child gone", func() bool { return unix.Kill(child, 0) == unix.ESRCH })

	// Stopped stays stopped, then starts on request.
	time.Sleep(200 * time.Millisecond)
	if st := status(s, "stubborn"); st.State != statusapi.StateStopped {
		t.Errorf("state %s after stop", st.State)
	}
	if err := s.Control(context.Background(), "stubborn", statusapi.ActionStart); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "running again", running(s, "stubborn"))
}

func TestShutdownStopsInReverseOrder(t *testing.T) {
	dir := t.TempDir()
	order := filepath.Join(dir, "order")
	svc := func(name string, after ...string) Service {
		return Service{Name: name, Path: "/bin/sh", After: after,
			Args: []string{"-c", fmt.Sprintf(`trap "echo %s >> %s; exit 0" TERM; echo up >> %s.up; while :; do sleep 0.05; done`, name, order, order)}}
	}
	s, err := New(Config{Services: []Service{svc("c", "b"), svc("a"), svc("b", "a")}, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	// Wait until every shell has its trap in place.
	waitFor(t, 5*time.Second, "all up", func() bool { b, _ := os.ReadFile(order + ".up"); return len(b) == 9 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(order)
	if string(b) != "c\nb\na\n" {
		t.Errorf("stop order %q, want c b a", b)
	}
	for _, st := range s.Services() {
		if st.State != statusapi.StateStopped {
			t.Errorf("%s is %s after shutdown", st.Name, st.State)
		}
	}
}

func TestRestartPolicies(t *testing.T) {
	s := start(t, Config{Services: []Service{
		{Name: "once", Path: "/bin/sh", Args: []string{"-c", "exit 1"}, Restart: Never},
		{Name: "ok", Path: "/bin/sh", Args: []string{"-c", "exit 0"}, Restart: OnFailure},
		{Name: "fails", Path: "/bin/sh", Args: []string{"-c", "exit 2"}, Restart: OnFailure, BackoffMin: 10 * time.Millisecond},
	}})
	waitFor(t, 5*time.Second, "once exited", func() bool { return status(s, "once").State == statusapi.StateExited })
	waitFor(t, 5*time.Second, "ok exited", func() bool { return status(s, "ok").State == statusapi.StateExited })
	waitFor(t, 5*time.Second, "fails restarted", func() bool { return status(s, "fails").Restarts >= 2 })
	time.Sleep(200 * time.Millisecond)
	if r := status(s, "once").Restarts + status(s, "ok").Restarts; r != 0 {
		t.Errorf("%d restarts of services that should not restart", r)
	}
}

func TestOperatorControl(t *testing.T) {
	s := start(t, Config{Services: []Service{
		{Name: "crit", Path: "/bin/sh", Args: []string{"-c", "exec sleep 100"}, Critical: true},
	}})
	ctx := context.Background()
	waitFor(t, 5*time.Second, "running", running(s, "crit"))
	pid := status(s, "crit").PID
	if err := s.Control(ctx, "crit", statusapi.ActionStop); !errors.Is(err, ErrCritical) {
		t.Errorf("stop critical: %v, want ErrCritical", err)
	}
	if err := s.Control(ctx, "crit", statusapi.ActionRestart); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "new pid", func() bool { st := status(s, "crit"); return st.State == statusapi.StateRunning && st.PID != pid })
	if err := s.Control(ctx, "nope", statusapi.ActionRestart); err == nil {
		t.Error("control of an unknown service succeeded")
	}
	if err := s.Control(ctx, "crit", "explode"); err == nil {
		t.Error("unknown action succeeded")
	}
}

func TestHealthWatchesCriticalServices(t *testing.T) {
	s := start(t, Config{Services: []Service{
		{Name: "crit", Path: "/bin/sh", Args: []string{"-c", "exit 1"}, Critical: true, BackoffMin: 10 * time.Millisecond},
		{Name: "other", Path: "/bin/sh", Args: []string{"-c", "exit 1"}, BackoffMin: 10 * time.Millisecond},
	}})
	if err := s.Health(time.Hour); err != nil {
		t.Errorf("within grace: %v", err)
	}
	waitFor(t, 5*time.Second, "unhealthy", func() bool { return s.Health(200*time.Millisecond) != nil })
	err := s.Health(200 * time.Millisecond)
	if !strings.Contains(err.Error(), "crit") || strings.Contains(err.Error(), "other") {
		t.Errorf("health %v: want only the critical service named", err)
	}
}

func TestOutputIsKeptAndRotated(t *testing.T) {
	dir := t.TempDir()
	s := start(t, Config{
		LogDir: dir, LogLines: 5, LogMaxBytes: 400, LogFiles: 2,
		Services: []Service{sh("talker", `i=0; while [ $i -lt 40 ]; do echo "line $i"; i=$((i+1)); done; exec sleep 100`)},
	})
	waitFor(t, 5*time.Second, "last line", func() bool {
		l, _ := s.Log("talker", 1)
		return len(l) == 1 && l[0].Text == "line 39"
	})
	lines, err := s.Log("talker", 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range lines {
		texts = append(texts, l.Text)
	}
	if got, want := strings.Join(texts, "|"), "line 35|line 36|line 37|line 38|line 39"; got != want {
		t.Errorf("ring %q, want %q", got, want)
	}
	if _, err := s.Log("nope", 1); err == nil {
		t.Error("log of unknown service succeeded")
	}
	for _, f := range []string{"talker.log", "talker.log.1", "talker.log.2"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if st.Size() > 400 {
			t.Errorf("%s is %d bytes, over the 400 limit", f, st.Size())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "talker.log.3")); err == nil {
		t.Error("more rotated files kept than asked")
	}
}

func TestLongLinesAreCut(t *testing.T) {
	l := newOutputLog(slog.Default(), 10, "", "x", 0, 0)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.consume(r); close(done) }()
	// The last line has no newline: it is kept when the writer closes.
	fmt.Fprintf(w, "%s\nshort\nend", strings.Repeat("x", maxLine*2+10))
	w.Close()
	<-done
	var sizes []int
	for _, line := range l.last(0) {
		sizes = append(sizes, len(line.Text))
	}
	if fmt.Sprint(sizes) != fmt.Sprint([]int{maxLine, maxLine, 10, 5, 3}) {
		t.Errorf("line sizes %v", sizes)
	}
}
