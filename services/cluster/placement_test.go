package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/services/directory"
)

func TestPlace(t *testing.T) {
	caps := []Capacity{
		{Node: "n-a", Name: "node-a", CPUs: 8, MemoryMiB: 8192, UsedMemMiB: 4096},
		{Node: "n-b", Name: "node-b", CPUs: 8, MemoryMiB: 8192, UsedMemMiB: 1024},
	}
	for _, tc := range []struct {
		name    string
		mem     int
		asked   string
		caps    []Capacity
		want    string
		wantErr error
	}{
		{name: "most free memory", mem: 512, want: "n-b"},
		{name: "asked node that fits", mem: 512, asked: "n-a", want: "n-a"},
		{name: "asked node full", mem: 4096, asked: "n-a", wantErr: directory.ErrRefused},
		{name: "fits nowhere", mem: 7000, wantErr: directory.ErrRefused},
		{name: "tie goes to the first name", mem: 512, caps: []Capacity{{Node: "n-b", Name: "node-b", MemoryMiB: 4096}, {Node: "n-a", Name: "node-a", MemoryMiB: 4096}}, want: "n-a"},
		{name: "maintenance is skipped", mem: 512, caps: []Capacity{{Node: "n-a", Name: "node-a", MemoryMiB: 4096}, {Node: "n-b", Name: "node-b", MemoryMiB: 8192, Maintenance: true}}, want: "n-a"},
		{name: "unknown inventory fits", mem: 512, caps: []Capacity{{Node: "n-a", Name: "node-a"}}, want: "n-a"},
	} {
		c := caps
		if tc.caps != nil {
			c = tc.caps
		}
		got, err := place(c, directory.VM{Name: "vm", MemoryMiB: tc.mem}, tc.asked)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestAdmitHA(t *testing.T) {
	caps := []Capacity{
		{Node: "n-a", Name: "node-a", MemoryMiB: 5120, UsedMemMiB: 2048},
		{Node: "n-b", Name: "node-b", MemoryMiB: 5120, UsedMemMiB: 1024},
	}
	// node-a runs 2 GiB of HA VMs, node-b 1 GiB; 1 GiB per node is reserved.
	vms := []directory.VM{
		{Name: "a1", Node: "n-a", Running: true, HA: true, MemoryMiB: 2048},
		{Name: "b1", Node: "n-b", Running: true, HA: true, MemoryMiB: 1024},
	}
	for _, tc := range []struct {
		name string
		vm   directory.VM
		node string
		ok   bool
	}{
		{"not HA: no check", directory.VM{Name: "x", MemoryMiB: 3000}, "n-a", true},
		{"fits either way", directory.VM{Name: "x", HA: true, MemoryMiB: 512}, "n-b", true},
		// node-b would hold 1+1.5 GiB of HA VMs; node-a has 2 GiB free after its own.
		{"survivor too small", directory.VM{Name: "x", HA: true, MemoryMiB: 1536}, "n-b", false},
		// On node-a: node-a's 3.5 GiB of HA VMs cannot fit in node-b's 3 GiB free.
		{"failing node too full", directory.VM{Name: "x", HA: true, MemoryMiB: 1536}, "n-a", false},
	} {
		err := admitHA(caps, vms, tc.vm, tc.node)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, directory.ErrRefused)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestAdmitHAStartingAgainCountsOnce(t *testing.T) {
	// a1 was stopped and starts again: the capacities (made without it)
	// and its own directory record must not count it twice.
	caps := []Capacity{{Node: "n-a", Name: "node-a", MemoryMiB: 4096}, {Node: "n-b", Name: "node-b", MemoryMiB: 4096}}
	vms := []directory.VM{{Name: "a1", Node: "n-a", HA: true, MemoryMiB: 3072}}
	if err := admitHA(caps, vms, vms[0], "n-a"); err != nil {
		t.Fatal(err)
	}
}

func TestProtectRefusal(t *testing.T) {
	vm := directory.VM{Name: "web", Node: "n-a", MemoryMiB: 1024}
	a := Capacity{Node: "n-a", Name: "node-a", MemoryMiB: 8192, UsedMemMiB: 1024}
	b := Capacity{Node: "n-b", Name: "node-b", MemoryMiB: 8192}
	reachable := func(string) bool { return false }
	for _, tc := range []struct {
		name        string
		caps        []Capacity
		unreachable func(string) bool
		wantErr     error
		wantMsg     string
	}{
		{name: "the other node has room", caps: []Capacity{a, b}},
		{name: "unknown inventory", caps: []Capacity{a, {Node: "n-b", Name: "node-b"}}},
		{name: "no other node", caps: []Capacity{a}, wantErr: directory.ErrConflict, wantMsg: "no other node"},
		{name: "in maintenance", caps: []Capacity{a, {Node: "n-b", Name: "node-b", MemoryMiB: 8192, Maintenance: true}}, wantErr: directory.ErrConflict, wantMsg: "node-b, which is in maintenance"},
		{name: "lost", caps: []Capacity{a, {Node: "n-b", Name: "node-b", MemoryMiB: 8192, Down: true}}, wantErr: directory.ErrConflict, wantMsg: "node-b, where its secondary would run, is not reachable"},
		{name: "unreachable", caps: []Capacity{a, b}, unreachable: func(n string) bool { return n == "n-b" }, wantErr: directory.ErrConflict, wantMsg: "not reachable"},
		// The secondary takes twice the VM's memory: 2048 MiB.
		{name: "short of memory", caps: []Capacity{a, {Node: "n-b", Name: "node-b", MemoryMiB: 2048 + nodeReserveMiB - 1}}, wantErr: directory.ErrRefused, wantMsg: "needs 2048 MiB on node-b"},
		{name: "just enough memory", caps: []Capacity{a, {Node: "n-b", Name: "node-b", MemoryMiB: 2048 + nodeReserveMiB}}},
	} {
		un := tc.unreachable
		if un == nil {
			un = reachable
		}
		err := protectRefusal(vm, tc.caps, un)
		switch {
		case tc.wantErr == nil && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !strings.Contains(fmt.Sprint(err), tc.wantMsg)):
			t.Errorf("%s: %v, want %v with %q", tc.name, err, tc.wantErr, tc.wantMsg)
		}
	}
}
