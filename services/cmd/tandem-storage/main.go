// Package storagecmd is the tandem-storage command: the node's replicated
// volumes, served to QEMU over NBD and to the peer through the front door.
package storagecmd

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/pki"
	"github.com/tandemhci/tandem/services/storage"
)

// Main runs the storage service with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-storage", flag.ContinueOnError)
	data := fs.String("data", "/data/volumes", "where this node's copies of the volumes live")
	nbdSocket := fs.String("nbd", "/run/tandem/nbd.sock", "NBD socket QEMU opens the volumes on")
	socket := fs.String("socket", "/run/tandem/storage.sock", "where the front door reaches the service")
	clusterSocket := fs.String("cluster", "/run/tandem/cluster.sock", "the cluster agent's socket")
	tlsDir := fs.String("member-tls", "/data/cluster/tls", "the member certificate and cluster CA, written by the cluster agent")
	resyncRate := fs.Int64("resync-rate", 0, "resync bandwidth bound in bytes per second (0: none)")
	qemuImg := fs.String("qemu-img", "qemu-img", "qemu-img, for image import and export")
	fenceTimeout := fs.Duration("fence-timeout", 30*time.Second, "how long a write waits for the cluster to record the peer outdated before it fails")
	slow := fs.Duration("slow-disk", 200*time.Millisecond, "mean I/O wait above which a disk is reported slow")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	files := pki.Files{Dir: *tlsDir}
	live := pki.NewLive(files)
	// The member identity comes from the certificate the agent wrote at
	// bootstrap or join; until then there is nothing to replicate.
	self, err := pki.WaitIdentity(ctx, live, log)
	if err != nil {
		return 0
	}
	svc, err := storage.New(storage.Config{
		DataDir: *data, NBDSocket: *nbdSocket, Socket: *socket,
		Cluster:    cluster.NewLocalClient(*clusterSocket),
		Dialer:     &memberconn.Dialer{Self: self, Live: live, PerAddress: 700 * time.Millisecond},
		ResyncRate: *resyncRate, FenceTimeout: *fenceTimeout, QemuImg: *qemuImg, SlowDiskAwait: *slow, Logger: log,
	})
	if err == nil {
		err = svc.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
