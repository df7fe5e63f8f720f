package directory

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Provisioning is the admin's switch for installing new nodes over the
// network, and the provisioning network's plan. The node named by Node
// serves it on its board's provisioning interface.
type Provisioning struct {
	Enabled bool   `json:"enabled"`
	Node    string `json:"node"` // member name of the serving node
	// Mode is "dhcp" (Tandem hands out addresses from the range) or
	// "proxy" (the site's DHCP server does; Tandem adds only the boot
	// information).
	Mode string `json:"mode"`
	// Address is the serving node's address on the provisioning network,
	// with its prefix length (192.168.77.1/24).
	Address      string            `json:"address"`
	RangeStart   string            `json:"range_start,omitempty"`
	RangeEnd     string            `json:"range_end,omitempty"`
	Router       string            `json:"router,omitempty"`
	DNS          []string          `json:"dns,omitempty"`
	LeaseSeconds int               `json:"lease_seconds,omitempty"`
	Reservations map[string]string `json:"reservations,omitempty"` // MAC -> IPv4 address
	// AutoApprove approves these machines as soon as their installer
	// reports, as the node named (MAC -> name).
	AutoApprove map[string]string `json:"auto_approve,omitempty"`
	Updated     time.Time         `json:"updated"`
	UpdatedBy   string            `json:"updated_by,omitempty"`
}

// Provisioning modes.
const (
	ProvisionDHCP  = "dhcp"
	ProvisionProxy = "proxy"
)

// Check validates the plan; errors name the field.
func (p Provisioning) Check() error {
	bad := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Err: fmt.Errorf(format+": %w", append(args, ErrInvalid)...)}
	}
	if p.Mode != ProvisionDHCP && p.Mode != ProvisionProxy {
		return bad("mode", "mode %q: want dhcp or proxy", p.Mode)
	}
	if p.Enabled && p.Node == "" {
		return bad("node", "which node serves the provisioning network? name it")
	}
	if p.Node != "" {
		if err := checkName("member", p.Node); err != nil {
			return &FieldError{Field: "node", Err: err}
		}
	}
	pfx, err := netip.ParsePrefix(p.Address)
	if err != nil || !pfx.Addr().Is4() || pfx.Bits() < 8 || pfx.Bits() > 30 {
		return bad("address", "address %q: want this node's IPv4 address with a prefix length of 8 to 30, e.g. 192.168.77.1/24", p.Address)
	}
	subnet := pfx.Masked()
	inNet := func(field, s string) (netip.Addr, error) {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || !subnet.Contains(a) {
			return netip.Addr{}, bad(field, "%q: want an IPv4 address in %v", s, subnet)
		}
		return a, nil
	}
	if p.Mode == ProvisionDHCP {
		start, err := inNet("range_start", p.RangeStart)
		if err != nil {
			return err
		}
		end, err := inNet("range_end", p.RangeEnd)
		if err != nil {
			return err
		}
		if end.Less(start) {
			return bad("range_end", "range %v-%v is upside down", start, end)
		}
		if !pfx.Addr().Less(start) && !end.Less(pfx.Addr()) {
			return bad("range_start", "the range %v-%v holds the node's own address %v", start, end, pfx.Addr())
		}
	}
	if p.Router != "" {
		if _, err := inNet("router", p.Router); err != nil {
			return err
		}
	}
	for _, d := range p.DNS {
		if a, err := netip.ParseAddr(d); err != nil || !a.Is4() {
			return bad("dns", "%q: want IPv4 addresses", d)
		}
	}
	if p.LeaseSeconds < 0 || p.LeaseSeconds > 7*24*3600 {
		return bad("lease_seconds", "%d: want 0 (one hour) up to a week", p.LeaseSeconds)
	}
	taken := map[netip.Addr]string{}
	for mac, ip := range p.Reservations {
		if _, err := net.ParseMAC(mac); err != nil {
			return bad("reservations", "%q is not a MAC address", mac)
		}
		a, err := inNet("reservations", ip)
		if err != nil {
			return err
		}
		if other, ok := taken[a]; ok {
			return bad("reservations", "%v is reserved for both %s and %s", a, other, mac)
		}
		taken[a] = mac
	}
	for mac, name := range p.AutoApprove {
		if _, err := net.ParseMAC(mac); err != nil {
			return bad("auto_approve", "%q is not a MAC address", mac)
		}
		if err := checkName("node", name); err != nil {
			return &FieldError{Field: "auto_approve", Err: err}
		}
	}
	return nil
}

