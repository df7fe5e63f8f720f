package cluster

import (
	"fmt"
	"slices"
	"time"

	"github.com/tandemhci/tandem/services/directory"
)

// HA: a node the leader has not reached for fenceWait has stopped its VMs
// (its VM manager fences itself once it is out of the quorum for
// fenceAfter, and its watchdog resets it if it cannot), so its HA VMs are
// placed on the nodes that are up, highest priority first. The VM
// manager there makes their volumes primary (the lost node's copy can no
// longer write: the role generation moved) and starts them.

// lostNodes are the nodes the leader has not reached for fenceWait,
// counting from when it became leader at the earliest.
func (a *Agent) lostNodes(leaderSince time.Time) map[string]time.Duration {
	lost := map[string]time.Duration{}
	for _, m := range a.Directory().Members() {
		if m.Role != directory.MemberNode || m.ID == a.id.ID {
			continue
		}
		last := leaderSince
		if pr, ok := a.probes.get(m.ID); ok && pr.At.After(last) {
			last = pr.At
		}
		if since := time.Since(last); since > a.fenceWait() {
			lost[m.ID] = since
		}
	}
	return lost
}

// restartLostVMs moves the HA VMs of lost nodes.
func (a *Agent) restartLostVMs(leaderSince time.Time) {
	lost := a.lostNodes(leaderSince)
	if len(lost) == 0 {
		return
	}
	d := a.Directory()
	var moving []directory.VM
	for _, vm := range d.VMs() {
		if _, ok := lost[vm.Node]; ok && vm.Running && vm.HA {
			moving = append(moving, vm)
		}
	}
	slices.SortStableFunc(moving, func(x, y directory.VM) int { return y.Priority - x.Priority })
	caps := capacities(d, "")
	for i := range caps {
		if _, ok := lost[caps[i].Node]; ok {
			caps[i].Down = true
			// Its VMs are being moved: what they took there is free.
			caps[i].UsedCPUs, caps[i].UsedMemMiB = 0, 0
		}
	}
	names := map[string]string{}
	for _, m := range d.Members() {
		names[m.ID] = m.Name
	}
	for _, vm := range moving {
		from := vm.Node
		node, err := place(caps, vm, "")
		if err != nil {
			a.log.Error("HA: cannot restart a VM of a lost node", "vm", vm.Name, "node", names[from], "err", err)
			continue
		}
		vm.Node, vm.MigrateTo = node, ""
		if _, err := a.propose(directory.TypeVMPut, "ha", "", directory.VMPutPayload{
			Op: directory.VMOp{Op: directory.OpUpdate, ExpectedGeneration: vm.Generation}, VM: vm}); err != nil {
			a.log.Warn("HA: restart not recorded", "vm", vm.Name, "err", err)
			continue
		}
		for i := range caps {
			if caps[i].Node == node {
				caps[i].UsedCPUs += vm.CPUs
				caps[i].UsedMemMiB += int64(vm.MemoryMiB)
			}
		}
		detail := fmt.Sprintf("%s not reached for %.1fs (fence bound %.1fs): restarted on %s", names[from], lost[from].Seconds(), a.fenceWait().Seconds(), names[node])
		a.log.Warn("HA: restarting a VM of a lost node", "vm", vm.Name, "from", names[from], "on", names[node])
		_, _ = a.propose(directory.TypeAudit, "ha", "", directory.AuditPayload{Action: "ha.restart", Target: vm.Name, Result: "ok", Detail: detail})
	}
}
