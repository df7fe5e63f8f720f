package directory

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// harness applies commands to a directory the way raft would.
type harness struct {
	t     *testing.T
	d     *Directory
	index uint64
	now   time.Time
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, d: New(), now: t0}
}

func (h *harness) apply(typ Type, payload any) error {
	h.t.Helper()
	return h.applyAs("admin", typ, payload)
}

func (h *harness) applyAs(actor string, typ Type, payload any) error {
	h.t.Helper()
	h.index++
	h.now = h.now.Add(time.Second)
	data, err := Encode(typ, Envelope{Actor: actor, From: "192.0.2.9", Time: h.now}, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	res := h.d.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}).(Result)
	if res.Index != h.index {
		h.t.Fatalf("result index %d, want %d", res.Index, h.index)
	}
	return res.Err
}

func (h *harness) must(typ Type, payload any) {
	h.t.Helper()
	if err := h.apply(typ, payload); err != nil {
		h.t.Fatalf("%v: %v", typ, err)
	}
}

func (h *harness) init() {
	h.t.Helper()
	h.must(TypeInit, InitPayload{
		Cluster: Cluster{ID: "c1", CAFingerprint: "ff"},
		Admin:   User{Name: "admin", Role: RoleAdmin, PasswordHash: "$argon2id$x"},
		Member:  Member{ID: "n-a", Name: "node-a", Role: MemberNode},
		Token:   JoinToken{ID: "tok1", Key: "k", Expires: t0.Add(time.Hour)},
	})
}

func TestInitOnlyOnce(t *testing.T) {
	h := newHarness(t)
	h.init()
	c, ok := h.d.Cluster()
	if !ok || c.ID != "c1" || !c.Created.Equal(t0.Add(time.Second)) {
		t.Errorf("cluster %+v", c)
	}
	err := h.apply(TypeInit, InitPayload{Cluster: Cluster{ID: "c2"}, Admin: User{Name: "x", Role: RoleAdmin, PasswordHash: "h"}, Member: Member{ID: "m"}, Token: JoinToken{ID: "t"}})
	if !errors.Is(err, ErrExists) {
		t.Errorf("second init: %v", err)
	}
}

func TestUsers(t *testing.T) {
	h := newHarness(t)
	h.init()
	tests := []struct {
		name string
		typ  Type
		p    any
		want error
	}{
		{"create", TypeUserPut, UserPutPayload{Op: OpCreate, User: User{Name: "ops", Role: RoleOperator, PasswordHash: "h"}}, nil},
		{"create twice", TypeUserPut, UserPutPayload{Op: OpCreate, User: User{Name: "ops", Role: RoleOperator, PasswordHash: "h"}}, ErrExists},
		{"update missing", TypeUserPut, UserPutPayload{Op: OpUpdate, User: User{Name: "nobody", Role: RoleViewer, PasswordHash: "h"}}, ErrNotFound},
		{"bad role", TypeUserPut, UserPutPayload{Op: OpCreate, User: User{Name: "v", Role: "root", PasswordHash: "h"}}, ErrInvalid},
		{"bad name", TypeUserPut, UserPutPayload{Op: OpCreate, User: User{Name: "<script>", Role: RoleViewer, PasswordHash: "h"}}, ErrInvalid},
		{"no password", TypeUserPut, UserPutPayload{Op: OpCreate, User: User{Name: "np", Role: RoleViewer}}, ErrInvalid},
		{"update keeps password", TypeUserPut, UserPutPayload{Op: OpUpdate, User: User{Name: "ops", Role: RoleViewer}}, nil},
		{"demote last admin", TypeUserPut, UserPutPayload{Op: OpUpdate, User: User{Name: "admin", Role: RoleViewer}}, ErrRefused},
		{"disable last admin", TypeUserPut, UserPutPayload{Op: OpUpdate, User: User{Name: "admin", Role: RoleAdmin, Disabled: true}}, ErrRefused},
		{"delete last admin", TypeUserDelete, NamePayload{Name: "admin"}, ErrRefused},
		{"second admin", TypeUserPut, UserPutPayload{Op: OpUpsert, User: User{Name: "root2", Role: RoleAdmin, PasswordHash: "h"}}, nil},
		{"now delete the first", TypeUserDelete, NamePayload{Name: "admin"}, nil},
		{"delete missing", TypeUserDelete, NamePayload{Name: "admin"}, ErrNotFound},
	}
	for _, tt := range tests {
		err := h.apply(tt.typ, tt.p)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	u, _ := h.d.User("ops")
	if u.Role != RoleViewer || u.PasswordHash != "h" || !u.Created.Before(u.Updated) {
		t.Errorf("user after update: %+v", u)
	}
}

func TestJoinTokensNoncesAndReplacement(t *testing.T) {
	h := newHarness(t)
	h.init()
	join := func(id, name, nonce, replaces string) error {
		return h.apply(TypeMemberJoin, MemberJoinPayload{
			Member: Member{ID: id, Name: name, Role: MemberNode}, TokenID: "tok1",
			Nonce: nonce, NonceExpires: h.now.Add(10 * time.Minute), Replaces: replaces,
		})
	}
	if err := join("n-b", "node-b", "nonce1", ""); err != nil {
		t.Fatal(err)
	}
	if err := join("n-c", "node-c", "nonce1", ""); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "replayed") {
		t.Errorf("replayed nonce: %v", err)
	}
	if err := join("n-b", "node-b2", "nonce2", ""); !errors.Is(err, ErrExists) {
		t.Errorf("same ID twice: %v", err)
	}
	if err := join("n-x", "node-b", "nonce3", ""); !errors.Is(err, ErrExists) {
		t.Errorf("taking another's name: %v", err)
	}
	// node-b's disk was wiped: it comes back with a new ID and replaces itself.
	if err := join("n-b2", "node-b", "nonce4", "n-b"); err != nil {
		t.Fatalf("rejoin after wipe: %v", err)
	}
	if _, ok := h.d.Member("n-b"); ok {
		t.Error("the replaced member is still there")
	}
	if m, ok := h.d.MemberByName("node-b"); !ok || m.ID != "n-b2" {
		t.Errorf("node-b is %+v", m)
	}
	// An expired token is refused.
	h.now = t0.Add(2 * time.Hour)
	if err := join("n-w", "witness", "nonce5", ""); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	if err := h.apply(TypeMemberJoin, MemberJoinPayload{Member: Member{ID: "z", Name: "z", Role: MemberNode}, TokenID: "nope", Nonce: "n"}); !errors.Is(err, ErrRefused) {
		t.Errorf("unknown token: %v", err)
	}
}