// FieldError is an invalid value and the field it was in.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Machine is a machine on the provisioning network, from its first PXE
// boot to the node it becomes: its hardware, whether an admin approved
// it, and its install sequence.
type Machine struct {
	MAC       string            `json:"mac"` // of the interface it booted from
	State     string            `json:"state"`
	Name      string            `json:"name,omitempty"`     // the node name it is installed as
	Firmware  string            `json:"firmware,omitempty"` // bios or uefi
	Address   string            `json:"address,omitempty"`  // its installer's address
	Inventory *MachineInventory `json:"inventory,omitempty"`
	// KeyHash is the SHA-256 (hex) of the key its installer made at boot:
	// only that installer may report its steps and get its join token.
	KeyHash string `json:"key_hash,omitempty"`
	Boots   int    `json:"boots"` // installer boots seen
	// JoinToken is the join token handed to its installer once approved
	// (the API never shows it).
	JoinToken  string    `json:"join_token,omitempty"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	Approved   time.Time `json:"approved,omitzero"`
	Steps      []Step    `json:"steps"`
	Error      string    `json:"error,omitempty"` // why it failed
	FirstSeen  time.Time `json:"first_seen"`
	Updated    time.Time `json:"updated"`
}

// Machine states.
const (
	MachineBooting    = "booting"    // PXE-booting, its installer not heard from yet
	MachineDiscovered = "discovered" // its installer reported; waiting for approval
	MachineApproved   = "approved"   // approved; the installer starts
	MachineInstalling = "installing"
	MachineInstalled  = "installed" // written and rebooting into its own disk
	MachineJoined     = "joined"    // a member of the cluster
	MachineFailed     = "failed"    // a step failed: see Error; retry
)

// Step is one step of a machine's install sequence.
type Step struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	Started  time.Time `json:"started,omitzero"`
	Ended    time.Time `json:"ended,omitzero"`
	Output   string    `json:"output,omitempty"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
}

// Step states.
const (
	StepPending = "pending"
	StepRunning = "running"
	StepDone    = "done"
	StepFailed  = "failed"
)

// The install sequence, in order. The provisioning server reports pxe,
// the installer installer and disk to reboot, the directory itself
// approval (an admin) and join (the node joins as a member).
const (
	StepPXE       = "pxe"       // DHCP answered with the boot program
	StepInstaller = "installer" // the installer booted and reported the hardware
	StepApproval  = "approval"  // an admin (or the allowlist) approved it
	StepDisk      = "disk"      // the target disk, picked by the board's rules
	StepDownload  = "download"  // the image's files, fetched and checked by SHA-256
	StepWipe      = "wipe"      // the disk's old partition tables and boot code removed
	StepWrite     = "write"     // ESP, slot A and GRUB written
	StepVerify    = "verify"    // read back and compared by SHA-256
	StepData      = "data"      // the data partition made, the node's name and join token on it
	StepSeal      = "seal"      // boot code and partition table written: bootable
	StepReboot    = "reboot"    // rebooting into the installed firmware
	StepJoin      = "join"      // the node is a member
)

// InstallSteps is the sequence every machine goes through.
func InstallSteps() []string {
	return []string{StepPXE, StepInstaller, StepApproval, StepDisk, StepDownload, StepWipe, StepWrite,
		StepVerify, StepData, StepSeal, StepReboot, StepJoin}
}

