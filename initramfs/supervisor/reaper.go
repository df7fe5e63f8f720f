package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// reaper collects every child of the process with wait4(-1) and hands each
// exit status to the service that started that child. Children it does not
// know (orphans re-parented to a subreaper) are reaped and forgotten.
type reaper struct {
	log *slog.Logger
	// mu is held while a child is started and registered, and while an
	// exit is looked up, so an exit can never be seen before its pid is
	// known.
	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
	sigchld chan os.Signal
}

func newReaper(log *slog.Logger) *reaper {
	r := &reaper{log: log, waiting: map[int]chan unix.WaitStatus{}, sigchld: make(chan os.Signal, 1)}
	// Subscribe before any child exists, so no SIGCHLD is missed.
	signal.Notify(r.sigchld, unix.SIGCHLD)
	return r
}

// start runs startFn (which starts one process and returns its pid) and
// returns a channel that receives the process's exit status.
func (r *reaper) start(startFn func() (int, error)) (int, <-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := startFn()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiting[pid] = ch
	return pid, ch, nil
}

func (r *reaper) run(ctx context.Context) {
	defer signal.Stop(r.sigchld)
	// A periodic sweep covers a SIGCHLD coalesced with another.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r.reapAll()
		select {
		case <-ctx.Done():
			return
		case <-r.sigchld:
		case <-tick.C:
		}
	}
}

func (r *reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none has ended
		}
		r.mu.Lock()
		ch, ok := r.waiting[pid]
		delete(r.waiting, pid)
		r.mu.Unlock()
		if ok {
			ch <- ws
		} else {
			r.log.Debug("reaped orphan", "pid", pid, "status", describeExit(ws))
		}
	}
}
