package cluster

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// VM definitions and the wish to run them live in the directory; the VM
// manager on each node runs what is placed on it. The runtime side
// (status, consoles, history) is the VM manager's API under /api/v1/vmm/.

// nodeReserveMiB is memory kept for the node itself (Tandem, the page
// cache the replicas need) when placing VMs.
const nodeReserveMiB = 1024

// Capacity is what a node has and what its VMs take.
type Capacity struct {
	Node        string `json:"node"`
	Name        string `json:"name"`
	CPUs        int    `json:"cpus"`
	MemoryMiB   int64  `json:"memory_mib"`
	UsedCPUs    int    `json:"used_cpus"`
	UsedMemMiB  int64  `json:"used_memory_mib"`
	Maintenance bool   `json:"maintenance,omitempty"`
	Down        bool   `json:"down,omitempty"` // lost: its VMs are moving away
}

// FreeMiB is the memory left for VMs.
func (c Capacity) FreeMiB() int64 { return c.MemoryMiB - nodeReserveMiB - c.UsedMemMiB }

// capacities returns each node's capacity with the running VMs counted,
// but not the VM named skip.
func capacities(d *directory.Directory, skip string) []Capacity {
	var out []Capacity
	byID := map[string]int{}
	for _, m := range d.Members() {
		if m.Role != directory.MemberNode {
			continue
		}
		c := Capacity{Node: m.ID, Name: m.Name, Maintenance: m.Maintenance}
		if m.Inventory != nil {
			c.CPUs, c.MemoryMiB = m.Inventory.CPUs, m.Inventory.MemoryBytes>>20
		}
		byID[m.ID] = len(out)
		out = append(out, c)
	}
	for _, vm := range d.VMs() {
		if i, ok := byID[vm.Node]; ok && vm.Running && vm.Name != skip {
			out[i].UsedCPUs += vm.CPUs
			out[i].UsedMemMiB += int64(vm.MemoryMiB)
		}
		if i, ok := byID[vm.FTSecondary]; ok && vm.Running && vm.Name != skip {
			out[i].UsedCPUs += vm.CPUs
			out[i].UsedMemMiB += ftSecondaryMiB(vm)
		}
	}
	return out
}

// place picks the node for vm: the asked one if it fits, else the node
// with the most free memory. Memory is not overcommitted; CPUs may be.
func place(caps []Capacity, vm directory.VM, asked string) (string, error) {
	fits := func(c Capacity) bool { return c.MemoryMiB == 0 || c.FreeMiB() >= int64(vm.MemoryMiB) }
	if asked != "" {
		for _, c := range caps {
			if c.Node == asked {
				if c.Down {
					return "", fmt.Errorf("%s is down: %w", c.Name, directory.ErrRefused)
				}
				if c.Maintenance {
					return "", errMaintenance(c.Name)
				}
				if !fits(c) {
					return "", fmt.Errorf("VM %s needs %d MiB; %s has %d MiB free for VMs: %w", vm.Name, vm.MemoryMiB, c.Name, c.FreeMiB(), directory.ErrRefused)
				}
				return c.Node, nil
			}
		}
		return "", fieldError("node", fmt.Sprintf("%q is not a node of the cluster", asked))
	}
	var ok []Capacity
	for _, c := range caps {
		if fits(c) && !c.Maintenance && !c.Down {
			ok = append(ok, c)
		}
	}
	if len(ok) == 0 {
		return "", fmt.Errorf("no node has %d MiB free for VM %s: %w", vm.MemoryMiB, vm.Name, directory.ErrRefused)
	}
	best := slices.MaxFunc(ok, func(a, b Capacity) int {
		if a.FreeMiB() != b.FreeMiB() {
			return int(a.FreeMiB() - b.FreeMiB())
		}
		return strings.Compare(b.Name, a.Name) // on a tie, the first by name
	})
	return best.Node, nil
}