// InstallerSteps are those the installer itself reports.
func InstallerSteps() []string {
	return []string{StepDisk, StepDownload, StepWipe, StepWrite, StepVerify, StepData, StepSeal, StepReboot}
}

// MachineInventory is what the installer found on a machine.
type MachineInventory struct {
	Vendor       string        `json:"vendor,omitempty"`
	Product      string        `json:"product,omitempty"`
	Serial       string        `json:"serial,omitempty"`
	CPUModel     string        `json:"cpu_model,omitempty"`
	CPUs         int           `json:"cpus"`
	MemoryBytes  int64         `json:"memory_bytes"`
	Firmware     string        `json:"firmware"` // bios or uefi
	Disks        []MachineDisk `json:"disks"`
	NICs         []MachineNIC  `json:"nics"`
	ImageVersion string        `json:"image_version,omitempty"` // of the installer
}

// MachineDisk is one disk of a machine.
type MachineDisk struct {
	Name      string `json:"name"` // vda, sda, nvme0n1
	SizeBytes int64  `json:"size_bytes"`
	Model     string `json:"model,omitempty"`
	Serial    string `json:"serial,omitempty"`
	Driver    string `json:"driver,omitempty"`
	PCIPath   string `json:"pci_path,omitempty"`
	Removable bool   `json:"removable,omitempty"`
}

// MachineNIC is one network interface of a machine.
type MachineNIC struct {
	Name      string `json:"name"`
	MAC       string `json:"mac"`
	Driver    string `json:"driver,omitempty"`
	PCIPath   string `json:"pci_path,omitempty"`
	Link      bool   `json:"link"`
	SpeedMbps int    `json:"speed_mbps,omitempty"`
}

// Machine operations, in MachinePayload.Op.
const (
	MachineOpPXE     = "pxe"     // the provisioning server answered (or refused) a PXE boot
	MachineOpReport  = "report"  // the installer booted and reports the hardware
	MachineOpApprove = "approve" // an admin approves it as a named node
	MachineOpStep    = "step"    // the installer reports a step
	MachineOpRetry   = "retry"   // an admin retries the failed step
	MachineOpForget  = "forget"  // an admin removes the machine
)

// MachinePayload changes a machine.
type MachinePayload struct {
	Op  string `json:"op"`
	MAC string `json:"mac"`
	// pxe
	Firmware string `json:"firmware,omitempty"`
	// pxe and step: what happened
	Step   string `json:"step,omitempty"`
	State  string `json:"state,omitempty"`
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
	// report and step: the installer's key
	KeyHash   string            `json:"key_hash,omitempty"`
	Address   string            `json:"address,omitempty"`
	Inventory *MachineInventory `json:"inventory,omitempty"`
	// approve (and report, when the allowlist approves): the node's name
	// and the join token made for it
	Name  string     `json:"name,omitempty"`
	Token *JoinToken `json:"token,omitempty"`
	// TokenSecret is the token as the installer gets it.
	TokenSecret string `json:"token_secret,omitempty"`
}

// Limits on what a machine's records hold.
const (
	maxMachines   = 256
	maxStepOutput = 4096
)

// CanonicalMAC returns the MAC in the form the directory keys machines
// by (lower case, colons), or an error.
func CanonicalMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q is not an Ethernet MAC address: %w", s, ErrInvalid)
	}
	return hw.String(), nil
}

func (d *Directory) applyProvisioningSet(index uint64, env Envelope) func(Provisioning) (string, error) {
	return func(p Provisioning) (string, error) {
		if err := p.Check(); err != nil {
			return "", err
		}
		p.Updated, p.UpdatedBy = env.Time, env.Actor
		d.s.Provisioning = &p
		state := "off"
		if p.Enabled {
			state = "on, served by " + p.Node + " in " + p.Mode + " mode"
		}
		d.audit(index, env, "provisioning.set", p.Node, "ok", state)
		return "provisioning", nil
	}
}

