package directory

import (
	"errors"
	"testing"
	"time"
)

// volumeHarness is a cluster of node n-a, node n-b and witness n-w with
// volume "disk" (primary n-a) made.
func volumeHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.init()
	for _, m := range []Member{{ID: "n-b", Name: "node-b", Role: MemberNode}, {ID: "n-w", Name: "witness", Role: MemberWitness}} {
		h.must(TypeMemberJoin, MemberJoinPayload{Member: m, TokenID: "tok1", Nonce: "nonce-" + m.ID, NonceExpires: h.now.Add(time.Hour)})
	}
	h.must(TypeVolumePut, VolumePutPayload{Op: OpCreate, Volume: Volume{Name: "disk", ID: "v1", SizeBytes: 1 << 30, Primary: "n-a", DataGeneration: 7}})
	return h
}

func TestVolumeCreateAndGrow(t *testing.T) {
	h := volumeHarness(t)
	v, ok := h.d.Volume("disk")
	if !ok || v.Generation != 1 || v.Primary != "n-a" || len(v.Copies) != 2 || v.Copies["n-a"] != CopyUpToDate || v.Copies["n-b"] != CopyUpToDate {
		t.Fatalf("new volume: %+v", v)
	}
	for name, bad := range map[string]VolumePutPayload{
		"exists":       {Op: OpCreate, Volume: Volume{Name: "disk", ID: "v2", SizeBytes: 4096, Primary: "n-a", DataGeneration: 1}},
		"unaligned":    {Op: OpCreate, Volume: Volume{Name: "x", ID: "v2", SizeBytes: 4097, Primary: "n-a", DataGeneration: 1}},
		"zero size":    {Op: OpCreate, Volume: Volume{Name: "x", ID: "v2", Primary: "n-a", DataGeneration: 1}},
		"too big":      {Op: OpCreate, Volume: Volume{Name: "x", ID: "v2", SizeBytes: MaxVolumeBytes + 4096, Primary: "n-a", DataGeneration: 1}},
		"witness":      {Op: OpCreate, Volume: Volume{Name: "x", ID: "v2", SizeBytes: 4096, Primary: "n-w", DataGeneration: 1}},
		"no ID":        {Op: OpCreate, Volume: Volume{Name: "x", SizeBytes: 4096, Primary: "n-a", DataGeneration: 1}},
		"bad name":     {Op: OpCreate, Volume: Volume{Name: "a/b", ID: "v2", SizeBytes: 4096, Primary: "n-a", DataGeneration: 1}},
		"shrink":       {Op: OpUpdate, Volume: Volume{Name: "disk", SizeBytes: 1 << 20}},
		"grow missing": {Op: OpUpdate, Volume: Volume{Name: "nope", SizeBytes: 1 << 31}},
		"unknown op":   {Op: "replace", Volume: Volume{Name: "disk", SizeBytes: 1 << 31}},
	} {
		if err := h.apply(TypeVolumePut, bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Growing keeps the roles; an update cannot sneak in a new primary.
	h.must(TypeVolumePut, VolumePutPayload{Op: OpUpdate, Volume: Volume{Name: "disk", SizeBytes: 2 << 30, Primary: "n-b", Generation: 9}})
	v, _ = h.d.Volume("disk")
	if v.SizeBytes != 2<<30 || v.Primary != "n-a" || v.Generation != 1 || v.ID != "v1" {
		t.Errorf("grown: %+v", v)
	}
}

func TestVolumeRoles(t *testing.T) {
	type step struct {
		name    string
		actor   string
		typ     Type
		payload any
		wantErr error
		// after the step
		primary string
		gen     uint64
		copies  map[string]CopyState
		discard bool
	}
	up, out := CopyUpToDate, CopyOutdated
	steps := []step{
		{name: "secondary cannot outdate the primary", actor: "member:n-b", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-a", State: out, Generation: 1}, wantErr: ErrRefused,
			primary: "n-a", gen: 1, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "primary at an old generation is refused", actor: "member:n-a", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-b", State: out, Generation: 0}, wantErr: ErrRefused,
			primary: "n-a", gen: 1, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "an admin cannot outdate a copy", actor: "admin", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-b", State: out, Generation: 1}, wantErr: ErrRefused,
			primary: "n-a", gen: 1, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "primary fences its peer", actor: "member:n-a", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-b", State: out, Generation: 1},
			primary: "n-a", gen: 1, copies: map[string]CopyState{"n-a": up, "n-b": out}},
		{name: "outdated copy is not promoted", actor: "admin", typ: TypeVolumePrimary,
			payload: VolumePrimaryPayload{Name: "disk", Member: "n-b"}, wantErr: ErrRefused,
			primary: "n-a", gen: 1, copies: map[string]CopyState{"n-a": up, "n-b": out}},
		{name: "resync done", actor: "member:n-a", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-b", State: up, Generation: 1},
			primary: "n-a", gen: 1, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "move to n-b", actor: "admin", typ: TypeVolumePrimary,
			payload: VolumePrimaryPayload{Name: "disk", Member: "n-b", ExpectedGeneration: 1},
			primary: "n-b", gen: 2, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "stale expected generation", actor: "admin", typ: TypeVolumePrimary,
			payload: VolumePrimaryPayload{Name: "disk", Member: "n-a", ExpectedGeneration: 1}, wantErr: ErrConflict,
			primary: "n-b", gen: 2, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "the old primary can no longer fence", actor: "member:n-a", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-b", State: out, Generation: 1}, wantErr: ErrRefused,
			primary: "n-b", gen: 2, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "witness holds no copy", actor: "admin", typ: TypeVolumePrimary,
			payload: VolumePrimaryPayload{Name: "disk", Member: "n-w"}, wantErr: ErrInvalid,
			primary: "n-b", gen: 2, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "new primary fences n-a", actor: "member:n-b", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-a", State: out, Generation: 2},
			primary: "n-b", gen: 2, copies: map[string]CopyState{"n-a": out, "n-b": up}},
		{name: "discard needs force", actor: "admin", typ: TypeVolumePrimary,
			payload: VolumePrimaryPayload{Name: "disk", Member: "n-a", Discard: true}, wantErr: ErrInvalid,
			primary: "n-b", gen: 2, copies: map[string]CopyState{"n-a": out, "n-b": up}},
		{name: "forced promotion of the outdated copy", actor: "admin", typ: TypeVolumePrimary,
			payload: VolumePrimaryPayload{Name: "disk", Member: "n-a", Force: true, Discard: true},
			primary: "n-a", gen: 3, copies: map[string]CopyState{"n-a": up, "n-b": out}, discard: true},
		{name: "the discarded copy caught up", actor: "member:n-a", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-b", State: up, Generation: 3},
			primary: "n-a", gen: 3, copies: map[string]CopyState{"n-a": up, "n-b": up}},
		{name: "bad state", actor: "member:n-a", typ: TypeVolumeCopy,
			payload: VolumeCopyPayload{Name: "disk", Member: "n-b", State: "maybe", Generation: 3}, wantErr: ErrInvalid,
			primary: "n-a", gen: 3, copies: map[string]CopyState{"n-a": up, "n-b": up}},
	}
	h := volumeHarness(t)
	for _, s := range steps {
		err := h.applyAs(s.actor, s.typ, s.payload)
		if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: error %v, want %v", s.name, err, s.wantErr)
		}
		v, _ := h.d.Volume("disk")
		if v.Primary != s.primary || v.Generation != s.gen || v.DiscardOthers != s.discard ||
			v.Copies["n-a"] != s.copies["n-a"] || v.Copies["n-b"] != s.copies["n-b"] {
			t.Fatalf("%s: volume %+v", s.name, v)
		}
	}
}

func TestVolumeInUseIsNotDeleted(t *testing.T) {
	h := volumeHarness(t)
	h.must(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: VM{Name: "web", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "disk"}}}})
	if err := h.apply(TypeVolumeDelete, NamePayload{Name: "disk"}); !errors.Is(err, ErrConflict) {
		t.Errorf("delete a VM's disk: %v", err)
	}
	h.must(TypeVMDelete, NamePayload{Name: "web"})
	h.must(TypeVolumeDelete, NamePayload{Name: "disk"})
	if _, ok := h.d.Volume("disk"); ok {
		t.Error("still there")
	}
}

