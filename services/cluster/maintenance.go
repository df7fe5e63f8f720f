package cluster

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// Maintenance mode: a node in maintenance gets no new VMs, and the
// leader live-migrates its running VMs away, one at a time, highest
// priority first. Leaving maintenance with Return migrates back the VMs
// that left it.

// MaintenanceRequest enters or leaves maintenance.
type MaintenanceRequest struct {
	On bool `json:"on"`
	// Return, when leaving: move back the VMs that left for the
	// maintenance.
	Return bool `json:"return,omitempty"`
}

func (a *Agent) handleMaintenance(w http.ResponseWriter, r *http.Request) {
	var req MaintenanceRequest
	if !decode(w, r, &req) {
		return
	}
	id, err := a.nodeID(r.PathValue("id"))
	if err != nil {
		apiError(w, err)
		return
	}
	if _, err := a.propose(directory.TypeMaintenance, actor(r), clientAddr(r), directory.MaintenancePayload{ID: id, On: req.On}); err != nil {
		apiError(w, err)
		return
	}
	if !req.On {
		for _, vm := range a.Directory().VMs() {
			if vm.Home != id {
				continue
			}
			vm.Home = ""
			if req.Return && vm.Running && vm.Node != id && vm.MigrateTo == "" {
				vm.MigrateTo = id
			}
			if err := a.putVM(r, vm, vm.Generation, 0); err != nil {
				a.log.Warn("maintenance: VM not sent home", "vm", vm.Name, "err", err)
			}
		}
	}
	want := map[bool]string{true: "on", false: "off"}[req.On]
	a.startTask(w, r, "node.maintenance", id, want, "maintenance "+want)
	m, _ := a.Directory().Member(id)
	frontdoor.WriteJSON(w, http.StatusOK, m)
}

// drainMaintenance starts the next migration off each node in
// maintenance, once the one before has finished.
func (a *Agent) drainMaintenance() {
	d := a.Directory()
	caps := capacities(d, "")
	vms := d.VMs()
	slices.SortStableFunc(vms, func(x, y directory.VM) int { return y.Priority - x.Priority })
	for _, c := range caps {
		if !c.Maintenance {
			continue
		}
		busy := slices.ContainsFunc(vms, func(vm directory.VM) bool { return vm.Node == c.Node && vm.MigrateTo != "" })
		if busy {
			continue
		}
		for _, vm := range vms {
			if vm.Node != c.Node || !vm.Running {
				continue
			}
			if m, ok := d.Member(c.Node); ok && a.plannedFailover(vm, m) {
				break
			}
			if vm.FTRunning() {
				continue // still syncing: it stays until it is in step or FT ends
			}
			target, err := place(capacities(d, vm.Name), vm, "")
			if err != nil {
				a.log.Warn("maintenance: a VM has nowhere to go", "vm", vm.Name, "node", c.Name, "err", err)
				continue
			}
			vm.MigrateTo, vm.Home = target, c.Node
			if _, err := a.propose(directory.TypeVMPut, "maintenance", "", directory.VMPutPayload{
				Op: directory.VMOp{Op: directory.OpUpdate, ExpectedGeneration: vm.Generation}, VM: vm}); err != nil {
				a.log.Warn("maintenance: migration not recorded", "vm", vm.Name, "err", err)
			}
			break
		}
	}
}

// errMaintenance refuses a VM on a node in maintenance.
func errMaintenance(name string) error {
	return fmt.Errorf("%s is in maintenance: %w", name, directory.ErrRefused)
}