func TestVMGenerations(t *testing.T) {
	h := newHarness(t)
	vm := VM{Name: "web", CPUs: 1, MemoryMiB: 256, Boot: &VMBoot{Kernel: "testguest/vmlinux"}}
	h.must(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: vm})
	vm.CPUs = 2
	h.must(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpUpdate, ExpectedGeneration: 1}, VM: vm})
	if err := h.apply(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpUpdate, ExpectedGeneration: 1}, VM: vm}); !errors.Is(err, ErrConflict) {
		t.Errorf("stale generation: %v", err)
	}
	got, _ := h.d.VM("web")
	if got.Generation != 2 || got.CPUs != 2 {
		t.Errorf("vm %+v", got)
	}
	for _, bad := range []VM{{Name: "x", CPUs: 0, MemoryMiB: 256}, {Name: "x", CPUs: 1, MemoryMiB: 1}, {Name: "../x", CPUs: 1, MemoryMiB: 64},
		{Name: "x", CPUs: 1, MemoryMiB: 64, Description: strings.Repeat("d", 5000)}} {
		if err := h.apply(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad VM %+v: %v", bad, err)
		}
	}
	h.must(TypeVMDelete, NamePayload{Name: "web"})
	if err := h.apply(TypeVMDelete, NamePayload{Name: "web"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
}

func TestIPOwnerRefusesOlderTerm(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(TypeIPOwner, IPOwnerPayload{MemberID: "n-a", Term: 5})
	if err := h.apply(TypeIPOwner, IPOwnerPayload{MemberID: "n-b", Term: 4}); !errors.Is(err, ErrRefused) {
		t.Errorf("older term: %v", err)
	}
	h.must(TypeIPOwner, IPOwnerPayload{MemberID: "n-b", Term: 6})
	c, _ := h.d.Cluster()
	if c.IPOwner.MemberID != "n-b" || c.IPOwner.Term != 6 {
		t.Errorf("owner %+v", c.IPOwner)
	}
}

func TestAuditRecordsChangesAndRefusals(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(TypeLabelSet, LabelPayload{Key: "site", Value: "shanghai"})
	h.must(TypeAudit, AuditPayload{Action: "member.join", Target: "evil", Result: "refused: wrong token", Detail: "from 192.0.2.66"})
	_ = h.apply(TypeUserDelete, NamePayload{Name: "nobody"}) // a failed command leaves no line
	got := h.d.Audit(0, 0)
	var lines []string
	for _, e := range got {
		lines = append(lines, e.Action+" "+e.Target+" "+e.Result)
	}
	want := []string{"cluster.init c1 ok", "label.set site ok", "member.join evil refused: wrong token"}
	if d := cmp.Diff(want, lines); d != "" {
		t.Errorf("audit (-want +got):\n%s", d)
	}
	if got[1].Actor != "admin" || got[1].From != "192.0.2.9" || got[1].Index != 2 {
		t.Errorf("audit line %+v", got[1])
	}
	if since := h.d.Audit(2, 0); len(since) != 1 || since[0].Index != 3 {
		t.Errorf("audit since 2: %+v", since)
	}
}

func TestAuditIsBounded(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < maxAudit+10; i++ {
		h.must(TypeAudit, AuditPayload{Action: "x", Result: "ok"})
	}
	n := len(h.d.Audit(0, 0))
	if n > maxAudit || n < maxAudit*9/10 {
		t.Errorf("%d audit lines kept", n)
	}
}

func TestUnknownTypes(t *testing.T) {
	h := newHarness(t)
	if err := h.apply(Type(99), struct{}{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown type: %v", err)
	}
	if err := h.apply(IgnoreUnknown|Type(99), struct{}{}); err != nil {
		t.Errorf("unknown ignorable type: %v", err)
	}
	data, _ := Encode(TypeLabelSet, Envelope{V: 2, Time: t0}, LabelPayload{Key: "a", Value: "b"})
	if res := h.d.Apply(&raft.Log{Index: 9, Data: data}).(Result); !errors.Is(res.Err, ErrInvalid) {
		t.Errorf("payload version 2: %v", res.Err)
	}
	if res := h.d.Apply(&raft.Log{Index: 10, Data: []byte{byte(TypeLabelSet)}}).(Result); res.Err == nil {
		t.Error("truncated command applied")
	}
	if h.d.AppliedIndex() != 10 {
		t.Errorf("applied index %d after failed commands, want 10", h.d.AppliedIndex())
	}
}

// sink is an in-memory raft.SnapshotSink.
type sink struct {
	bytes.Buffer
	cancelled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { return nil }

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: VM{Name: "db", CPUs: 2, MemoryMiB: 1024, HA: true, Boot: &VMBoot{Kernel: "k"}}})
	h.must(TypeSettingsSet, SettingsPayload{Set: map[string]string{"cluster.ip": "10.0.0.100/24"}})
	h.must(TypeTemplatePut, TemplatePutPayload{Template: Template{Name: "mariadb", App: "mariadb", CPUs: 1, MemoryMiB: 512, DiskGiB: 8}})
	h.must(TypeAlertPut, AlertPutPayload{Rule: AlertRule{Name: "cpu", Metric: "node.cpu", Op: ">", Threshold: 0.9, Severity: "warning", Enabled: true}})

	snap, err := h.d.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the snapshot are not in it.
	h.must(TypeVMDelete, NamePayload{Name: "db"})
	var s sink
	if err := snap.Persist(&s); err != nil || s.cancelled {
		t.Fatalf("persist: %v", err)
	}
	fresh := New()
	events, stop := fresh.Subscribe(1)
	defer stop()
	if err := fresh.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	if e := <-events; e.Type != "restore" {
		t.Errorf("event %+v", e)
	}
	if _, ok := fresh.VM("db"); !ok {
		t.Error("VM lost in the round trip")
	}
	if d := cmp.Diff(h.d.Users(), fresh.Users()); d != "" {
		t.Errorf("users (-orig +restored):\n%s", d)
	}
	if fresh.Settings()["cluster.ip"] != "10.0.0.100/24" || len(fresh.Templates()) != 1 || len(fresh.AlertRules()) != 1 {
		t.Error("settings, templates or alert rules lost")
	}
	if fresh.AppliedIndex() != 5 || len(fresh.Audit(0, 0)) != 5 {
		t.Errorf("index %d, audit %d", fresh.AppliedIndex(), len(fresh.Audit(0, 0)))
	}
	// The restored directory applies commands like the original.
	h2 := &harness{t: t, d: fresh, index: 6, now: h.now}
	h2.must(TypeLabelSet, LabelPayload{Key: "k", Value: "v"})
}

