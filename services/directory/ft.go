package directory

import (
	"fmt"
	"maps"
)

// Fault tolerance (COLO): the VM's primary QEMU runs on vm.Node and a
// secondary follows it on vm.FTSecondary. The directory is where the two
// nodes agree on who runs the VM when the pair breaks: a failover is a
// committed change at the pairing's epoch, so of two nodes that each
// lost the other only one can win (the one the majority hears), and the
// loser's QEMU, whose output COLO still holds back, is stopped.

// FT states of a VM (FTState). No state: not protected.
const (
	FTSyncing      = "syncing"       // the secondary is being filled
	FTReprotecting = "re-protecting" // the same, after a failover
	FTProtected    = "protected"     // both run in step
	FTFailedOver   = "failed-over"   // the pair broke: running alone ("simplex")
)

// FT operations (VMFTPayload.Op).
const (
	FTOpProtect   = "protect"   // the primary's node starts a pairing with Secondary
	FTOpProtected = "protected" // the primary's node saw COLO reached
	FTOpFailover  = "failover"  // Survivor runs on alone
)

// VMFTPayload changes a VM's fault tolerance. Epoch is the pairing the
// proposer saw; a change for another one is refused.
type VMFTPayload struct {
	Name      string `json:"name"`
	Op        string `json:"op"`
	Epoch     uint64 `json:"epoch"`
	Secondary string `json:"secondary,omitempty"`
	Survivor  string `json:"survivor,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// FTRunning says whether a pairing stands (syncing or protected).
func (v VM) FTRunning() bool { return v.FTSecondary != "" }

func (d *Directory) applyVMFT(index uint64, env Envelope) func(VMFTPayload) (string, error) {
	return func(p VMFTPayload) (string, error) {
		old, ok := d.s.VMs[p.Name]
		if !ok {
			return "", fmt.Errorf("VM %s: %w", p.Name, ErrNotFound)
		}
		if p.Epoch != old.FTEpoch {
			return "", fmt.Errorf("VM %s: fault tolerance moved on since epoch %d (now %d): %w", p.Name, p.Epoch, old.FTEpoch, ErrConflict)
		}
		if err := checkText("reason", p.Reason, 1024); err != nil {
			return "", err
		}
		vm := *old
		detail := ""
		switch p.Op {
		case FTOpProtect:
			switch {
			case env.Actor != "member:"+vm.Node:
				return "", fmt.Errorf("VM %s: only its node %s starts its protection: %w", vm.Name, vm.Node, ErrRefused)
			case !vm.FT || !vm.Running || vm.MigrateTo != "":
				return "", fmt.Errorf("VM %s: protection needs FT on and the VM running, not migrating: %w", vm.Name, ErrConflict)
			case vm.FTSecondary != "":
				return "", fmt.Errorf("VM %s: already paired with %s: %w", vm.Name, vm.FTSecondary, ErrConflict)
			case p.Secondary == vm.Node || !d.isNode(p.Secondary):
				return "", fmt.Errorf("VM %s: the secondary %q must be another node: %w", vm.Name, p.Secondary, ErrInvalid)
			case d.s.Members[p.Secondary].Maintenance:
				return "", fmt.Errorf("VM %s: %s is in maintenance: %w", vm.Name, d.s.Members[p.Secondary].Name, ErrConflict)
			}
			for _, disk := range vm.Disks {
				v := d.s.Volumes[disk.Volume]
				if v == nil || v.Primary != vm.Node || v.Copies[p.Secondary] != CopyUpToDate || v.Colo != "" {
					return "", fmt.Errorf("VM %s: the copy of disk %s on the secondary is not up to date: %w", vm.Name, disk.Volume, ErrConflict)
				}
			}
			state := FTSyncing
			if vm.FTState == FTFailedOver {
				state = FTReprotecting
			}
			vm.FTSecondary, vm.FTState, vm.FTReason = p.Secondary, state, ""
			for _, disk := range vm.Disks {
				nv := *d.s.Volumes[disk.Volume]
				nv.Copies = maps.Clone(nv.Copies)
				nv.Colo, nv.Generation, nv.Updated = p.Secondary, nv.Generation+1, env.Time
				d.s.Volumes[nv.Name] = &nv
			}
			detail = "secondary on " + d.memberName(p.Secondary)
		case FTOpProtected:
			if env.Actor != "member:"+vm.Node || vm.FTSecondary == "" {
				return "", fmt.Errorf("VM %s: only its node %s records its protection, while paired: %w", vm.Name, vm.Node, ErrRefused)
			}
			vm.FTState = FTProtected
			detail = "secondary on " + d.memberName(vm.FTSecondary)
		case FTOpFailover:
			switch {
			case vm.FTSecondary == "":
				return "", fmt.Errorf("VM %s is not paired: %w", vm.Name, ErrConflict)
			case p.Survivor != vm.Node && p.Survivor != vm.FTSecondary:
				return "", fmt.Errorf("VM %s: %q is neither its primary nor its secondary: %w", vm.Name, p.Survivor, ErrInvalid)
			case env.Actor != "member:"+p.Survivor && env.Actor != "member:"+vm.Node:
				return "", fmt.Errorf("VM %s: a failover is recorded by the survivor or by the primary's node: %w", vm.Name, ErrRefused)
			case p.Survivor == vm.FTSecondary && vm.FTState != FTProtected:
				return "", fmt.Errorf("VM %s: the secondary is still %s, not in step: it cannot take over: %w", vm.Name, vm.FTState, ErrConflict)
			}
			d.endFT(index, env, &vm, p.Survivor, FTFailedOver, p.Reason)
			detail = fmt.Sprintf("runs on alone on %s: %s", d.memberName(p.Survivor), p.Reason)
		default:
			return "", fmt.Errorf("FT op %q: %w", p.Op, ErrInvalid)
		}
		vm.FTEpoch++
		vm.Generation++
		vm.Updated = env.Time
		d.s.VMs[vm.Name] = &vm
		d.audit(index, env, "vm.ft."+p.Op, vm.Name, "ok", detail)
		return vm.Name, nil
	}
}

// endFT ends a VM's pairing: it runs on survivor alone, whose copies of
// its disks become the reference (state is what FTState becomes).
func (d *Directory) endFT(index uint64, env Envelope, vm *VM, survivor, state, reason string) {
	for _, disk := range vm.Disks {
		old := d.s.Volumes[disk.Volume]
		if old == nil || old.Colo == "" {
			continue
		}
		v := *old
		v.Copies = maps.Clone(old.Copies)
		endColo(&v, survivor)
		v.Updated = env.Time
		d.s.Volumes[v.Name] = &v
	}
	vm.Node, vm.FTSecondary, vm.FTState, vm.FTReason = survivor, "", state, reason
}

// endColo makes survivor's copy of a volume COLO kept the primary, at a
// new role generation; the other copy took writes the survivor's lacks
// (the secondary's since the last checkpoint, the primary's in flight)
// and is overwritten where either copy's bitmap says.
func endColo(v *Volume, survivor string) {
	for id := range v.Copies {
		if id != survivor {
			v.Copies[id] = CopyOutdated
		}
	}
	v.Copies[survivor] = CopyUpToDate
	v.Colo, v.Primary, v.Generation, v.DiscardOthers = "", survivor, v.Generation+1, true
}

func (d *Directory) memberName(id string) string {
	if m, ok := d.s.Members[id]; ok {
		return m.Name
	}
	return id
}