func TestVMDefinitionsAreChecked(t *testing.T) {
	h := volumeHarness(t)
	h.must(TypeVolumePut, VolumePutPayload{Op: OpCreate, Volume: Volume{Name: "disk2", ID: "v2", SizeBytes: 1 << 20, Primary: "n-a", DataGeneration: 3}})
	good := VM{Name: "web", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "disk"}}, NICs: []VMNIC{{Network: "lan", MAC: "52:54:00:AA:BB:CC"}}}
	h.must(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: good})
	if vm, _ := h.d.VM("web"); vm.NICs[0].MAC != "52:54:00:aa:bb:cc" {
		t.Errorf("MAC kept as %q, want it normalised", vm.NICs[0].MAC)
	}
	for name, tc := range map[string]struct {
		vm   VM
		want error
	}{
		"no disk, no kernel": {VM{Name: "a", CPUs: 1, MemoryMiB: 64}, ErrInvalid},
		"missing volume":     {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "nope"}}}, ErrInvalid},
		"volume of another":  {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "disk"}}}, ErrConflict},
		"volume twice":       {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "disk2"}, {Volume: "disk2"}}}, ErrInvalid},
		"unknown network":    {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "disk2"}}, NICs: []VMNIC{{Network: "dmz", MAC: "52:54:00:00:00:01"}}}, ErrInvalid},
		"multicast MAC":      {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "disk2"}}, NICs: []VMNIC{{Network: "lan", MAC: "01:00:5e:00:00:01"}}}, ErrInvalid},
		"no MAC":             {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Disks: []VMDisk{{Volume: "disk2"}}, NICs: []VMNIC{{Network: "lan"}}}, ErrInvalid},
		"boot path escapes":  {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Boot: &VMBoot{Kernel: "../../etc/shadow"}}, ErrInvalid},
		"boot path absolute": {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Boot: &VMBoot{Kernel: "/boot/vmlinuz"}}, ErrInvalid},
		"zero memory":        {VM{Name: "a", CPUs: 1, Boot: &VMBoot{Kernel: "k"}}, ErrInvalid},
		"too many CPUs":      {VM{Name: "a", CPUs: 1000, MemoryMiB: 64, Boot: &VMBoot{Kernel: "k"}}, ErrInvalid},
		"witness as node":    {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Boot: &VMBoot{Kernel: "k"}, Node: "n-w"}, ErrInvalid},
		"running, no node":   {VM{Name: "a", CPUs: 1, MemoryMiB: 64, Boot: &VMBoot{Kernel: "k"}, Running: true}, ErrInvalid},
		"name clash":         {VM{Name: "web", CPUs: 1, MemoryMiB: 64, Boot: &VMBoot{Kernel: "k"}}, ErrExists},
	} {
		if err := h.apply(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: tc.vm}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestVolumeClone(t *testing.T) {
	h := volumeHarness(t)
	clone := func(name string, size int64, primary string) VolumePutPayload {
		return VolumePutPayload{Op: OpCreate, Volume: Volume{Name: name, ID: "id-" + name, SizeBytes: size, Primary: primary, DataGeneration: 9, CloneFrom: "disk"}}
	}
	for _, tc := range []struct {
		name    string
		payload VolumePutPayload
		want    error
	}{
		{"smaller than its source", clone("c1", 1<<29, "n-a"), ErrInvalid},
		{"not where its source is primary", clone("c1", 1<<30, "n-b"), ErrInvalid},
		{"of no volume", VolumePutPayload{Op: OpCreate, Volume: Volume{Name: "c1", ID: "x", SizeBytes: 1 << 30, Primary: "n-a", DataGeneration: 9, CloneFrom: "nope"}}, ErrNotFound},
	} {
		if err := h.apply(TypeVolumePut, tc.payload); !errors.Is(err, tc.want) {
			t.Errorf("clone %s: %v, want %v", tc.name, err, tc.want)
		}
	}
	h.must(TypeVolumePut, clone("web-disk", 2<<30, "n-a"))
	if v, _ := h.d.Volume("web-disk"); !v.Copying() || v.CloneFrom != "disk" {
		t.Fatalf("new clone: %+v", v)
	}
	// A clone of a clone waits for the first; the source stays.
	if err := h.apply(TypeVolumePut, VolumePutPayload{Op: OpCreate, Volume: Volume{Name: "c2", ID: "c2", SizeBytes: 2 << 30, Primary: "n-a", DataGeneration: 9, CloneFrom: "web-disk"}}); !errors.Is(err, ErrConflict) {
		t.Errorf("clone of a clone being copied: %v", err)
	}
	if err := h.apply(TypeVolumeDelete, NamePayload{Name: "disk"}); !errors.Is(err, ErrConflict) {
		t.Errorf("delete the source of a clone being copied: %v", err)
	}
	// Only the clone's primary, at its generation, records it done.
	done := VolumeClonedPayload{Name: "web-disk", ID: "id-web-disk", Generation: 1}
	for actor, want := range map[string]error{"member:n-b": ErrRefused, "admin": ErrRefused} {
		if err := h.applyAs(actor, TypeVolumeCloned, done); !errors.Is(err, want) {
			t.Errorf("cloned by %s: %v", actor, err)
		}
	}
	if err := h.applyAs("member:n-a", TypeVolumeCloned, VolumeClonedPayload{Name: "web-disk", ID: "other", Generation: 1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("cloned with another volume's ID: %v", err)
	}
	if err := h.applyAs("member:n-a", TypeVolumeCloned, done); err != nil {
		t.Fatal(err)
	}
	if v, _ := h.d.Volume("web-disk"); v.Copying() {
		t.Errorf("clone still copying after it was recorded done: %+v", v)
	}
	h.must(TypeVolumeDelete, NamePayload{Name: "disk"})
}
