// Package clustercmd is the tandem-cluster command: a node's cluster
// agent, reached through the node's front door on a Unix socket.
package clustercmd

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/pki"
)

// Main runs the agent with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-cluster", flag.ContinueOnError)
	data := fs.String("data", "/data/cluster", "raft log, snapshots and the member certificate")
	socket := fs.String("socket", "/run/tandem/cluster.sock", "where the front door reaches the agent")
	name := fs.String("name", "", "member name (default: the host name)")
	mgmt := fs.String("mgmt", "br-mgmt", "management interface: its IPv4 addresses are advertised, the cluster IP goes on it")
	ic := fs.String("interconnect", "ic0", "interconnect interface: its IPv6 link-local address is advertised first, peers are discovered on it")
	port := fs.Int("port", 443, "the front door's port")
	advertise := fs.String("advertise", "", "host:port addresses to advertise instead of those of the interfaces, comma separated")
	heartbeat := fs.Duration("heartbeat", cluster.DefaultTiming().Heartbeat, "raft heartbeat timeout (a follower campaigns after 1-2x this)")
	lease := fs.Duration("lease", cluster.DefaultTiming().LeaderLease, "leader lease (under the heartbeat timeout)")
	console := fs.String("console", "/dev/console", "where to show the setup code while not in a cluster (empty: nowhere)")
	supervisor := fs.String("supervisor", statusapi.Socket, "the supervisor's status API, for the inventory")
	fenceCommand := fs.String("fence-command", "", "the board's fence, a JSON array: the program and arguments that power a lost node off ({node}, {bmc})")
	fenceTimeout := fs.Duration("fence-timeout", 15*time.Second, "how long the board's fence may take")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	addrs := InterfaceAddresses(*ic, *mgmt, *port)
	if *advertise != "" {
		list := strings.Split(*advertise, ",")
		addrs = func() []string { return list }
	}
	var fence *cluster.BoardFence
	if *fenceCommand != "" {
		fence = &cluster.BoardFence{Timeout: *fenceTimeout}
		if err := json.Unmarshal([]byte(*fenceCommand), &fence.Command); err != nil || len(fence.Command) == 0 {
			fmt.Fprintf(os.Stderr, "-fence-command: want a JSON array of strings, the program first: %v\n", err)
			return 2
		}
	}
	sup := statusapi.NewClient(*supervisor)
	inv := inventory(sup)
	a, err := cluster.New(cluster.Config{
		Role: pki.RoleNode, Name: *name, DataDir: *data, Socket: *socket, Addresses: addrs,
		ClusterIPDevice: *mgmt, Interconnect: *ic, Port: *port,
		// Written by the installer that made this node.
		JoinFile:  filepath.Join(*data, "join.json"),
		Timing:    cluster.Timing{Heartbeat: *heartbeat, LeaderLease: *lease},
		Version:   inv().ImageVersion,
		Inventory: inv,
		ServiceLog: func(ctx context.Context, service string, lines int) ([]cluster.LogLine, error) {
			got, err := sup.ServiceLog(ctx, service, lines)
			out := make([]cluster.LogLine, 0, len(got))
			for _, l := range got {
				out = append(out, cluster.LogLine{Time: l.Time, Text: l.Text})
			}
			return out, err
		},
		BoardFence: fence,
		Logger:     log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *console != "" && !(pki.Files{Dir: *data + "/tls"}).Exists() {
		// Whoever stands at the box needs this code to bootstrap or join.
		if f, err := os.OpenFile(*console, os.O_WRONLY, 0); err == nil {
			fmt.Fprintf(f, "\r\nTandem node %s is not in a cluster yet. Setup code: %s\r\n\r\n", *name, a.SetupCode())
			f.Close()
		}
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// InterfaceAddresses advertises the front door on the interconnect's IPv6
// link-local address first (the direct link between the nodes), then on
// the management interface's IPv4 addresses.
func InterfaceAddresses(ic, mgmt string, port int) func() []string {
	p := strconv.Itoa(port)
	return func() []string {
		var out []string
		if ifi, err := net.InterfaceByName(ic); err == nil {
			if addrs, err := ifi.Addrs(); err == nil {
				for _, a := range addrs {
					if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
						out = append(out, net.JoinHostPort(ipn.IP.String()+"%"+ic, p))
					}
				}
			}
		}
		if ifi, err := net.InterfaceByName(mgmt); err == nil {
			if addrs, err := ifi.Addrs(); err == nil {
				for _, a := range addrs {
					if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
						out = append(out, net.JoinHostPort(ipn.IP.String(), p))
					}
				}
			}
		}
		return out
	}
}

// inventory reports the node's hardware and firmware; the supervisor
// knows the board and image version.
func inventory(sup *statusapi.Client) func() directory.Inventory {
	var mu sync.Mutex
	var cached directory.Inventory
	var at time.Time
	return func() directory.Inventory {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < time.Minute {
			return cached
		}
		inv := directory.Inventory{CPUs: runtime.NumCPU(), MemoryBytes: memTotal()}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if n, err := sup.Node(ctx); err == nil {
			inv.Board, inv.ImageVersion, inv.WatchdogSeconds = n.Board, n.Version, n.WatchdogTimeoutSeconds
		}
		cached, at = inv, time.Now()
		return inv
	}
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int64
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}
