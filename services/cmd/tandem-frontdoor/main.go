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
	"slices"
	"syscall"

	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/services/apidoc"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
	"github.com/tandemhci/tandem/services/storage"
	"github.com/tandemhci/tandem/services/vmm"
	"github.com/tandemhci/tandem/web"
)

// Version is the firmware's version, set at link time.
var Version = "dev"

// APIRoutes is every endpoint a node's front door serves, for the API's
// document: its own, the cluster agent's, the storage service's and the
// VM manager's.
func APIRoutes() []apidoc.Route {
	own := []apidoc.Route{
		{Method: "GET", Path: "/api/v1/health", Access: apidoc.Public, Summary: "This node's health: its services and their restarts (from the supervisor)", Response: frontdoor.Health{}},
		{Method: "GET", Path: "/api/v1/openapi.json", Access: apidoc.Public, Summary: "This document", Status: 200},
		{Method: "GET", Path: "/metrics", Access: apidoc.Viewer, Summary: "The node's metrics for Prometheus (text format): raft, members, VMs, volumes, replication, CPU, memory, network and disks", Status: 200},
	}
	return slices.Concat(own, cluster.APIRoutes(), storage.APIRoutes(), vmm.APIRoutes())
}

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
	provisionSocket := fs.String("provision", "/run/tandem/provision.sock", "the provisioning server's socket")
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
	console, err := web.Handler(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	doc, err := apidoc.Handler("Tandem", Version, APIRoutes())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fd, err := frontdoor.New(frontdoor.Config{
		Listen: *listen, TLS: src, Logger: log, Auditor: clusterAgent,
		// First match wins.
		Routes: []frontdoor.Route{
			// Plain HTTP too: iPXE fetches its script and the installer
			// from here, and cannot pin our CA.
			{Name: "boot", Prefix: "/boot/", Method: "GET", Plain: true, Backend: frontdoor.UnixBackend(*provisionSocket, log)},
			{Name: "health", Prefix: "/api/v1/health", Method: "GET", Backend: frontdoor.HealthHandler(statusapi.NewClient(*supervisor))},
			{Name: "raft", Upgrade: frontdoor.UpgradeRaft, Member: true, Backend: clusterAgent},
			{Name: "replication", Upgrade: frontdoor.UpgradeReplication, Member: true, Backend: storage},
			{Name: "storage", Prefix: "/api/v1/storage/", Backend: storage},
			{Name: "migration", Upgrade: frontdoor.UpgradeMigration, Member: true, Backend: vms},
			{Name: "vmm", Prefix: "/api/v1/vmm/", Backend: vms},
			{Name: "openapi", Prefix: "/api/v1/openapi.json", Method: "GET", Backend: doc},
			{Name: "metrics", Prefix: "/metrics", Method: "GET", Backend: frontdoor.MetricsHandler([]frontdoor.MetricsPart{
				{Name: "cluster", Path: "/api/v1/cluster/metrics", Backend: clusterAgent},
				{Name: "storage", Path: "/api/v1/storage/metrics", Backend: storage},
				{Name: "vmm", Path: "/api/v1/vmm/metrics", Backend: vms},
			})},
			{Name: "api", Prefix: "/api/v1/", Backend: clusterAgent},
			{Name: "console", Prefix: "/", Backend: console},
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
