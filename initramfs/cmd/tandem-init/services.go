package tandeminit

import (
	"encoding/json"
	"strconv"

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
