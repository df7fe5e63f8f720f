package watchdog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A fence lease is the VM manager's promise to the supervisor: "VMs run
// here, and they may until Deadline; I renew it while this node is in the
// cluster's majority". The supervisor pets the watchdog only while the
// lease holds, so a VM manager that cannot stop its VMs after the node
// fell out of the majority (hung, crashed, stuck in the kernel) has the
// node reset within the watchdog's timeout of the deadline. That bound is
// what the survivor waits before it restarts the VMs elsewhere.
//
// Times are CLOCK_MONOTONIC, which both processes share and which no one
// can set: a wall-clock step must not stretch a lease.

// LeasePath is where the VM manager keeps its lease on a node.
const LeasePath = "/run/tandem/fence-lease"

// Lease is the VM manager's promise.
type Lease struct {
	VMs int `json:"vms"` // QEMUs running on this node; 0 holds nothing
	// QuorumAt is when this node last heard from the cluster's majority;
	// Deadline is when its VMs must be stopped if it hears nothing more.
	QuorumAt time.Duration `json:"quorum_at_ns"`
	Deadline time.Duration `json:"deadline_ns"`
}

// Monotonic is the time on CLOCK_MONOTONIC.
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// Expired says whether the lease no longer covers the VMs that run.
func (l Lease) Expired(now time.Duration) bool { return l.VMs > 0 && now > l.Deadline }

// WriteLease replaces the lease at path atomically: the supervisor never
// reads half of one.
func WriteLease(path string, l Lease) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("fence lease: %w", err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("fence lease: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("fence lease: %w", err)
	}
	return nil
}

// ReadLease reads the lease at path; ok is false when there is none (no
// VM manager has run since boot).
func ReadLease(path string) (l Lease, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("fence lease: %w", err)
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return Lease{}, false, fmt.Errorf("fence lease %s: %w", path, err)
	}
	return l, true, nil
}

// LeaseProblem is why the lease at path should withhold the watchdog, or
// nil. A lease that cannot be read withholds it too: it may have promised
// anything.
func LeaseProblem(path string, now time.Duration) error {
	l, ok, err := ReadLease(path)
	switch {
	case err != nil:
		return err
	case !ok || !l.Expired(now):
		return nil
	}
	return fmt.Errorf("%d VMs run %.1fs past their fence deadline (the node lost the cluster's majority and the VM manager has not stopped them)",
		l.VMs, (now - l.Deadline).Seconds())
}