func (d *Directory) applyMachine(index uint64, env Envelope) func(MachinePayload) (string, error) {
	return func(p MachinePayload) (string, error) {
		mac, err := CanonicalMAC(p.MAC)
		if err != nil {
			return "", err
		}
		for _, t := range []struct{ field, s string }{{"output", p.Output}, {"error", p.Error}} {
			if err := checkText(t.field, t.s, maxStepOutput); err != nil {
				return "", err
			}
		}
		old, exists := d.s.Machines[mac]
		var m Machine
		if exists {
			m = *old
			m.Steps = slices.Clone(old.Steps)
		} else {
			if p.Op != MachineOpPXE && p.Op != MachineOpReport {
				return "", fmt.Errorf("machine %s: %w", mac, ErrNotFound)
			}
			if len(d.s.Machines) >= maxMachines {
				return "", fmt.Errorf("%d machines are known already: forget some: %w", maxMachines, ErrRefused)
			}
			m = Machine{MAC: mac, State: MachineBooting, FirstSeen: env.Time}
			for _, s := range InstallSteps() {
				m.Steps = append(m.Steps, Step{Name: s, State: StepPending})
			}
		}
		switch p.Op {
		case MachineOpPXE:
			err = d.machinePXE(&m, p, env)
		case MachineOpReport:
			err = d.machineReport(index, &m, p, env)
		case MachineOpApprove:
			err = d.machineApprove(index, &m, p, env)
		case MachineOpStep:
			err = machineStep(&m, p, env)
		case MachineOpRetry:
			err = machineRetry(&m, env)
		case MachineOpForget:
			delete(d.s.Machines, mac)
			d.audit(index, env, "machine.forget", mac, "ok", m.Name)
			return mac, nil
		default:
			err = fmt.Errorf("machine op %q: %w", p.Op, ErrInvalid)
		}
		if err != nil {
			return "", err
		}
		m.Updated = env.Time
		d.s.Machines[mac] = &m
		return mac, nil
	}
}

// step returns the machine's step of that name.
func (m *Machine) step(name string) *Step {
	for i := range m.Steps {
		if m.Steps[i].Name == name {
			return &m.Steps[i]
		}
	}
	return nil
}

// Step returns the machine's step of that name.
func (m Machine) Step(name string) (Step, bool) {
	if s := m.step(name); s != nil {
		return *s, true
	}
	return Step{}, false
}

// setStep moves a step to a state at t, with what it said.
func (m *Machine) setStep(name, state, output, errText string, t time.Time) {
	s := m.step(name)
	if s == nil {
		return
	}
	if state == StepRunning && s.State != StepRunning {
		s.Started, s.Ended = t, time.Time{}
		s.Attempts++
		s.Output, s.Error = "", ""
	}
	if state == StepDone || state == StepFailed {
		if s.Started.IsZero() {
			s.Started = t
			s.Attempts++
		}
		s.Ended = t
	}
	s.State = state
	if output != "" {
		s.Output = output
	}
	s.Error = errText
}

// resetFrom sets the named step and every one after it back to pending.
func (m *Machine) resetFrom(name string) {
	on := false
	for i := range m.Steps {
		on = on || m.Steps[i].Name == name
		if on {
			m.Steps[i] = Step{Name: m.Steps[i].Name, State: StepPending, Attempts: m.Steps[i].Attempts}
		}
	}
}

func (d *Directory) machinePXE(m *Machine, p MachinePayload, env Envelope) error {
	if p.Firmware != "" {
		m.Firmware = p.Firmware
	}
	state := StepDone
	if p.Error != "" {
		state = StepFailed
	}
	// A machine that went on from here and boots over the network again
	// keeps its sequence: its installer's report decides what follows.
	m.setStep(StepPXE, state, p.Output, p.Error, env.Time)
	if state == StepFailed && (m.State == MachineBooting || m.State == MachineFailed) {
		m.State, m.Error = MachineFailed, "pxe: "+p.Error
	}
	if state == StepDone && m.State == MachineFailed && strings.HasPrefix(m.Error, "pxe: ") {
		m.State, m.Error = MachineBooting, ""
	}
	return nil
}

