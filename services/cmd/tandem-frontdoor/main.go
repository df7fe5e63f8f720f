// Package frontdoorcmd is the tandem-frontdoor command: the node's one TCP
// port, with every route of the node wired here.
package frontdoorcmd

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// Main runs the front door with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-frontdoor", flag.ContinueOnError)
	listen := fs.String("listen", ":443", "address to listen on")
	state := fs.String("state", "/data/frontdoor", "directory for the certificate used before the node joins a cluster")
	tlsDir := fs.String("member-tls", "/data/cluster/tls", "the member certificate and cluster CA, written by the cluster agent")
	supervisor := fs.String("supervisor", statusapi.Socket, "the supervisor's status API socket")
	cluster := fs.String("cluster", "/run/tandem/cluster.sock", "the cluster agent's socket")
	storageSocket := fs.String("storage", "/run/tandem/storage.sock", "the storage service's socket")
	vmmSocket := fs.String("vmm", "/run/tandem/vmm.sock", "the VM manager's socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	src, err := frontdoor.NewTLSSource(pki.Files{Dir: *tlsDir}, *state, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clusterAgent := frontdoor.UnixBackend(*cluster, log)
	storage := frontdoor.UnixBackend(*storageSocket, log)
	vms := frontdoor.UnixBackend(*vmmSocket, log)
	fd, err := frontdoor.New(frontdoor.Config{
		Listen: *listen, TLS: src, Logger: log, Auditor: clusterAgent,
		// First match wins.
		Routes: []frontdoor.Route{
			{Name: "health", Prefix: "/api/v1/health", Method: "GET", Backend: frontdoor.HealthHandler(statusapi.NewClient(*supervisor))},
			{Name: "raft", Upgrade: frontdoor.UpgradeRaft, Member: true, Backend: clusterAgent},
			{Name: "replication", Upgrade: frontdoor.UpgradeReplication, Member: true, Backend: storage},
			{Name: "storage", Prefix: "/api/v1/storage/", Backend: storage},
			{Name: "migration", Upgrade: frontdoor.UpgradeMigration, Member: true, Backend: vms},
			{Name: "vmm", Prefix: "/api/v1/vmm/", Backend: vms},
			{Name: "api", Prefix: "/api/v1/", Backend: clusterAgent},
		},
	})
	if err == nil {
		err = fd.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
