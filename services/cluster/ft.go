package cluster

import (
	"fmt"
	"time"

	"github.com/tandemhci/tandem/services/directory"
)

// Fault tolerance, the cluster's part: the directory arbitrates the
// pairings (directory/ft.go) and the VM managers run them
// (vmm/ft.go). Here: whether a VM can be protected when FT is switched
// on, the memory a secondary takes, and maintenance of an FT VM's node.

// ftSecondaryMiB is what a VM's secondary takes on its node: its RAM,
// and as much again for COLO's copy of the last checkpoint.
func ftSecondaryMiB(vm directory.VM) int64 { return 2 * int64(vm.MemoryMiB) }

// canProtect says why a running VM could not be paired now, if it
// could not (protectRefusal).
func (a *Agent) canProtect(vm directory.VM) error {
	return protectRefusal(vm, capacities(a.Directory(), vm.Name), a.unreachable)
}

// protectRefusal says why vm could not be paired on the nodes of caps:
// no other node, that node in maintenance or unreachable, or without the
// memory a secondary takes.
func protectRefusal(vm directory.VM, caps []Capacity, unreachable func(node string) bool) error {
	for _, c := range caps {
		if c.Node == vm.Node {
			continue
		}
		switch {
		case c.Maintenance:
			return fmt.Errorf("VM %s cannot be protected: its secondary would run on %s, which is in maintenance: %w", vm.Name, c.Name, directory.ErrConflict)
		case c.Down || unreachable(c.Node):
			return fmt.Errorf("VM %s cannot be protected: %s, where its secondary would run, is not reachable: %w", vm.Name, c.Name, directory.ErrConflict)
		case c.MemoryMiB != 0 && c.FreeMiB() < ftSecondaryMiB(vm):
			return fmt.Errorf("VM %s cannot be protected: its secondary needs %d MiB on %s (its memory and COLO's checkpoint copy), which has %d MiB free: %w",
				vm.Name, ftSecondaryMiB(vm), c.Name, c.FreeMiB(), directory.ErrRefused)
		}
		return nil
	}
	return fmt.Errorf("VM %s cannot be protected: the cluster has no other node for its secondary: %w", vm.Name, directory.ErrConflict)
}

// unreachable says whether the leader cannot count on reaching a
// member: its heartbeats to it fail, or its probes (as the health
// report shows them) do not answer. A leader of a few moments has
// probed nobody yet: to it, every member is unreachable for now.
func (a *Agent) unreachable(id string) bool {
	_, failing := a.heartbeats.failingSince(id)
	return failing || !a.probedRecently(id)
}

func (a *Agent) memberName(id string) string {
	if m, ok := a.Directory().Member(id); ok {
		return m.Name
	}
	return id
}

// plannedFailover moves a protected VM off a node entering maintenance
// by a failover to its secondary: the secondary is in step, so the guest
// goes on there with its connections and no migration. It says whether
// it did.
func (a *Agent) plannedFailover(vm directory.VM, node directory.Member) bool {
	if vm.FTState != directory.FTProtected || vm.Node != node.ID {
		return false
	}
	reason := fmt.Sprintf("planned: %s entered maintenance", node.Name)
	if _, err := a.propose(directory.TypeVMFT, "member:"+node.ID, "", directory.VMFTPayload{
		Name: vm.Name, Op: directory.FTOpFailover, Epoch: vm.FTEpoch, Survivor: vm.FTSecondary, Reason: reason}); err != nil {
		a.log.Warn("maintenance: planned failover not recorded", "vm", vm.Name, "err", err)
		return true // tried: not migrated meanwhile
	}
	a.log.Info("maintenance: planned failover", "vm", vm.Name, "to", a.memberName(vm.FTSecondary), "at", time.Now())
	return true
}