// VMRequest is a VM definition as the API takes it.
type VMRequest struct {
	Name        string             `json:"name"`
	Description string             `json:"description,omitempty"`
	CPUs        int                `json:"cpus"`
	MemoryMiB   int                `json:"memory_mib"`
	Disks       []directory.VMDisk `json:"disks,omitempty"`
	NICs        []directory.VMNIC  `json:"nics,omitempty"`
	Boot        *directory.VMBoot  `json:"boot,omitempty"`
	HA          bool               `json:"ha,omitempty"`
	// FT keeps a running copy of the VM on the other node (COLO): it
	// takes over within a second, with the guest's connections, when
	// the VM's node fails.
	FT       bool `json:"ft,omitempty"`
	Priority int  `json:"priority,omitempty"`
	// Start, on create: start the VM at once (on Node, or where it fits).
	Start bool   `json:"start,omitempty"`
	Node  string `json:"node,omitempty"`
	// ExpectedGeneration, on update: refuse if the VM changed since.
	ExpectedGeneration int64 `json:"expected_generation,omitempty"`
}

func newMAC() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return net.HardwareAddr{0x52, 0x54, 0x00, b[0], b[1], b[2]}.String()
}

func (req VMRequest) vm() directory.VM {
	vm := directory.VM{Name: req.Name, Description: req.Description, CPUs: req.CPUs, MemoryMiB: req.MemoryMiB,
		Disks: req.Disks, NICs: slices.Clone(req.NICs), Boot: req.Boot, HA: req.HA, FT: req.FT, Priority: req.Priority}
	for i := range vm.NICs {
		if vm.NICs[i].MAC == "" {
			vm.NICs[i].MAC = newMAC()
		}
		if vm.NICs[i].Network == "" {
			vm.NICs[i].Network = "lan"
		}
	}
	return vm
}

func (a *Agent) handleVMs(w http.ResponseWriter, r *http.Request) {
	writePage(w, r, a.Directory().VMs())
}

func (a *Agent) handleVM(w http.ResponseWriter, r *http.Request) {
	if vm, ok := a.vmOrNotFound(w, r.PathValue("name")); ok {
		frontdoor.WriteJSON(w, http.StatusOK, vm)
	}
}

// vmOrNotFound finds a VM, or answers that it does not exist.
func (a *Agent) vmOrNotFound(w http.ResponseWriter, name string) (directory.VM, bool) {
	vm, ok := a.Directory().VM(name)
	if !ok {
		apiError(w, fmt.Errorf("VM %s: %w", name, directory.ErrNotFound))
	}
	return vm, ok
}

// askedNode resolves the node a request names (by name or ID); none
// named is "".
func (a *Agent) askedNode(nameOrID string) (string, error) {
	if nameOrID == "" {
		return "", nil
	}
	return a.nodeID(nameOrID)
}

func (a *Agent) handleCreateVM(w http.ResponseWriter, r *http.Request) {
	var req VMRequest
	if !decode(w, r, &req) {
		return
	}
	vm := req.vm()
	if req.Start || req.Node != "" {
		asked, err := a.askedNode(req.Node)
		if err != nil {
			apiError(w, err)
			return
		}
		caps := capacities(a.Directory(), vm.Name)
		node, err := place(caps, vm, asked)
		if err == nil && req.Start {
			err = admitHA(caps, a.Directory().VMs(), vm, node)
		}
		if err != nil {
			apiError(w, err)
			return
		}
		vm.Node, vm.Running = node, req.Start
	}
	if _, err := a.proposeCreate(r, directory.TypeVMPut, directory.VMPutPayload{Op: directory.VMOp{Op: directory.OpCreate}, VM: vm}); err != nil {
		apiError(w, err)
		return
	}
	vm, _ = a.Directory().VM(vm.Name)
	frontdoor.WriteJSON(w, http.StatusCreated, vm)
}