func TestRestoreRefusesOtherFormats(t *testing.T) {
	d := New()
	for _, in := range []string{"", "{}\n", `{"format":"tandem-directory","version":2}` + "\n{}", `{"format":"x","version":1}` + "\n{}"} {
		if err := d.Restore(io.NopCloser(strings.NewReader(in))); err == nil {
			t.Errorf("restored %q", in)
		}
	}
}

func TestEventsReachSubscribers(t *testing.T) {
	h := newHarness(t)
	ch, stop := h.d.Subscribe(4)
	h.must(TypeLabelSet, LabelPayload{Key: "a", Value: "1"})
	if e := <-ch; e.Type != "label.set" || e.Target != "a" || e.Index != 1 {
		t.Errorf("event %+v", e)
	}
	stop()
	if _, open := <-ch; open {
		t.Error("channel open after stop")
	}
}

func FuzzApply(f *testing.F) {
	for _, seed := range []struct {
		t Type
		p any
	}{
		{TypeLabelSet, LabelPayload{Key: "a", Value: "b"}},
		{TypeVMPut, VMPutPayload{Op: VMOp{Op: OpCreate}, VM: VM{Name: "x", CPUs: 1, MemoryMiB: 64, Boot: &VMBoot{Kernel: "k"}}}},
		{TypeMemberJoin, MemberJoinPayload{Member: Member{ID: "m", Name: "m", Role: MemberNode}, TokenID: "t", Nonce: "n"}},
	} {
		data, _ := Encode(seed.t, Envelope{Time: t0}, seed.p)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := New()
		// Whatever the bytes, the directory answers and stays usable.
		if _, ok := d.Apply(&raft.Log{Index: 1, Data: data}).(Result); !ok || d.AppliedIndex() != 1 {
			t.Fatalf("applied index %d", d.AppliedIndex())
		}
		snap, err := d.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var s sink
		if err := snap.Persist(&s); err != nil {
			t.Fatal(err)
		}
		if err := New().Restore(io.NopCloser(&s)); err != nil {
			t.Fatalf("restore of a fuzzed state: %v", err)
		}
	})
}
