package cluster

import (
	"errors"
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