// handleUpdateVM replaces a VM's definition; where and whether it runs
// change through start, stop and migrate.
func (a *Agent) handleUpdateVM(w http.ResponseWriter, r *http.Request) {
	var req VMRequest
	if !decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	old, ok := a.vmOrNotFound(w, name)
	if !ok {
		return
	}
	if req.Name != "" && req.Name != name {
		apiError(w, fieldError("name", "VMs are not renamed"))
		return
	}
	req.Name = name
	// A NIC given without a MAC keeps the one it had: the guest's
	// addresses and the site's DHCP leases follow the MAC.
	req.NICs = slices.Clone(req.NICs)
	for i := range req.NICs {
		if i < len(old.NICs) && req.NICs[i].MAC == "" {
			req.NICs[i].MAC = old.NICs[i].MAC
		}
	}
	vm := req.vm()
	vm.Node, vm.Running, vm.Template = old.Node, old.Running, old.Template
	if vm.FT && !old.FT && vm.Running {
		if err := a.canProtect(vm); err != nil {
			apiError(w, err)
			return
		}
	}
	var task *taskSpec
	if vm.FT && !old.FT && vm.Running {
		task = &taskSpec{kind: "vm.ft", message: "starting the secondary on the other node"}
	}
	a.putVMAndAnswer(w, r, vm, old.Generation, req.ExpectedGeneration, http.StatusOK, task)
}

func (a *Agent) putVM(r *http.Request, vm directory.VM, current, expected int64) error {
	if expected == 0 {
		expected = current
	}
	_, err := a.propose(directory.TypeVMPut, actor(r), clientAddr(r), directory.VMPutPayload{
		Op: directory.VMOp{Op: directory.OpUpdate, ExpectedGeneration: expected}, VM: vm})
	return err
}

// taskSpec is the task a change starts: its kind, what done means, and
// its first message.
type taskSpec struct{ kind, want, message string }

// putVMAndAnswer records a VM's new definition, unless it changed since
// expected (current when 0), starts the task it asks for (if any), and
// answers it as committed with code.
func (a *Agent) putVMAndAnswer(w http.ResponseWriter, r *http.Request, vm directory.VM, current, expected int64, code int, task *taskSpec) {
	if err := a.putVM(r, vm, current, expected); err != nil {
		apiError(w, err)
		return
	}
	if task != nil {
		a.startTask(w, r, task.kind, vm.Name, task.want, task.message)
	}
	vm, _ = a.Directory().VM(vm.Name)
	frontdoor.WriteJSON(w, code, vm)
}

