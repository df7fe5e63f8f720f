package directory

import (
	"fmt"
	"net"
	"path"
	"strings"
)

// Networks VM NICs may join. "lan" is the node's management bridge, the
// same segment on both nodes, so a VM keeps its address on either.
var Networks = map[string]bool{"lan": true}

// Limits of a VM definition.
const (
	MaxVMCPUs      = 64
	MaxVMMemoryMiB = 1 << 20
	MaxVMDisks     = 16
	MaxVMNICs      = 8
	// A fault-tolerant VM's limits: every checkpoint pauses it to copy
	// what its vCPUs dirtied, and every disk and NIC is replicated and
	// compared on its own channel.
	MaxFTCPUs  = 4
	MaxFTDisks = 4
	MaxFTNICs  = 2
)

// checkVM validates what a VM refers to: its disks are volumes no other
// VM uses, its NICs join known networks with unicast MACs, its boot files
// are plain names in the guest boot directory, and its node is a node.
func (d *Directory) checkVM(vm *VM) error {
	if vm.CPUs > MaxVMCPUs || vm.MemoryMiB > MaxVMMemoryMiB {
		return fmt.Errorf("VM %s: at most %d CPUs and %d MiB of memory: %w", vm.Name, MaxVMCPUs, MaxVMMemoryMiB, ErrInvalid)
	}
	if len(vm.Disks) > MaxVMDisks || len(vm.NICs) > MaxVMNICs {
		return fmt.Errorf("VM %s: at most %d disks and %d NICs: %w", vm.Name, MaxVMDisks, MaxVMNICs, ErrInvalid)
	}
	if vm.FT && (vm.CPUs > MaxFTCPUs || len(vm.Disks) > MaxFTDisks || len(vm.NICs) > MaxFTNICs) {
		return fmt.Errorf("VM %s: a fault-tolerant VM has at most %d vCPUs, %d disks and %d NICs (it has %d, %d, %d): %w",
			vm.Name, MaxFTCPUs, MaxFTDisks, MaxFTNICs, vm.CPUs, len(vm.Disks), len(vm.NICs), ErrInvalid)
	}
	if len(vm.Disks) == 0 && vm.Boot == nil {
		return fmt.Errorf("VM %s: nothing to boot from: give it a disk or a kernel: %w", vm.Name, ErrInvalid)
	}
	seen := map[string]bool{}
	for i, disk := range vm.Disks {
		if _, ok := d.s.Volumes[disk.Volume]; !ok {
			return fmt.Errorf("VM %s: disk %d: no volume %q: %w", vm.Name, i, disk.Volume, ErrInvalid)
		}
		if seen[disk.Volume] {
			return fmt.Errorf("VM %s: volume %s is attached twice: %w", vm.Name, disk.Volume, ErrInvalid)
		}
		seen[disk.Volume] = true
		for _, other := range d.s.VMs {
			if other.Name == vm.Name {
				continue
			}
			for _, od := range other.Disks {
				if od.Volume == disk.Volume {
					return fmt.Errorf("VM %s: volume %s is already a disk of VM %s: %w", vm.Name, disk.Volume, other.Name, ErrConflict)
				}
			}
		}
	}
	macs := map[string]bool{}
	for i, nic := range vm.NICs {
		if !Networks[nic.Network] {
			return fmt.Errorf("VM %s: NIC %d: unknown network %q (known: lan): %w", vm.Name, i, nic.Network, ErrInvalid)
		}
		hw, err := net.ParseMAC(nic.MAC)
		if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
			return fmt.Errorf("VM %s: NIC %d: MAC %q is not a unicast Ethernet address: %w", vm.Name, i, nic.MAC, ErrInvalid)
		}
		if macs[hw.String()] {
			return fmt.Errorf("VM %s: MAC %s twice: %w", vm.Name, hw, ErrInvalid)
		}
		macs[hw.String()] = true
		vm.NICs[i].MAC = hw.String()
	}
	if b := vm.Boot; b != nil {
		for field, name := range map[string]string{"kernel": b.Kernel, "initrd": b.Initrd} {
			if name == "" && field == "initrd" {
				continue
			}
			if name == "" || path.IsAbs(name) || path.Clean(name) != name || strings.HasPrefix(name, "..") {
				return fmt.Errorf("VM %s: boot %s %q: want a plain path inside the guest boot directory: %w", vm.Name, field, name, ErrInvalid)
			}
		}
		if err := checkText("boot cmdline", b.Cmdline, 2048); err != nil {
			return err
		}
	}
	if vm.Node != "" && !d.isNode(vm.Node) {
		return fmt.Errorf("VM %s: %q is not a node of the cluster: %w", vm.Name, vm.Node, ErrInvalid)
	}
	if vm.MigrateTo != "" && (!vm.Running || vm.MigrateTo == vm.Node || !d.isNode(vm.MigrateTo)) {
		return fmt.Errorf("VM %s: a migration goes from the node running the VM to another node: %w", vm.Name, ErrInvalid)
	}
	if vm.Running && vm.Node == "" {
		return fmt.Errorf("VM %s: a running VM needs a node: %w", vm.Name, ErrInvalid)
	}
	return nil
}