// machineReport is an installer's first word after it booted. A new key
// is a new boot: an approved machine not yet installed carries on from
// the disk step (the sequence is idempotent); any other starts over at
// discovered and needs approving again, so a node that was installed
// is never wiped without an admin saying so.
func (d *Directory) machineReport(index uint64, m *Machine, p MachinePayload, env Envelope) error {
	if len(p.KeyHash) != 64 {
		return fmt.Errorf("key_hash: want a SHA-256 in hex: %w", ErrInvalid)
	}
	if p.Inventory == nil {
		return fmt.Errorf("inventory: missing: %w", ErrInvalid)
	}
	if err := checkInventory(p.Inventory); err != nil {
		return err
	}
	if p.KeyHash != m.KeyHash {
		m.Boots++
		m.KeyHash = p.KeyHash
		m.resetFrom(StepDisk)
		underWay := m.State == MachineApproved || m.State == MachineInstalling || m.State == MachineFailed
		if underWay && !m.Approved.IsZero() && m.step(StepApproval).State == StepDone {
			m.State, m.Error = MachineApproved, ""
		} else {
			m.resetFrom(StepApproval)
			m.State, m.Error, m.Approved, m.ApprovedBy, m.JoinToken = MachineDiscovered, "", time.Time{}, "", ""
		}
	}
	m.Inventory, m.Address = p.Inventory, p.Address
	if p.Inventory.Firmware != "" {
		m.Firmware = p.Inventory.Firmware
	}
	summary := fmt.Sprintf("%d CPUs, %d MiB, %d disks, %d NICs, %s", p.Inventory.CPUs, p.Inventory.MemoryBytes>>20,
		len(p.Inventory.Disks), len(p.Inventory.NICs), m.Firmware)
	m.setStep(StepInstaller, StepDone, summary, "", env.Time)
	if m.State == MachineDiscovered {
		m.setStep(StepApproval, StepRunning, "waiting for an admin to approve", "", env.Time)
		// The allowlist approves at once when the leader made it a token.
		if d.s.Provisioning != nil && p.Token != nil && p.Name != "" {
			if want, ok := d.s.Provisioning.AutoApprove[m.MAC]; ok && want == p.Name {
				return d.machineApprove(index, m, p, env)
			}
		}
		d.audit(index, env, "machine.discovered", m.MAC, "ok", summary)
	}
	return nil
}

func checkInventory(inv *MachineInventory) error {
	if len(inv.Disks) > 64 || len(inv.NICs) > 64 {
		return fmt.Errorf("inventory: over 64 disks or NICs: %w", ErrInvalid)
	}
	if inv.Firmware != "" && inv.Firmware != "bios" && inv.Firmware != "uefi" {
		return fmt.Errorf("inventory: firmware %q: want bios or uefi: %w", inv.Firmware, ErrInvalid)
	}
	for _, s := range []string{inv.Vendor, inv.Product, inv.Serial, inv.CPUModel, inv.ImageVersion} {
		if err := checkText("inventory", s, 256); err != nil {
			return err
		}
	}
	return nil
}

func (d *Directory) machineApprove(index uint64, m *Machine, p MachinePayload, env Envelope) error {
	if m.State != MachineDiscovered {
		return fmt.Errorf("machine %s is %s, not discovered: %w", m.MAC, m.State, ErrConflict)
	}
	if err := checkName("node", p.Name); err != nil {
		return &FieldError{Field: "name", Err: err}
	}
	if p.Token == nil || p.Token.ID == "" || p.TokenSecret == "" {
		return fmt.Errorf("approval needs a join token: %w", ErrInvalid)
	}
	for _, other := range d.s.Machines {
		if other.MAC != m.MAC && other.Name == p.Name && other.State != MachineJoined && other.State != MachineFailed {
			return &FieldError{Field: "name", Err: fmt.Errorf("machine %s is being installed as %s already: %w", other.MAC, p.Name, ErrExists)}
		}
	}
	tok := *p.Token
	tok.Created, tok.CreatedBy = env.Time, env.Actor
	d.s.Tokens[tok.ID] = &tok
	m.Name, m.JoinToken, m.Approved, m.ApprovedBy = p.Name, p.TokenSecret, env.Time, env.Actor
	m.State, m.Error = MachineApproved, ""
	m.setStep(StepApproval, StepDone, "approved by "+env.Actor+" as "+p.Name, "", env.Time)
	d.audit(index, env, "machine.approve", m.MAC, "ok", "as node "+p.Name)
	return nil
}

