package vmm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
)

// An edit of a running VM is applied at once where QEMU and the guest
// can take it: more CPUs, more disks, more NICs. Everything else (less
// of anything, memory, another volume behind a disk, boot settings) is
// pending until the VM next starts, as in Proxmox; a reboot applies it.
//
// A cold start lays the hardware out exactly as hot-adds do (CPU i is
// core i of -smp's possible CPUs, disk i sits in slot diskSlot(i) of the
// hotplug bridge, NIC i in nicSlot(i)), so a VM started after an edit
// and one edited while running look the same to the guest and to a
// migration.

const (
	possibleCPUs = 16                   // -smp maxcpus, unless the VM has more
	diskSlots    = directory.MaxVMDisks // bridge slots 1-16 for disks
	nicSlots     = directory.MaxVMNICs  // and 17-24 for NICs
	hotplugBus   = "hotplug"            // the PCI bridge's id
)

func maxCPUs(vm directory.VM) int { return max(vm.CPUs, possibleCPUs) }
func diskSlot(i int) int          { return 1 + i }
func nicSlot(i int) int           { return 1 + diskSlots + i }

// hardwareEdit is how a running VM gets from what it runs to what its
// definition wants.
type hardwareEdit struct {
	addCPUs  int
	addDisks []int // indexes into the wanted definition
	addNICs  []int
	pending  []string
}

func (e hardwareEdit) empty() bool {
	return e.addCPUs == 0 && len(e.addDisks) == 0 && len(e.addNICs) == 0
}

// planEdit compares the definition a VM runs with the one wanted.
func planEdit(run, want directory.VM) hardwareEdit {
	var e hardwareEdit
	switch {
	case want.CPUs > run.CPUs && want.CPUs <= maxCPUs(run):
		e.addCPUs = want.CPUs - run.CPUs
	case want.CPUs != run.CPUs:
		e.pending = append(e.pending, fmt.Sprintf("CPUs %d → %d", run.CPUs, want.CPUs))
	}
	if want.MemoryMiB != run.MemoryMiB {
		e.pending = append(e.pending, fmt.Sprintf("memory %d → %d MiB", run.MemoryMiB, want.MemoryMiB))
	}
	for i, d := range want.Disks {
		switch {
		case i < len(run.Disks) && run.Disks[i].Volume != d.Volume:
			e.pending = append(e.pending, fmt.Sprintf("disk %d: volume %s → %s", i, run.Disks[i].Volume, d.Volume))
		case i >= len(run.Disks) && i < diskSlots:
			e.addDisks = append(e.addDisks, i)
		case i >= len(run.Disks):
			e.pending = append(e.pending, fmt.Sprintf("disk %d (%s): over the %d that can be added while running", i, d.Volume, diskSlots))
		}
	}
	if len(want.Disks) < len(run.Disks) {
		e.pending = append(e.pending, fmt.Sprintf("disks %d → %d", len(run.Disks), len(want.Disks)))
	}
	for i, n := range want.NICs {
		switch {
		case i < len(run.NICs) && run.NICs[i] != n:
			e.pending = append(e.pending, fmt.Sprintf("NIC %d: %s %s → %s %s", i, run.NICs[i].Network, run.NICs[i].MAC, n.Network, n.MAC))
		case i >= len(run.NICs) && i < nicSlots:
			e.addNICs = append(e.addNICs, i)
		case i >= len(run.NICs):
			e.pending = append(e.pending, fmt.Sprintf("NIC %d: over the %d that can be added while running", i, nicSlots))
		}
	}
	if len(want.NICs) < len(run.NICs) {
		e.pending = append(e.pending, fmt.Sprintf("NICs %d → %d", len(run.NICs), len(want.NICs)))
	}
	if !bootEqual(run.Boot, want.Boot) {
		e.pending = append(e.pending, "boot settings")
	}
	return e
}

// pendingEdits is what the VM will get only at its next start: what
// cannot be hot-added, and what was tried and failed (the history says
// why).
func pendingEdits(run, want directory.VM) []string {
	e := planEdit(run, want)
	if run.Generation != want.Generation {
		return e.pending // the edit is still being applied
	}
	if e.addCPUs > 0 {
		e.pending = append(e.pending, fmt.Sprintf("%d more CPU(s): the hot-add failed", e.addCPUs))
	}
	for _, i := range e.addDisks {
		e.pending = append(e.pending, fmt.Sprintf("disk %d (%s): the hot-add failed", i, want.Disks[i].Volume))
	}
	for _, i := range e.addNICs {
		e.pending = append(e.pending, fmt.Sprintf("NIC %d: the hot-add failed", i))
	}
	return e.pending
}

