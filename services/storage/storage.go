// Package storage is the node's storage service: it keeps this node's copy
// of every replicated volume the way the cluster's directory says (created,
// grown, primary or secondary at the committed role generation, deleted),
// serves the primary copies to QEMU over NBD on a Unix socket, streams
// replication to and from the peer through the front door, and answers
// the data-plane API under /api/v1/storage/ (status, verify, images, disks).
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/nbd"
)

// Config wires the service into the node.
type Config struct {
	// DataDir holds the copies: <volume ID>.data and <volume ID>.meta.
	DataDir string
	// NBDSocket is where QEMU reaches the volumes this node is primary
	// for, one export per volume name.
	NBDSocket string
	// Socket serves the API and the peer's replication streams, behind
	// the front door.
	Socket string
	// Cluster is the cluster agent's node-local API.
	Cluster *cluster.LocalClient
	// Dialer reaches the peer's front door as this member.
	Dialer *memberconn.Dialer
	// ResyncRate bounds resync traffic in bytes per second (0: none).
	ResyncRate int64
	// FenceTimeout is how long a write waits for the cluster to record the
	// peer's copy outdated before it fails (default 30 s).
	FenceTimeout time.Duration
	// QemuImg converts images on import and export.
	QemuImg string
	// SlowDiskAwait is the mean I/O wait above which a disk is reported
	// slow (default 200 ms).
	SlowDiskAwait time.Duration
	Logger        *slog.Logger
}

// Service is the storage service.
type Service struct {
	cfg   Config
	log   *slog.Logger
	nbd   *nbd.Server
	disks *diskMonitor

	mu   sync.Mutex
	view cluster.LocalView
	vols map[string]*copyState // by volume name
	ctx  context.Context
}

// New checks the configuration.
func New(cfg Config) (*Service, error) {
	if cfg.DataDir == "" || cfg.NBDSocket == "" || cfg.Socket == "" || cfg.Cluster == nil || cfg.Dialer == nil {
		return nil, errors.New("storage: DataDir, NBDSocket, Socket, Cluster and Dialer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QemuImg == "" {
		cfg.QemuImg = "qemu-img"
	}
	if cfg.SlowDiskAwait == 0 {
		cfg.SlowDiskAwait = 200 * time.Millisecond
	}
	s := &Service{cfg: cfg, log: cfg.Logger, vols: map[string]*copyState{}}
	s.nbd = nbd.New(nbd.Config{Lookup: s.lookupExport, Names: s.exportNames, Logger: cfg.Logger.With("part", "nbd")})
	s.disks = newDiskMonitor(cfg.SlowDiskAwait)
	return s, nil
}

// Run serves until ctx ends, then closes every copy cleanly.
func (s *Service) Run(ctx context.Context) error {
	s.ctx = ctx
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	nl, err := frontdoor.ListenSocket(s.cfg.NBDSocket)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	al, err := frontdoor.ListenSocket(s.cfg.Socket)
	if err != nil {
		nl.Close()
		return fmt.Errorf("storage: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.nbd.Serve(gctx, nl) })
	g.Go(func() error { return frontdoor.ServeSocket(gctx, al, s.Handler(), s.log) })
	g.Go(func() error { s.follow(gctx); return nil })
	g.Go(func() error { s.disks.run(gctx); return nil })
	err = g.Wait()
	s.closeAll()
	return err
}

// follow reconciles on every change of the directory (and at least every
// wait, so a failed step is retried).
func (s *Service) follow(ctx context.Context) {
	const wait = 10 * time.Second
	s.cfg.Cluster.Follow(ctx, wait, s.log, func(view cluster.LocalView) { s.reconcile(ctx, view) })
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// reconcile makes this node's copies follow the directory.
func (s *Service) reconcile(ctx context.Context, view cluster.LocalView) {
	s.mu.Lock()
	s.view = view
	s.mu.Unlock()
	if !view.InCluster || view.Self == "" {
		return
	}
	wanted := map[string]bool{}
	for _, dv := range view.Volumes {
		wanted[dv.Name] = true
		c := s.copyOf(dv.Name)
		if c != nil && c.id != dv.ID {
			// Deleted and made again under the same name: a new volume.
			s.drop(dv.Name, view.Current)
			c = nil
		}
		if c == nil {
			var err error
			if c, err = s.open(dv, view.Self); err != nil {
				s.log.Error("cannot open this node's copy", "volume", dv.Name, "err", err)
				continue
			}
			s.mu.Lock()
			s.vols[dv.Name] = c
			s.mu.Unlock()
		}
		c.follow(ctx, s, dv, view)
	}
	for _, name := range s.names() {
		if !wanted[name] && view.Current {
			s.drop(name, true)
		}
	}
	if view.Current {
		s.removeOrphans(view)
	}
}

func (s *Service) copyOf(name string) *copyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vols[name]
}

func (s *Service) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.vols {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// drop closes a copy the directory no longer has; with remove, its files
// go too.
func (s *Service) drop(name string, remove bool) {
	s.mu.Lock()
	c := s.vols[name]
	delete(s.vols, name)
	s.mu.Unlock()
	if c == nil {
		return
	}
	c.close()
	if remove {
		s.removeFiles(c.id)
		s.log.Info("volume deleted: this node's copy removed", "volume", name, "id", c.id)
	}
}

func (s *Service) dataPath(id string) string { return filepath.Join(s.cfg.DataDir, id+".data") }
func (s *Service) metaPath(id string) string { return filepath.Join(s.cfg.DataDir, id+".meta") }

func (s *Service) removeFiles(id string) {
	for _, p := range []string{s.dataPath(id), s.metaPath(id), s.metaPath(id) + ".new", s.metaPath(id) + ".grow"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove a deleted volume's file", "path", p, "err", err)
		}
	}
}

// removeOrphans removes copies of volumes the directory no longer has,
// deleted while this service was not running. It runs only on a view
// known to be current, so a member replaying an old log deletes nothing.
func (s *Service) removeOrphans(view cluster.LocalView) {
	known := map[string]bool{}
	for _, v := range view.Volumes {
		known[v.ID] = true
	}
	entries, err := os.ReadDir(s.cfg.DataDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".meta")
		if !ok || known[id] {
			continue
		}
		s.removeFiles(id)
		s.log.Info("removed the copy of a volume deleted while this node was away", "id", id)
	}
}

func (s *Service) closeAll() {
	for _, name := range s.names() {
		s.drop(name, false)
	}
}

// peerOf returns the other node of the cluster.
func peerOf(view cluster.LocalView) (directory.Member, bool) {
	for _, m := range view.Members {
		if m.Role == directory.MemberNode && m.ID != view.Self {
			return m, true
		}
	}
	return directory.Member{}, false
}

// lookupExport serves a volume to an NBD client; its requests succeed
// only where the copy is primary.
func (s *Service) lookupExport(name string) (nbd.Export, bool) {
	c := s.copyOf(name)
	if c == nil {
		return nbd.Export{}, false
	}
	return c.export(false)
}

// exportNames lists the volumes primary here: the ones a client can use.
func (s *Service) exportNames() []string {
	var out []string
	for _, n := range s.names() {
		if c := s.copyOf(n); c != nil {
			if _, ok := c.export(true); ok {
				out = append(out, n)
			}
		}
	}
	return out
}
