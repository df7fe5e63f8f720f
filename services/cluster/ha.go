package cluster

import (
	"fmt"
	"slices"
	"time"

	"github.com/tandemhci/tandem/services/directory"
)

// HA: a node the leader has not reached for its fence wait has stopped its
// VMs (its VM manager fences itself once it is out of the quorum for
// fenceAfter, and its watchdog resets it if it cannot), so its HA VMs are
// placed on the nodes that are up, highest priority first. The VM
// manager there makes their volumes primary (the lost node's copy can no
// longer write: the role generation moved) and starts them.

// lostNodes are the nodes the leader has not reached for their fence
// wait: raft's heartbeats to them fail, and neither those nor the
// leader's probes have been answered since, counting from when it became
// leader at the earliest. Both must be silent: a node that still hears
// raft still has the quorum, and keeps its VMs.
func (a *Agent) lostNodes(leaderSince time.Time) map[string]time.Duration {
	lost := map[string]time.Duration{}
	for _, m := range a.Directory().Members() {
		if m.Role != directory.MemberNode || m.ID == a.id.ID {
			continue
		}
		raftLast, failing := a.heartbeats.failingSince(m.ID)
		if !failing {
			continue
		}
		last := leaderSince
		if raftLast.After(last) {
			last = raftLast
		}
		if pr, ok := a.probes.get(m.ID); ok && pr.At.After(last) {
			last = pr.At
		}
		since := time.Since(last)
		if since > a.fenceWait(m) || since > a.fenceAfter() && a.confirmedOff(m, last) {
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
		// An FT VM whose pairing could not take over (still syncing, or
		// not paired) is restarted like an HA VM; a protected one has
		// failed over to its secondary before this (vmm/ft.go).
		if _, ok := lost[vm.Node]; ok && vm.Running && (vm.HA || vm.FT) {
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
	names, waits := map[string]string{}, map[string]time.Duration{}
	for _, m := range d.Members() {
		names[m.ID], waits[m.ID] = m.Name, a.fenceWait(m)
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
		detail := fmt.Sprintf("%s not reached for %.1fs (fence bound %.1fs): restarted on %s", names[from], lost[from].Seconds(), waits[from].Seconds(), names[node])
		if lost[from] <= waits[from] {
			detail = fmt.Sprintf("%s not reached for %.1fs and confirmed off by the board's fence (fence bound %.1fs): restarted on %s", names[from], lost[from].Seconds(), waits[from].Seconds(), names[node])
		}
		a.log.Warn("HA: restarting a VM of a lost node", "vm", vm.Name, "from", names[from], "on", names[node])
		_, _ = a.propose(directory.TypeAudit, "ha", "", directory.AuditPayload{Action: "ha.restart", Target: vm.Name, Result: "ok", Detail: detail})
	}
}
