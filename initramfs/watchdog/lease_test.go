package watchdog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLeaseProblem(t *testing.T) {
	now := 100 * time.Second
	tests := map[string]struct {
		lease   *Lease // nil: no lease file
		raw     string // written instead of lease when set
		problem string // part of the error; empty: the watchdog is pet
	}{
		"no VM manager yet":    {},
		"no VMs":               {lease: &Lease{VMs: 0, QuorumAt: 10 * time.Second, Deadline: 14 * time.Second}},
		"VMs within the lease": {lease: &Lease{VMs: 2, QuorumAt: 98 * time.Second, Deadline: 102 * time.Second}},
		"VMs past the lease":   {lease: &Lease{VMs: 1, QuorumAt: 90 * time.Second, Deadline: 94500 * time.Millisecond}, problem: "1 VMs run 5.5s past their fence deadline"},
		"unreadable lease":     {raw: "{vms", problem: "fence lease"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fence-lease")
			switch {
			case tc.raw != "":
				if err := os.WriteFile(path, []byte(tc.raw), 0o600); err != nil {
					t.Fatal(err)
				}
			case tc.lease != nil:
				if err := WriteLease(path, *tc.lease); err != nil {
					t.Fatal(err)
				}
			}
			err := LeaseProblem(path, now)
			switch {
			case tc.problem == "" && err != nil:
				t.Fatalf("problem %v, want none", err)
			case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)):
				t.Fatalf("problem %v, want one saying %q", err, tc.problem)
			}
		})
	}
}

func TestLeaseRoundTripAndMonotonic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "fence-lease")
	want := Lease{VMs: 3, QuorumAt: Monotonic(), Deadline: Monotonic() + 4*time.Second}
	if err := WriteLease(path, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadLease(path)
	if err != nil || !ok || got != want {
		t.Fatalf("read %+v %v %v, want %+v", got, ok, err, want)
	}
	a := Monotonic()
	time.Sleep(10 * time.Millisecond)
	if d := Monotonic() - a; d < 10*time.Millisecond || d > time.Second {
		t.Fatalf("the monotonic clock moved %v in 10ms", d)
	}
}
