package directory

import (
	"errors"
	"testing"
)

// ftHarness is volumeHarness with VM "vm" on n-a, running, FT on, its
// disk the volume "disk".
func ftHarness(t *testing.T) *harness {
	h := volumeHarness(t)
	h.must(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: VM{Name: "vm", CPUs: 1, MemoryMiB: 128,
		Disks: []VMDisk{{Volume: "disk"}}, FT: true, Running: true, Node: "n-a"}})
	return h
}

func TestFTPairing(t *testing.T) {
	type step struct {
		name    string
		actor   string
		payload VMFTPayload
		wantErr error
		// after the step
		node, secondary, state string
		volPrimary, colo       string
		copyB                  CopyState
		discard                bool
	}
	up, out := CopyUpToDate, CopyOutdated
	steps := []step{
		{name: "only the VM's node starts a pairing", actor: "member:n-b", payload: VMFTPayload{Op: FTOpProtect, Secondary: "n-b"}, wantErr: ErrRefused,
			node: "n-a", volPrimary: "n-a", copyB: up},
		{name: "the secondary is another node", actor: "member:n-a", payload: VMFTPayload{Op: FTOpProtect, Secondary: "n-a"}, wantErr: ErrInvalid,
			node: "n-a", volPrimary: "n-a", copyB: up},
		{name: "the witness runs no secondary", actor: "member:n-a", payload: VMFTPayload{Op: FTOpProtect, Secondary: "n-w"}, wantErr: ErrInvalid,
			node: "n-a", volPrimary: "n-a", copyB: up},
		{name: "protect", actor: "member:n-a", payload: VMFTPayload{Op: FTOpProtect, Secondary: "n-b"},
			node: "n-a", secondary: "n-b", state: FTSyncing, volPrimary: "n-a", colo: "n-b", copyB: up},
		{name: "a stale epoch is refused", actor: "member:n-a", payload: VMFTPayload{Op: FTOpProtected, Epoch: 0}, wantErr: ErrConflict,
			node: "n-a", secondary: "n-b", state: FTSyncing, volPrimary: "n-a", colo: "n-b", copyB: up},
		{name: "the replicator cannot outdate a COLO copy", actor: "member:n-a", payload: VMFTPayload{Op: "copy"}, wantErr: ErrConflict,
			node: "n-a", secondary: "n-b", state: FTSyncing, volPrimary: "n-a", colo: "n-b", copyB: up},
		{name: "a syncing secondary cannot take over", actor: "member:n-b", payload: VMFTPayload{Op: FTOpFailover, Epoch: 1, Survivor: "n-b"}, wantErr: ErrConflict,
			node: "n-a", secondary: "n-b", state: FTSyncing, volPrimary: "n-a", colo: "n-b", copyB: up},
		{name: "protected", actor: "member:n-a", payload: VMFTPayload{Op: FTOpProtected, Epoch: 1},
			node: "n-a", secondary: "n-b", state: FTProtected, volPrimary: "n-a", colo: "n-b", copyB: up},
		{name: "a failover is the survivor's to record", actor: "member:n-w", payload: VMFTPayload{Op: FTOpFailover, Epoch: 2, Survivor: "n-b"}, wantErr: ErrRefused,
			node: "n-a", secondary: "n-b", state: FTProtected, volPrimary: "n-a", colo: "n-b", copyB: up},
		{name: "the secondary takes over", actor: "member:n-b", payload: VMFTPayload{Op: FTOpFailover, Epoch: 2, Survivor: "n-b", Reason: "primary lost"},
			node: "n-b", state: FTFailedOver, volPrimary: "n-b", copyB: up, discard: true},
		{name: "the primary's late claim loses", actor: "member:n-a", payload: VMFTPayload{Op: FTOpFailover, Epoch: 2, Survivor: "n-a"}, wantErr: ErrConflict,
			node: "n-b", state: FTFailedOver, volPrimary: "n-b", copyB: up, discard: true},
		{name: "no pairing while the other copy is outdated", actor: "member:n-b", payload: VMFTPayload{Op: FTOpProtect, Epoch: 3, Secondary: "n-a"}, wantErr: ErrConflict,
			node: "n-b", state: FTFailedOver, volPrimary: "n-b", copyB: up, discard: true},
	}
	h := ftHarness(t)
	for _, s := range steps {
		p := s.payload
		p.Name = "vm"
		var err error
		if p.Op == "copy" {
			err = h.applyAs(s.actor, TypeVolumeCopy, VolumeCopyPayload{Name: "disk", Member: "n-b", State: out, Generation: 2})
		} else {
			err = h.applyAs(s.actor, TypeVMFT, p)
		}
		if (s.wantErr == nil) != (err == nil) || (s.wantErr != nil && !errors.Is(err, s.wantErr)) {
			t.Fatalf("%s: err %v, want %v", s.name, err, s.wantErr)
		}
		vm, _ := h.d.VM("vm")
		v, _ := h.d.Volume("disk")
		if vm.Node != s.node || vm.FTSecondary != s.secondary || vm.FTState != s.state {
			t.Fatalf("%s: VM on %s, secondary %q, state %q; want %s, %q, %q", s.name, vm.Node, vm.FTSecondary, vm.FTState, s.node, s.secondary, s.state)
		}
		if v.Primary != s.volPrimary || v.Colo != s.colo || v.Copies["n-b"] != s.copyB || v.DiscardOthers != s.discard {
			t.Fatalf("%s: volume %+v", s.name, v)
		}
	}
	// The old primary's copy is outdated after the secondary took over.
	if v, _ := h.d.Volume("disk"); v.Copies["n-a"] != out || v.Copies["n-b"] != up {
		t.Fatalf("after the takeover: %+v", v.Copies)
	}
}