func bootEqual(a, b *directory.VMBoot) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// applyEdit hot-adds what the edit allows and records what the QEMU now
// runs. The rest stays pending (status shows it) until the next start.
func (m *Manager) applyEdit(ctx context.Context, in *instance, want directory.VM) {
	run := in.definition()
	e := planEdit(run, want)
	var applied []string
	fail := func(what string, err error) {
		m.history.add(want.Name, "hot-add-failed", fmt.Sprintf("%s: %v", what, err))
		m.log.Warn("hot-add failed", "vm", want.Name, "what", what, "err", err)
	}
	if e.addCPUs > 0 {
		n, err := in.plugCPUs(e.addCPUs)
		run.CPUs += n
		if n > 0 {
			applied = append(applied, fmt.Sprintf("%d CPU(s)", n))
		}
		if err != nil {
			fail("CPUs", err)
		}
	}
	for _, i := range e.addDisks {
		if i != len(run.Disks) {
			break // a disk failed: later ones would take its slot
		}
		if err := m.plugDisk(ctx, in, i, want.Disks[i]); err != nil {
			fail("disk "+want.Disks[i].Volume, err)
			break
		}
		run.Disks = append(run.Disks, want.Disks[i])
		applied = append(applied, "disk "+want.Disks[i].Volume)
	}
	for _, i := range e.addNICs {
		if i != len(run.NICs) {
			break
		}
		if err := m.plugNIC(in, i, want.NICs[i]); err != nil {
			fail(fmt.Sprintf("NIC %d", i), err)
			break
		}
		run.NICs = append(run.NICs, want.NICs[i])
		applied = append(applied, fmt.Sprintf("NIC %d (%s)", i, want.NICs[i].MAC))
	}
	// What is not hardware applies as it is (HA, priority, description,
	// and any field added later): what runs is the wanted definition with
	// the hardware the QEMU has.
	hw := run
	run = want
	run.CPUs, run.MemoryMiB, run.Disks, run.NICs, run.Boot = hw.CPUs, hw.MemoryMiB, hw.Disks, hw.NICs, hw.Boot
	in.setDefinition(run)
	if len(applied) > 0 {
		m.history.add(want.Name, "hot-added", strings.Join(applied, ", "))
		m.log.Info("hot-added", "vm", want.Name, "what", applied)
	}
	if p := pendingEdits(run, want); len(p) > 0 {
		m.history.add(want.Name, "pending", strings.Join(p, ", ")+": applied when the VM next starts (reboot it)")
	}
}

// hotpluggableCPU is an entry of query-hotpluggable-cpus.
type hotpluggableCPU struct {
	Type    string         `json:"type"`
	Props   map[string]any `json:"props"`
	QOMPath string         `json:"qom-path"`
}

// plugCPUs adds up to n vCPUs, lowest free core first; it returns how
// many it added.
func (in *instance) plugCPUs(n int) (int, error) {
	var cpus []hotpluggableCPU
	if err := in.qmp("query-hotpluggable-cpus", nil, &cpus); err != nil {
		return 0, err
	}
	slices.SortFunc(cpus, func(a, b hotpluggableCPU) int { return coreID(a) - coreID(b) })
	added := 0
	for _, c := range cpus {
		if added == n {
			break
		}
		if c.QOMPath != "" {
			continue // present
		}
		args := map[string]any{"driver": c.Type, "id": fmt.Sprintf("cpu%d", coreID(c))}
		for k, v := range c.Props {
			args[k] = v
		}
		if err := in.qmp("device_add", args, nil); err != nil {
			return added, err
		}
		added++
	}
	if added < n {
		return added, fmt.Errorf("only %d of %d CPUs could be added", added, n)
	}
	return added, nil
}

func coreID(c hotpluggableCPU) int {
	f, _ := c.Props["core-id"].(float64)
	s, _ := c.Props["socket-id"].(float64)
	return int(s)*1000 + int(f)
}

// plugDisk makes the volume primary here and adds it as disk i.
func (m *Manager) plugDisk(ctx context.Context, in *instance, i int, d directory.VMDisk) error {
	m.mu.Lock()
	view := m.view
	m.mu.Unlock()
	if why := waitingDisk(view, directory.VM{Disks: []directory.VMDisk{d}}); why != "" {
		return errors.New(why)
	}
	if err := m.cfg.Cluster.PrimaryHere(ctx, cluster.PrimaryHere{Name: d.Volume}); err != nil {
		return err
	}
	if err := m.waitExports(ctx, directory.VM{Disks: []directory.VMDisk{d}}); err != nil {
		return err
	}
	node := diskNode(i)
	if err := in.qmp("blockdev-add", primaryDisk(i, d.Volume, m.cfg.NBDSocket), nil); err != nil {
		return err
	}
	if err := in.qmp("device_add", map[string]any{"driver": "virtio-blk-pci", "drive": node, "id": fmt.Sprintf("vd%d", i),
		"bus": hotplugBus, "addr": fmt.Sprintf("%#x", diskSlot(i)), "bootindex": i + 1}, nil); err != nil {
		_ = in.qmp("blockdev-del", map[string]any{"node-name": node}, nil)
		return err
	}
	return nil
}

// plugNIC adds NIC i on its tap, on the LAN bridge.
func (m *Manager) plugNIC(in *instance, i int, n directory.VMNIC) error {
	id := fmt.Sprintf("net%d", i)
	if err := in.qmp("netdev_add", map[string]any{"type": "tap", "id": id, "ifname": tapName(in.name, i),
		"script": "no", "downscript": "no", "vhost": false}, nil); err != nil {
		return err
	}
	if err := m.plugTap(tapName(in.name, i)); err != nil {
		_ = in.qmp("netdev_del", map[string]any{"id": id}, nil)
		return err
	}
	if err := in.qmp("device_add", map[string]any{"driver": "virtio-net-pci", "netdev": id, "mac": n.MAC,
		"id": fmt.Sprintf("nic%d", i), "bus": hotplugBus, "addr": fmt.Sprintf("%#x", nicSlot(i))}, nil); err != nil {
		_ = in.qmp("netdev_del", map[string]any{"id": id}, nil)
		return err
	}
	return nil
}
