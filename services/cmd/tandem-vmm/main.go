// Package vmmcmd is the tandem-vmm command: the node's VM manager.
package vmmcmd

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/initramfs/watchdog"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/pki"
	"github.com/tandemhci/tandem/services/qemu"
	"github.com/tandemhci/tandem/services/vmm"
)

// Main runs the VM manager with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-vmm", flag.ContinueOnError)
	runDir := fs.String("run", "/run/tandem/vms", "one folder per running VM (QMP, serial and VNC sockets)")
	stateDir := fs.String("state", "/data/vmm", "what the VM manager keeps across reboots (VM histories)")
	bootDir := fs.String("boot", "/usr/share/tandem", "kernels VMs may boot")
	nbdSocket := fs.String("nbd", "/run/tandem/nbd.sock", "the storage service's NBD socket")
	bridge := fs.String("bridge", "br-mgmt", "the LAN bridge VM NICs join")
	socket := fs.String("socket", "/run/tandem/vmm.sock", "where the front door reaches the VM manager")
	clusterSocket := fs.String("cluster", "/run/tandem/cluster.sock", "the cluster agent's socket")
	tlsDir := fs.String("member-tls", "/data/cluster/tls", "the member certificate and cluster CA, written by the cluster agent")
	qemuBin := fs.String("qemu", qemu.System, "the system emulator")
	fenceLease := fs.String("fence-lease", watchdog.LeasePath, "where the VM manager promises the supervisor that its VMs stop once the node loses the cluster")
	shutdown := fs.Duration("shutdown-timeout", 60*time.Second, "how long a guest has to power off after the ACPI button")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	live := pki.NewLive(pki.Files{Dir: *tlsDir})
	self, err := pki.WaitIdentity(ctx, live, log)
	if err != nil {
		return 0
	}
	m, err := vmm.New(vmm.Config{
		RunDir: *runDir, StateDir: *stateDir, BootDir: *bootDir, NBDSocket: *nbdSocket, Bridge: *bridge, QEMU: *qemuBin,
		Socket: *socket, Cluster: cluster.NewLocalClient(*clusterSocket), FenceLease: *fenceLease,
		Dialer:          &memberconn.Dialer{Self: self, Live: live, PerAddress: 700 * time.Millisecond},
		ShutdownTimeout: *shutdown, Logger: log,
	})
	if err == nil {
		err = m.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