func (a *Agent) handleDeleteVM(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if vm, ok := a.Directory().VM(name); ok && vm.Running {
		apiError(w, fmt.Errorf("VM %s is running: stop it first: %w", name, directory.ErrConflict))
		return
	}
	if _, err := a.propose(directory.TypeVMDelete, actor(r), clientAddr(r), directory.NamePayload{Name: name}); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// StartRequest starts a VM, on a given node or where it fits.
type StartRequest struct {
	Node string `json:"node,omitempty"`
}

func (a *Agent) handleStartVM(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	vm, ok := a.vmOrNotFound(w, name)
	if !ok {
		return
	}
	asked, err := a.askedNode(req.Node)
	if err != nil {
		apiError(w, err)
		return
	}
	if asked == "" {
		asked = vm.Node
	}
	if vm.Running && (req.Node == "" || asked == vm.Node) {
		frontdoor.WriteJSON(w, http.StatusOK, vm)
		return
	}
	if vm.Running {
		apiError(w, fmt.Errorf("VM %s runs on another node: migrate it: %w", name, directory.ErrConflict))
		return
	}
	caps := capacities(a.Directory(), vm.Name)
	node, err := place(caps, vm, asked)
	if err != nil && req.Node == "" && asked != "" {
		node, err = place(caps, vm, "") // its last node is full or in maintenance: anywhere
	}
	if err == nil {
		err = admitHA(caps, a.Directory().VMs(), vm, node)
	}
	if err != nil {
		apiError(w, err)
		return
	}
	vm.Node, vm.Running, vm.StopForce = node, true, false
	a.putVMAndAnswer(w, r, vm, vm.Generation, 0, http.StatusOK, &taskSpec{kind: "vm.start", want: node, message: "starting"})
}

// StopRequest stops a VM: an ACPI shutdown (with the VM manager's
// timeout, then power-off), or at once with Force.
type StopRequest struct {
	Force bool `json:"force,omitempty"`
}

func (a *Agent) handleStopVM(w http.ResponseWriter, r *http.Request) {
	var req StopRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	vm, ok := a.vmOrNotFound(w, r.PathValue("name"))
	if !ok {
		return
	}
	if !vm.Running && vm.StopForce == req.Force {
		frontdoor.WriteJSON(w, http.StatusOK, vm)
		return
	}
	vm.Running, vm.StopForce, vm.MigrateTo = false, req.Force, ""
	a.putVMAndAnswer(w, r, vm, vm.Generation, 0, http.StatusOK, &taskSpec{kind: "vm.stop", message: "shutting down"})
}

// MigrateRequest moves a running VM to another node, live.
type MigrateRequest struct {
	Node string `json:"node,omitempty"` // empty: the other node
}

func (a *Agent) handleMigrateVM(w http.ResponseWriter, r *http.Request) {
	var req MigrateRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	vm, ok := a.vmOrNotFound(w, name)
	if !ok {
		return
	}
	if !vm.Running {
		apiError(w, fmt.Errorf("VM %s is not running: start it where it should run: %w", name, directory.ErrConflict))
		return
	}
	if vm.MigrateTo != "" {
		apiError(w, fmt.Errorf("VM %s is already moving: %w", name, directory.ErrConflict))
		return
	}
	if vm.FTRunning() {
		apiError(w, fmt.Errorf("VM %s is fault tolerant (%s, secondary on %s): it is not live-migrated; "+
			"switch FT off first, or put its node into maintenance for a planned failover: %w", name, vm.FTState, a.memberName(vm.FTSecondary), directory.ErrConflict))
		return
	}
	caps := capacities(a.Directory(), name)
	asked, err := a.askedNode(req.Node)
	if err != nil {
		apiError(w, err)
		return
	}
	if asked == "" {
		for _, c := range caps {
			if c.Node != vm.Node {
				asked = c.Node
				break
			}
		}
	}
	if asked == vm.Node || asked == "" {
		apiError(w, fieldError("node", "a VM migrates to another node"))
		return
	}
	target, err := place(caps, vm, asked)
	if err != nil {
		apiError(w, err)
		return
	}
	vm.MigrateTo = target
	a.putVMAndAnswer(w, r, vm, vm.Generation, 0, http.StatusAccepted, &taskSpec{kind: "vm.migrate", want: target, message: "migrating to " + a.memberName(target)})
}

// admitHA checks vSphere-style failover capacity before an HA VM starts
// on node: whichever node fails, the others must be able to take every
// HA VM it runs on top of what they run. caps are the nodes' capacities
// without vm; vms are the directory's VMs.
func admitHA(caps []Capacity, vms []directory.VM, vm directory.VM, node string) error {
	if !vm.HA {
		return nil
	}
	haMiB := map[string]int64{} // HA memory per node, the new VM included
	for _, v := range vms {
		if v.Running && v.HA && v.Name != vm.Name {
			haMiB[v.Node] += int64(v.MemoryMiB)
		}
	}
	haMiB[node] += int64(vm.MemoryMiB)
	for _, failed := range caps {
		need := haMiB[failed.Node]
		if failed.Node == node {
			need = haMiB[node]
		}
		if need == 0 {
			continue
		}
		var room int64
		for _, c := range caps {
			if c.Node == failed.Node || c.Down {
				continue
			}
			if c.MemoryMiB == 0 {
				return nil // a node of unknown size: no way to judge
			}
			free := c.FreeMiB()
			if c.Node == node {
				free -= int64(vm.MemoryMiB)
			}
			room += max(free, 0)
		}
		if room < need {
			return fmt.Errorf("HA admission: if %s failed, its HA VMs (%d MiB with %s) would not fit on the other nodes (%d MiB free); "+
				"start %s without HA, stop another VM, or add memory: %w", failed.Name, need, vm.Name, room, vm.Name, directory.ErrRefused)
		}
	}
	return nil
}
