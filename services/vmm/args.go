package vmm

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strings"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/qemu"
)

// paths are where one VM's QEMU keeps its sockets and files.
type paths struct {
	dir string // RunDir/<vm>
}

func (p paths) qmp() string       { return filepath.Join(p.dir, "qmp.sock") }
func (p paths) serial() string    { return filepath.Join(p.dir, "serial.sock") }
func (p paths) serialLog() string { return filepath.Join(p.dir, "serial.log") }
func (p paths) vnc() string       { return filepath.Join(p.dir, "vnc.sock") }
func (p paths) pidfile() string   { return filepath.Join(p.dir, "qemu.pid") }
func (p paths) def() string       { return filepath.Join(p.dir, "vm.json") }

// qemuLog is QEMU's own log (-D): once daemonized, QEMU writes its
// errors there, not to the stderr the manager reads at start.
func (p paths) qemuLog() string { return filepath.Join(p.dir, "qemu.log") }

// tapName is the name of a VM NIC's tap: at most 15 bytes, the same for
// the same VM and NIC on either node.
func tapName(vm string, nic int) string {
	return fmt.Sprintf("tv%08x%d", crc32.ChecksumIEEE([]byte(vm)), nic)
}

// qemuOptionValue escapes a value for QEMU's option syntax (a comma is
// written twice).
func qemuOptionValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// qemuArgs is the command line of a VM's QEMU. Disks are the VM's
// volumes from the storage service's NBD socket; NICs are taps the
// manager puts on the LAN bridge; QEMU daemonizes, so it outlives a
// restart of the manager, and is driven over QMP.
//
// A fault-tolerant VM's secondary (secondary not nil) has the same
// hardware, its disks and NICs wired for COLO (ftqemu.go).
func qemuArgs(vm directory.VM, p paths, acc qemu.Accelerator, nbdSocket, bootDir string, secondary *coloSecondary) []string {
	args := []string{
		"-name", qemuOptionValue(vm.Name) + ",process=tandem-vm-" + qemuOptionValue(vm.Name),
		"-machine", "q35",
		"-m", fmt.Sprintf("%d", vm.MemoryMiB),
		// One CPU at boot, the others as devices: the same hardware as a
		// VM that got them by hot-add (hotplug.go), which a migration
		// between the two needs.
		"-smp", fmt.Sprintf("1,sockets=1,cores=%d,threads=1,maxcpus=%d", maxCPUs(vm), maxCPUs(vm)),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-vga", "std",
		"-vnc", "unix:" + qemuOptionValue(p.vnc()),
		"-chardev", "socket,id=qmp,path=" + qemuOptionValue(p.qmp()) + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=serial0,path=" + qemuOptionValue(p.serial()) + ",server=on,wait=off,logfile=" + qemuOptionValue(p.serialLog()),
		"-serial", "chardev:serial0",
		"-device", "virtio-rng-pci",
		"-pidfile", p.pidfile(),
		"-D", p.qemuLog(), "-msg", "timestamp=on",
		"-daemonize",
	}
	args = append(args, acc.Args()...)
	for i := 1; i < vm.CPUs; i++ {
		args = append(args, "-device", fmt.Sprintf("%s,id=cpu%d,socket-id=0,core-id=%d,thread-id=0", acc.CPUDevice(), i, i))
	}
	// One PCI bridge with a slot for every disk and NIC the VM may have
	// (hotplug.go), hot-plugged through ACPI. A PCIe root port per slot
	// would do too, but 24 of them cost the guest's kernel 1.2 s of boot
	// under TCG; the bridge costs nothing measurable.
	args = append(args, "-device", "pci-bridge,id="+hotplugBus+",chassis_nr=1,shpc=off")
	for i, d := range vm.Disks {
		node := diskNode(i)
		if secondary != nil {
			args = append(args, "-blockdev", jsonArg(secondary.base(i, d.Volume, nbdSocket)), "-blockdev", jsonArg(secondary.disk(i)))
		} else {
			args = append(args, "-blockdev", jsonArg(primaryDisk(i, d.Volume, nbdSocket)))
		}
		args = append(args, "-device", fmt.Sprintf("virtio-blk-pci,drive=%s,id=vd%d,bus=%s,addr=%#x,bootindex=%d", node, i, hotplugBus, diskSlot(i), i+1))
	}
	for i, n := range vm.NICs {
		// vhost stays off: COLO's filters see the NIC's packets in QEMU.
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no,vhost=off", i, tapName(vm.Name, i)),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=net%d,mac=%s,id=nic%d,bus=%s,addr=%#x", i, n.MAC, i, hotplugBus, nicSlot(i)))
		if secondary != nil {
			args = append(args, secondary.nicArgs(i)...)
		}
	}
	if b := vm.Boot; b != nil {
		args = append(args, "-kernel", filepath.Join(bootDir, b.Kernel))
		if b.Initrd != "" {
			args = append(args, "-initrd", filepath.Join(bootDir, b.Initrd))
		}
		args = append(args, "-append", "console=ttyS0 "+b.Cmdline)
	}
	return args
}

// diskNode is the block node a VM's disk i is seen through: a quorum of
// one child, the volume, at every start, so that COLO's replication can
// join it as a second child when FT is switched on, without a restart.
func diskNode(i int) string { return fmt.Sprintf("disk%d", i) }

// primaryDisk is disk i as every VM starts with it (and a hot-add adds
// it): the volume from the storage service's NBD socket under a quorum
// that waits for one child.
func primaryDisk(i int, volume, nbdSocket string) map[string]any {
	return map[string]any{
		"driver": "quorum", "node-name": diskNode(i), "vote-threshold": 1, "read-pattern": "fifo",
		"children": []any{map[string]any{
			"driver": "raw", "node-name": fmt.Sprintf("disk%d-volume", i), "discard": "unmap",
			"file": map[string]any{"driver": "nbd", "export": volume,
				"server": map[string]any{"type": "unix", "path": nbdSocket}},
		}},
	}
}

// jsonArg is a -blockdev or -object argument in QEMU's JSON syntax.
func jsonArg(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
