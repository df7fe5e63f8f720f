package directory

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestProvisioningCheck(t *testing.T) {
	good := Provisioning{Enabled: true, Node: "node-a", Mode: ProvisionDHCP, Address: "192.168.77.1/24",
		RangeStart: "192.168.77.100", RangeEnd: "192.168.77.199"}
	tests := []struct {
		name  string
		edit  func(*Provisioning)
		field string // "" = valid
	}{
		{"valid", func(*Provisioning) {}, ""},
		{"proxy needs no range", func(p *Provisioning) { p.Mode, p.RangeStart, p.RangeEnd = ProvisionProxy, "", "" }, ""},
		{"unknown mode", func(p *Provisioning) { p.Mode = "static" }, "mode"},
		{"on without a node", func(p *Provisioning) { p.Node = "" }, "node"},
		{"address without prefix", func(p *Provisioning) { p.Address = "192.168.77.1" }, "address"},
		{"IPv6 address", func(p *Provisioning) { p.Address = "fd00::1/64" }, "address"},
		{"range outside the network", func(p *Provisioning) { p.RangeEnd = "192.168.78.5" }, "range_end"},
		{"range upside down", func(p *Provisioning) { p.RangeStart, p.RangeEnd = "192.168.77.200", "192.168.77.100" }, "range_end"},
		{"range holds the node", func(p *Provisioning) { p.RangeStart = "192.168.77.1" }, "range_start"},
		{"router outside", func(p *Provisioning) { p.Router = "10.0.0.1" }, "router"},
		{"bad DNS", func(p *Provisioning) { p.DNS = []string{"dns.example"} }, "dns"},
		{"lease too long", func(p *Provisioning) { p.LeaseSeconds = 30 * 24 * 3600 }, "lease_seconds"},
		{"reservation of a non-MAC", func(p *Provisioning) { p.Reservations = map[string]string{"node-c": "192.168.77.5"} }, "reservations"},
		{"one address reserved twice", func(p *Provisioning) {
			p.Reservations = map[string]string{"52:54:00:00:00:01": "192.168.77.5", "52:54:00:00:00:02": "192.168.77.5"}
		}, "reservations"},
		{"allowlist with a bad name", func(p *Provisioning) { p.AutoApprove = map[string]string{"52:54:00:00:00:01": "node c"} }, "auto_approve"},
	}
	for _, tt := range tests {
		p := good
		tt.edit(&p)
		err := p.Check()
		var fe *FieldError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid)):
			t.Errorf("%s: %v, want an invalid %s", tt.name, err, tt.field)
		}
	}
}