// A put that stops the VM, moves it or switches FT off ends the pairing,
// its copies kept by the node that runs on.
func TestFTEndedByPut(t *testing.T) {
	for name, change := range map[string]func(*VM){
		"stopped":     func(vm *VM) { vm.Running = false },
		"HA restart":  func(vm *VM) { vm.Node = "n-b" },
		"FT off":      func(vm *VM) { vm.FT = false },
		"kept paired": func(vm *VM) { vm.Description = "still protected" },
	} {
		t.Run(name, func(t *testing.T) {
			h := ftHarness(t)
			if err := h.applyAs("member:n-a", TypeVMFT, VMFTPayload{Name: "vm", Op: FTOpProtect, Secondary: "n-b"}); err != nil {
				t.Fatal(err)
			}
			vm, _ := h.d.VM("vm")
			vm.FTSecondary, vm.FTState, vm.FTEpoch = "", "", 0 // a put carries none of it
			change(&vm)
			h.must(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpUpdate}, VM: vm})
			got, _ := h.d.VM("vm")
			v, _ := h.d.Volume("disk")
			if name == "kept paired" {
				if got.FTSecondary != "n-b" || got.FTEpoch != 1 || v.Colo != "n-b" {
					t.Fatalf("pairing lost by an unrelated edit: %+v / %+v", got, v)
				}
				return
			}
			other := map[string]string{"n-a": "n-b", "n-b": "n-a"}[vm.Node]
			if got.FTSecondary != "" || v.Colo != "" || v.Primary != vm.Node || v.Copies[other] != CopyOutdated || !v.DiscardOthers {
				t.Fatalf("pairing not ended: VM %+v volume %+v", got, v)
			}
		})
	}
	// A fault-tolerant VM's limits.
	h := volumeHarness(t)
	err := h.apply(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: VM{Name: "big", CPUs: MaxFTCPUs + 1, MemoryMiB: 128, Disks: []VMDisk{{Volume: "disk"}}, FT: true}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("FT VM with %d vCPUs: %v", MaxFTCPUs+1, err)
	}
}
