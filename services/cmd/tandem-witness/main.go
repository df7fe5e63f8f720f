// Package witnesscmd is the tandem-witness command: the cluster's third
// vote. It stores the raft log but never runs VMs and never leads, and
// runs on any Linux host (a provisioning server, a small VM, a Raspberry
// Pi) with one line:
//
//	tandem-witness -join 192.0.2.11:443 -token tdm1-…
//
// The cluster agent and the front door run in this one process.
package witnesscmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

// Main runs the witness with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-witness", flag.ContinueOnError)
	listen := fs.String("listen", ":443", "the witness's front door")
	data := fs.String("data", "/var/lib/tandem-witness", "raft log and the member certificate")
	name := fs.String("name", "", "member name (default: the host name)")
	advertise := fs.String("advertise", "", "host:port the nodes reach this witness at (default: the address that routes to the first -join peer)")
	join := fs.String("join", "", "host:port of cluster members to join through, comma separated (first start only)")
	token := fs.String("token", "", "join token from the cluster")
	heartbeat := fs.Duration("heartbeat", cluster.DefaultTiming().Heartbeat, "raft heartbeat timeout of the nodes (the witness waits 4x this before campaigning)")
	lease := fs.Duration("lease", cluster.DefaultTiming().LeaderLease, "leader lease")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, log, *listen, *data, *name, *advertise, *join, *token, cluster.Timing{Heartbeat: *heartbeat, LeaderLease: *lease}); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-witness:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, log *slog.Logger, listen, data, name, advertise, join, token string, timing cluster.Timing) error {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	var peers []string
	if join != "" {
		peers = strings.Split(join, ",")
	}
	addrs, err := advertised(advertise, peers, port)
	if err != nil {
		return err
	}
	p, _ := strconv.Atoi(port)
	a, err := cluster.New(cluster.Config{
		Role: pki.RoleWitness, Name: name, DataDir: data, Addresses: func() []string { return addrs },
		Port: p, Timing: timing, Version: Version, Logger: log,
	})
	if err != nil {
		return err
	}
	src, err := frontdoor.NewTLSSource(pki.Files{Dir: data + "/tls"}, data+"/frontdoor", log)
	if err != nil {
		return err
	}
	agent := a.Handler()
	fd, err := frontdoor.New(frontdoor.Config{
		Listen: listen, TLS: src, Logger: log, Auditor: agent,
		Routes: []frontdoor.Route{
			{Name: "health", Prefix: "/api/v1/health", Method: "GET", Backend: health(a, name)},
			{Name: "raft", Upgrade: frontdoor.UpgradeRaft, Member: true, Backend: agent},
			{Name: "api", Prefix: "/api/v1/", Backend: agent},
		},
	})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	g.Go(func() error { return fd.Run(gctx) })
	if !(pki.Files{Dir: data + "/tls"}).Exists() {
		if token == "" || len(peers) == 0 {
			log.Warn("not in a cluster: start with -join and -token")
		} else {
			g.Go(func() error { joinLoop(gctx, log, a, token, peers); return nil })
		}
	}
	return g.Wait()
}

// joinLoop joins, retrying while the cluster cannot be reached; a refusal
// (wrong token, say) is final.
func joinLoop(ctx context.Context, log *slog.Logger, a *cluster.Agent, token string, peers []string) {
	for {
		err := a.Join(ctx, token, peers)
		if err == nil || errors.Is(err, cluster.ErrInCluster) {
			log.Info("witness joined the cluster")
			return
		}
		if strings.Contains(err.Error(), "refused") {
			log.Error("join refused", "err", err)
			return
		}
		log.Warn("join failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
	}
}

// advertised returns the address the nodes reach the witness at.
func advertised(flagValue string, peers []string, port string) ([]string, error) {
	if flagValue != "" {
		return strings.Split(flagValue, ","), nil
	}
	if len(peers) == 0 {
		return nil, errors.New("-advertise is needed when there is no -join peer to find the route from")
	}
	// The local address of a route to the first peer (no packet is sent).
	c, err := net.Dial("udp", peers[0])
	if err != nil {
		return nil, fmt.Errorf("find the address that reaches %s: %w (set -advertise)", peers[0], err)
	}
	defer c.Close()
	host, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return []string{net.JoinHostPort(host, port)}, nil
}

// health answers /api/v1/health for the witness: it has no supervisor,
// the agent is its one service.
func health(a *cluster.Agent, name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := a.LocalStatus()
		state := "running"
		frontdoor.WriteJSON(w, http.StatusOK, frontdoor.Health{
			Node: name, Version: Version, Board: "witness", Healthy: true, Problems: []string{},
			Services: []frontdoor.ServiceHealth{{Name: "cluster-agent (" + st.State + ")", State: state, Critical: true}},
		})
	})
}
