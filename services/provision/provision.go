// Package provision is the provisioning network's server, run on every
// node and active on the one the plan names. There it gives the
// provisioning port the plan's address and serves what a new machine
// needs to install itself: DHCP (or proxyDHCP beside the site's server),
// TFTP for the iPXE loaders, an IPv6 router advertisement that spares
// iPXE its autoconfiguration wait, and, through the front door's plain
// HTTP, the iPXE scripts and the installer's kernel and initramfs
// (/boot/). It follows the plan in the directory: switched on, moved to
// another node or off, the network service starts and stops with it.
package provision

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// Config is the service's configuration.
type Config struct {
	Cluster   *cluster.LocalClient
	Interface string // the provisioning port (prov0)
	DataDir   string // leases and the installer's files
	Socket    string // where the front door passes /boot/ on
	// Loaders are the iPXE binaries TFTP serves (LoaderBIOS, LoaderUEFI).
	Loaders fs.FS
	// Installer fills a directory with the installer's vmlinuz,
	// initramfs.cpio.zst and version: the running system slot's.
	Installer func(dir string) error
	CACert    string   // the cluster CA's certificate (PEM), which installers pin
	Port      int      // the front door's port
	Console   []string // kernel arguments for the installer's consoles
	Logger    *slog.Logger
}

// The iPXE loaders PXE ROMs fetch by TFTP.
const (
	LoaderBIOS = "undionly.kpxe"
	LoaderUEFI = "snponly.efi"
)

// Service is the provisioning server.
type Service struct {
	cfg   Config
	log   *slog.Logger
	files *installerFiles
	pxe   *pxeReporter

	mu      sync.Mutex
	serving *served // nil: not serving here
	running *network
}

// served is what the HTTP boot side answers from: the plan this node
// serves, and the directory's view of machines.
type served struct {
	plan          directory.Provisioning
	addr          netip.Addr
	caFingerprint string
	diskBoot      map[string]bool
}

// network is a running network service and how to stop it.
type network struct {
	plan   directory.Provisioning
	cancel context.CancelFunc
	done   chan struct{}
}

// New checks the configuration.
func New(cfg Config) (*Service, error) {
	if cfg.Cluster == nil || cfg.Interface == "" || cfg.DataDir == "" || cfg.Socket == "" || cfg.Loaders == nil || cfg.Installer == nil || cfg.Port == 0 {
		return nil, errors.New("provision: Cluster, Interface, DataDir, Socket, Loaders, Installer and Port are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	s.files = &installerFiles{dir: cfg.DataDir + "/installer", fill: cfg.Installer}
	s.pxe = newPXEReporter(cfg.Cluster, cfg.Logger)
	return s, nil
}

// Run serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	l, err := frontdoor.ListenSocket(s.cfg.Socket)
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return frontdoor.ServeSocket(gctx, l, s.Handler(), s.log) })
	g.Go(func() error { s.pxe.run(gctx); return nil })
	g.Go(func() error { s.follow(gctx); return nil })
	err = g.Wait()
	s.stopNetwork()
	return err
}

// follow starts, restarts or stops the network service as the plan in
// the directory says.
func (s *Service) follow(ctx context.Context) {
	const wait = 10 * time.Second
	s.cfg.Cluster.Follow(ctx, wait, s.log, func(view cluster.LocalView) { s.reconcile(ctx, view) })
}

// reconcile serves the plan if it names this node, and stops serving
// if it no longer does.
func (s *Service) reconcile(ctx context.Context, view cluster.LocalView) {
	plan, here := planHere(view)
	var sv *served
	if here {
		sv = &served{plan: plan, caFingerprint: view.CAFingerprint, diskBoot: map[string]bool{}}
		if p, err := netip.ParsePrefix(plan.Address); err == nil {
			sv.addr = p.Addr()
		}
		for _, mac := range view.DiskBoot {
			sv.diskBoot[mac] = true
		}
	}
	s.mu.Lock()
	s.serving = sv
	running := s.running
	s.mu.Unlock()

	if running != nil && (!here || !sameNetwork(running.plan, plan)) {
		s.log.Info("provisioning network: stopping", "node", running.plan.Node, "address", running.plan.Address)
		s.stopNetwork()
		running = nil
	}
	if here && running == nil {
		s.log.Info("provisioning network: starting", "mode", plan.Mode, "address", plan.Address, "interface", s.cfg.Interface)
		s.startNetwork(ctx, plan)
	}
}

// planHere returns the plan if it is on and names this node.
func planHere(view cluster.LocalView) (directory.Provisioning, bool) {
	p := view.Provisioning
	if !view.InCluster || p == nil || !p.Enabled {
		return directory.Provisioning{}, false
	}
	for _, m := range view.Members {
		if m.ID == view.Self {
			return *p, m.Name == p.Node
		}
	}
	return directory.Provisioning{}, false
}

// sameNetwork says whether two plans serve the same network (the
// allowlist and the record's times do not matter to it).
func sameNetwork(a, b directory.Provisioning) bool {
	a.AutoApprove, b.AutoApprove = nil, nil
	a.Updated, b.Updated = time.Time{}, time.Time{}
	a.UpdatedBy, b.UpdatedBy = "", ""
	return reflect.DeepEqual(a, b)
}

// startNetwork runs the network service until stopNetwork; a failure
// (the port missing, the address taken) is retried.
func (s *Service) startNetwork(ctx context.Context, plan directory.Provisioning) {
	nctx, cancel := context.WithCancel(ctx)
	n := &network{plan: plan, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.running = n
	s.mu.Unlock()
	go func() {
		defer close(n.done)
		for nctx.Err() == nil {
			err := s.serveNetwork(nctx, plan)
			if nctx.Err() != nil {
				return
			}
			s.log.Error("provisioning network failed; trying again in 5 s", "err", err)
			sleep(nctx, 5*time.Second)
		}
	}()
}

func (s *Service) stopNetwork() {
	s.mu.Lock()
	n := s.running
	s.running = nil
	s.mu.Unlock()
	if n != nil {
		n.cancel()
		<-n.done
	}
}

func (s *Service) current() *served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