// TestMachineSequence walks a machine through its install: PXE, the
// installer's report, approval, the installer's steps, a failure and its
// retry, a reboot of the installer, and the join that ends it.
func TestMachineSequence(t *testing.T) {
	h := newHarness(t)
	h.init()
	const mac = "52:54:00:AA:00:01"
	key, other := strings.Repeat("a", 64), strings.Repeat("b", 64)
	inv := &MachineInventory{CPUs: 2, MemoryBytes: 2 << 30, Firmware: "uefi",
		Disks: []MachineDisk{{Name: "vda", SizeBytes: 8 << 30}}, NICs: []MachineNIC{{Name: "eth0", MAC: "52:54:00:aa:00:01", Link: true}}}
	token := &JoinToken{ID: "tok-m", Key: "k2", Expires: t0.Add(3 * time.Hour)}
	type step struct {
		name    string
		actor   string
		p       MachinePayload
		wantErr error
		state   string            // machine state after
		steps   map[string]string // step states after
	}
	steps := []step{
		{name: "approving an unknown machine", p: MachinePayload{Op: MachineOpApprove, MAC: mac, Name: "node-b", Token: token, TokenSecret: "s"}, wantErr: ErrNotFound},
		{name: "PXE answered", actor: "member:n-a", p: MachinePayload{Op: MachineOpPXE, MAC: mac, Firmware: "uefi", Output: "iPXE script"},
			state: MachineBooting, steps: map[string]string{StepPXE: StepDone, StepInstaller: StepPending}},
		{name: "a report without a key", p: MachinePayload{Op: MachineOpReport, MAC: mac, Inventory: inv}, wantErr: ErrInvalid},
		{name: "the installer reports", p: MachinePayload{Op: MachineOpReport, MAC: mac, KeyHash: key, Inventory: inv, Address: "192.168.77.100"},
			state: MachineDiscovered, steps: map[string]string{StepInstaller: StepDone, StepApproval: StepRunning}},
		{name: "no steps before approval", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: key, Step: StepDisk, State: StepRunning}, wantErr: ErrConflict,
			state: MachineDiscovered},
		{name: "approval needs a node name", p: MachinePayload{Op: MachineOpApprove, MAC: mac, Name: "node b", Token: token, TokenSecret: "s"}, wantErr: ErrInvalid},
		{name: "approved", p: MachinePayload{Op: MachineOpApprove, MAC: mac, Name: "node-b", Token: token, TokenSecret: "secret"},
			state: MachineApproved, steps: map[string]string{StepApproval: StepDone}},
		{name: "approved twice", p: MachinePayload{Op: MachineOpApprove, MAC: mac, Name: "node-b", Token: token, TokenSecret: "secret"}, wantErr: ErrConflict, state: MachineApproved},
		{name: "another key's step", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: other, Step: StepDisk, State: StepRunning}, wantErr: ErrRefused},
		{name: "a step the directory owns", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: key, Step: StepJoin, State: StepDone}, wantErr: ErrInvalid},
		{name: "disk", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: key, Step: StepDisk, State: StepDone, Output: "vda 8 GiB"},
			state: MachineInstalling, steps: map[string]string{StepDisk: StepDone}},
		{name: "download fails", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: key, Step: StepDownload, State: StepFailed, Error: "unexpected EOF"},
			state: MachineFailed, steps: map[string]string{StepDownload: StepFailed}},
		{name: "retry", p: MachinePayload{Op: MachineOpRetry, MAC: mac},
			state: MachineApproved, steps: map[string]string{StepDisk: StepDone, StepDownload: StepPending}},
		{name: "the installer rebooted: it carries on, approved", p: MachinePayload{Op: MachineOpReport, MAC: mac, KeyHash: other, Inventory: inv},
			state: MachineApproved, steps: map[string]string{StepApproval: StepDone, StepDisk: StepPending}},
		{name: "the old installer's key no longer counts", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: key, Step: StepDisk, State: StepDone}, wantErr: ErrRefused},
		{name: "steps to the reboot", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: other, Step: StepSeal, State: StepDone},
			state: MachineInstalling, steps: map[string]string{StepSeal: StepDone}},
		{name: "reboot", p: MachinePayload{Op: MachineOpStep, MAC: mac, KeyHash: other, Step: StepReboot, State: StepDone},
			state: MachineInstalled, steps: map[string]string{StepReboot: StepDone, StepJoin: StepRunning}},
	}
	for _, s := range steps {
		actor := s.actor
		if actor == "" {
			actor = "admin"
		}
		err := h.applyAs(actor, TypeMachine, s.p)
		if (s.wantErr == nil) != (err == nil) || (s.wantErr != nil && !errors.Is(err, s.wantErr)) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.wantErr)
		}
		m, _ := h.d.Machine(mac)
		if s.state != "" && m.State != s.state {
			t.Fatalf("%s: machine is %s, want %s (%s)", s.name, m.State, s.state, m.Error)
		}
		for name, want := range s.steps {
			if got, _ := m.Step(name); got.State != want {
				t.Fatalf("%s: step %s is %s, want %s", s.name, name, got.State, want)
			}
		}
	}
	m, _ := h.d.Machine(mac)
	if m.JoinToken != "secret" || m.Name != "node-b" || m.Boots != 2 || m.Error != "" {
		t.Errorf("machine before the join: %+v", m)
	}
	if _, ok := h.d.Token("tok-m"); !ok {
		t.Error("the approval made no join token")
	}
	// The node joins: the sequence ends and the token is dropped.
	h.must(TypeMemberJoin, MemberJoinPayload{Member: Member{ID: "n-b", Name: "node-b", Role: MemberNode}, TokenID: "tok-m",
		Nonce: "n1", NonceExpires: h.now.Add(time.Minute)})
	m, _ = h.d.Machine(mac)
	if js, _ := m.Step(StepJoin); m.State != MachineJoined || js.State != StepDone || m.JoinToken != "" {
		t.Errorf("after the join: %s, join step %+v, token kept %v", m.State, js, m.JoinToken != "")
	}
	// Booting the installer again after that starts over at discovery.
	if err := h.apply(TypeMachine, MachinePayload{Op: MachineOpReport, MAC: mac, KeyHash: key, Inventory: inv}); err != nil {
		t.Fatal(err)
	}
	m, _ = h.d.Machine(mac)
	if m.State != MachineDiscovered || !m.Approved.IsZero() {
		t.Errorf("an installed node booted the installer again: %s (approved %v)", m.State, m.Approved)
	}
	h.must(TypeMachine, MachinePayload{Op: MachineOpForget, MAC: mac})
	if _, ok := h.d.Machine(mac); ok {
		t.Error("a forgotten machine is still known")
	}
}

// TestMachinePXERefusedAndAllowlist: an unknown architecture fails the
// pxe step with the server's reason; the allowlist approves a machine as
// its installer reports.
func TestMachinePXERefusedAndAllowlist(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(TypeMachine, MachinePayload{Op: MachineOpPXE, MAC: "52:54:00:aa:00:02", Error: "client architecture 6 (x86 UEFI, 32-bit) is not supported"})
	m, _ := h.d.Machine("52:54:00:aa:00:02")
	if s, _ := m.Step(StepPXE); m.State != MachineFailed || s.State != StepFailed || !strings.Contains(m.Error, "architecture 6") {
		t.Errorf("refused PXE: %s %+v %q", m.State, s, m.Error)
	}
	h.must(TypeProvisioning, Provisioning{Enabled: true, Node: "node-a", Mode: ProvisionProxy, Address: "192.168.77.1/24",
		AutoApprove: map[string]string{"52:54:00:aa:00:03": "node-c"}})
	inv := &MachineInventory{CPUs: 1, Firmware: "bios"}
	h.must(TypeMachine, MachinePayload{Op: MachineOpReport, MAC: "52:54:00:aa:00:03", KeyHash: strings.Repeat("c", 64), Inventory: inv,
		Name: "node-c", Token: &JoinToken{ID: "tok-c", Key: "k", Expires: t0.Add(time.Hour)}, TokenSecret: "s"})
	m, _ = h.d.Machine("52:54:00:aa:00:03")
	if m.State != MachineApproved || m.Name != "node-c" || m.ApprovedBy != "admin" {
		t.Errorf("allowlisted machine: %s as %q by %q", m.State, m.Name, m.ApprovedBy)
	}
	// A name on the allowlist is not another name.
	h.must(TypeMachine, MachinePayload{Op: MachineOpReport, MAC: "52:54:00:aa:00:04", KeyHash: strings.Repeat("d", 64), Inventory: inv,
		Name: "node-c", Token: &JoinToken{ID: "tok-d", Key: "k", Expires: t0.Add(time.Hour)}, TokenSecret: "s"})
	if m, _ := h.d.Machine("52:54:00:aa:00:04"); m.State != MachineDiscovered {
		t.Errorf("a machine off the allowlist: %s", m.State)
	}
}
