package tandeminit

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/initramfs/netconf"
	"github.com/tandemhci/tandem/initramfs/settings"
	"github.com/tandemhci/tandem/initramfs/supervisor"
)

// bin is where the image links Tandem's commands to its one binary.
const bin = "/usr/bin/"

// clusterSocket is where the front door reaches the cluster agent.
const clusterSocket = "/run/tandem/cluster.sock"

// serviceTable is the node's one declared table of services.
func serviceTable(s *settings.Settings, b *board.Board) []supervisor.Service {
	port := strconv.Itoa(s.Int(settings.KeyFrontdoorPort))
	clusterArgs := []string{"-data", dataDir + "/cluster", "-socket", clusterSocket, "-port", port,
		"-mgmt", netconf.ManagementBridge, "-interconnect", netconf.InterconnectPort,
		"-heartbeat", s.Get(settings.KeyHeartbeat), "-lease", s.Get(settings.KeyLeaderLease)}
	if f := b.Fence; f != nil {
		// The board's fence: the leader powers a lost node off through
		// its BMC and restarts its HA VMs without waiting for its watchdog.
		cmd, _ := json.Marshal(f.Command)
		clusterArgs = append(clusterArgs, "-fence-command", string(cmd))
		if f.Timeout > 0 {
			clusterArgs = append(clusterArgs, "-fence-timeout", f.Timeout.String())
		}
	}
	table := []supervisor.Service{
		{
			// The only port the node exposes: web console, API, raft,
			// replication and join, routed to the services' sockets.
			Name:      "frontdoor",
			Path:      bin + "tandem-frontdoor",
			Args:      []string{"-listen", ":" + port, "-state", dataDir + "/frontdoor"},
			Critical:  true,
			ReadyDial: "tcp:127.0.0.1:" + port,
		},
		{
			// Raft with the peer node and the witness, the replicated
			// directory and the cluster IP; reached through the front door.
			Name:      "cluster",
			Path:      bin + "tandem-cluster",
			Args:      clusterArgs,
			Critical:  true,
			ReadyDial: "unix:" + clusterSocket,
		},
		{
			// This node's copies of the replicated volumes: NBD for QEMU,
			// replication with the peer through the front door.
			Name: "storage",
			Path: bin + "tandem-storage",
			Args: []string{"-data", dataDir + "/volumes", "-cluster", clusterSocket,
				"-resync-rate", strconv.FormatInt(int64(s.Int(settings.KeyResyncRate))<<20, 10)},
			After:    []string{"cluster"},
			Critical: true,
		},
		{
			// One QEMU per VM this node runs; the QEMUs outlive a restart
			// of the manager.
			Name:     "vmm",
			Path:     bin + "tandem-vmm",
			Args:     []string{"-state", dataDir + "/vmm", "-cluster", clusterSocket, "-bridge", netconf.ManagementBridge},
			After:    []string{"storage"},
			Critical: true,
		},
	}
	slot := s.Get(settings.KeySlot)
	if slot == "" {
		slot = "a" // started without GRUB (a direct kernel boot): slot A holds the same image
	}
	table = append(table, supervisor.Service{
		// The provisioning network's server, active on the node the
		// plan names: new machines PXE-boot the installer from it.
		Name: "provision",
		Path: bin + "tandem-provision",
		Args: []string{"-interface", netconf.ProvisioningPort, "-data", dataDir + "/provision", "-cluster", clusterSocket,
			"-port", port, "-slot", slot, "-console", "console=tty0 " + b.Console.KernelArg()},
		After: []string{"cluster"},
	})
	return withConsoleShell(table, s, b)
}

// installerTable is the service table of installer mode: the installer,
// and the console shell to watch it from.
func installerTable(s *settings.Settings, b *board.Board, mac string) []supervisor.Service {
	return withConsoleShell([]supervisor.Service{{
		Name: "installer",
		Path: bin + "tandem-installer",
		Args: []string{"-provision", s.Get(settings.KeyProvision), "-ca", s.Get(settings.KeyCA), "-mac", mac},
	}}, s, b)
}

// installerRoles bring up, in installer mode, only the NIC the machine
// booted from (BOOTIF), with DHCP; the provisioning NIC if none matches.
func installerRoles(b *board.Board, mac string) map[board.Role]netconf.RoleConfig {
	roles := map[board.Role]netconf.RoleConfig{}
	boot := board.RoleProvisioning
	if ifaces, err := netconf.Discover("/sys/class/net"); err == nil {
		for r, i := range b.AssignRoles(ifaces) {
			if strings.EqualFold(i.MAC, mac) {
				boot = r
			}
		}
	}
	for _, nic := range b.NICs {
		roles[nic.Role] = netconf.RoleConfig{Mode: netconf.ModeOff}
	}
	roles[boot] = netconf.RoleConfig{Mode: netconf.ModeDHCP}
	return roles
}

// bootMAC is the MAC in BOOTIF=01-aa-bb-cc-dd-ee-ff on the kernel command
// line (pxelinux's form, which the iPXE script passes), as aa:bb:….
func bootMAC(cmdline string) string {
	for _, w := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(w, "BOOTIF="); ok {
			v = strings.TrimPrefix(v, "01-")
			return strings.ReplaceAll(v, "-", ":")
		}
	}
	return ""
}

func withConsoleShell(table []supervisor.Service, s *settings.Settings, b *board.Board) []supervisor.Service {
	if s.On(settings.KeyConsoleShell) && b.Console.Device != "" {
		table = append(table, supervisor.Service{
			// A shell on the serial console for whoever stands at the box;
			// supervisorctl shows and steers the services from it.
			Name: "console-shell",
			Path: "/bin/sh",
			TTY:  "/dev/" + b.Console.Device,
		})
	}
	return table
}