func machineStep(m *Machine, p MachinePayload, env Envelope) error {
	if p.KeyHash != m.KeyHash {
		return fmt.Errorf("machine %s: not its installer's key: %w", m.MAC, ErrRefused)
	}
	if !slices.Contains(InstallerSteps(), p.Step) {
		return fmt.Errorf("step %q: want one of %s: %w", p.Step, strings.Join(InstallerSteps(), ", "), ErrInvalid)
	}
	if p.State != StepRunning && p.State != StepDone && p.State != StepFailed {
		return fmt.Errorf("step state %q: want running, done or failed: %w", p.State, ErrInvalid)
	}
	if m.State != MachineApproved && m.State != MachineInstalling {
		return fmt.Errorf("machine %s is %s: its install is not under way: %w", m.MAC, m.State, ErrConflict)
	}
	m.setStep(p.Step, p.State, p.Output, p.Error, env.Time)
	m.State = MachineInstalling
	switch {
	case p.State == StepFailed:
		m.State, m.Error = MachineFailed, p.Step+": "+p.Error
	case p.Step == StepReboot && p.State == StepDone:
		m.State = MachineInstalled
		m.setStep(StepJoin, StepRunning, "waiting for "+m.Name+" to join the cluster", "", env.Time)
	}
	return nil
}

func machineRetry(m *Machine, env Envelope) error {
	if m.State != MachineFailed {
		return fmt.Errorf("machine %s is %s: only a failed install is retried: %w", m.MAC, m.State, ErrConflict)
	}
	failed := ""
	for _, s := range m.Steps {
		if s.State == StepFailed {
			failed = s.Name
			break
		}
	}
	switch failed {
	case StepPXE:
		// It boots again by itself; the next PXE answer is recorded.
		m.resetFrom(StepPXE)
		m.State, m.Error = MachineBooting, ""
	default:
		if failed != "" {
			m.resetFrom(failed)
		}
		m.State, m.Error = MachineApproved, ""
		if m.Approved.IsZero() {
			m.State = MachineDiscovered
		}
	}
	return nil
}

// machineJoined marks the install of the machine named as a joining
// member done (from applyMemberJoin).
func (d *Directory) machineJoined(name string, t time.Time) {
	for mac, old := range d.s.Machines {
		if old.Name != name || (old.State != MachineInstalled && old.State != MachineInstalling) {
			continue
		}
		m := *old
		m.Steps = slices.Clone(old.Steps)
		m.setStep(StepJoin, StepDone, name+" joined the cluster", "", t)
		m.State, m.Updated, m.JoinToken = MachineJoined, t, ""
		d.s.Machines[mac] = &m
	}
}

// Provisioning returns the provisioning plan, if one was ever set.
func (d *Directory) Provisioning() (Provisioning, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.s.Provisioning == nil {
		return Provisioning{}, false
	}
	return *d.s.Provisioning, true
}

// Machine returns a machine by MAC.
func (d *Directory) Machine(mac string) (Machine, bool) {
	mac, err := CanonicalMAC(mac)
	if err != nil {
		return Machine{}, false
	}
	return get(d, func(s *state) map[string]*Machine { return s.Machines }, mac)
}

// Machines returns every machine, by MAC.
func (d *Directory) Machines() []Machine {
	return list(d, func(s *state) map[string]*Machine { return s.Machines })
}
