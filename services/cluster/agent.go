// Package cluster is the cluster agent: raft over the two nodes and the
// witness, the replicated directory, joining with tokens, the cluster IP
// that follows the leader, cluster health, and the admin's override when
// a node must go on alone.
//
// A node runs it as tandem-cluster behind its front door, on a Unix
// socket; the witness runs it in the same process as its front door.
// Raft's connections are HTTP Upgrades through the peers' front doors.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"golang.org/x/sync/errgroup"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/pki"
)

// Timing tunes raft and the cluster IP hand-over. The defaults elect a
// new leader in well under a second on a LAN; slow machines (TCG guests)
// want them larger.
type Timing struct {
	Heartbeat   time.Duration // a follower campaigns after this (to twice this) without a leader
	LeaderLease time.Duration // a leader steps down after this without a quorum
}

// DefaultTiming suits nodes on a LAN.
func DefaultTiming() Timing {
	return Timing{Heartbeat: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond}
}

// Config is the agent's configuration.
type Config struct {
	Role    string // pki.RoleNode or pki.RoleWitness
	Name    string // shown to people; unique in the cluster
	DataDir string // raft log, snapshots, member certificate
	// Socket is where the front door reaches the agent (nodes); empty
	// when the front door is in the same process (the witness).
	Socket string
	// Addresses returns where peers reach this member's front door,
	// preferred first (interconnect, then management).
	Addresses func() []string
	// ClusterIP is where the cluster IP goes while this member leads;
	// empty for the witness.
	ClusterIPDevice string
	// Interconnect is the direct link to the other node, for discovery.
	Interconnect string
	Port         int // the front door's port, to reach discovered peers
	Timing       Timing
	Version      string
	Inventory    func() directory.Inventory
	// ServiceLog returns a service's last output lines on this node, from
	// its supervisor (nil: none to show).
	ServiceLog func(ctx context.Context, service string, lines int) ([]LogLine, error)
	// BoardFence powers a lost node off through its BMC (nil: none).
	BoardFence *BoardFence
	// JoinFile, while the member is in no cluster, may hold the join its
	// installer handed over (a JoinRequest): the agent joins with it at
	// start, retrying, and removes it once in.
	JoinFile string
	Logger   *slog.Logger
}

// ErrNotInCluster means the member has not bootstrapped or joined yet.
var ErrNotInCluster = errors.New("this member is not in a cluster yet")

// Agent is the cluster agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	id    pki.Identity
	files pki.Files
	live  *pki.Live
	// dir is replaced when raft restarts: raft replays the log into a
	// fresh FSM.
	dir         atomic.Pointer[directory.Directory]
	setupCode   string
	dial        *memberconn.Dialer
	ip          *clusterIP
	disco       *discovery
	probes      *probes
	heartbeats  *heartbeats
	boardFences *boardFences
	clients     memberClients
	auth        *authCache
	logins      *loginGuard
	stats       statsFeed
	// auditLimit bounds how fast refusals are written to the audit log.
	auditLimit rateLimit

	mu        sync.Mutex // guards the raft instance and what goes with it
	raft      *raft.Raft
	transport *raft.NetworkTransport
	stream    *streamLayer
	store     *raftboltdb.BoltStore
	snaps     raft.SnapshotStore

	leaderReady atomic.Bool   // this member leads and has applied everything before its term
	leaderGen   atomic.Uint64 // bumped on every leadership change
	ctx         context.Context
	joinMu      sync.Mutex // one bootstrap or join at a time
}

// New prepares the agent: its member ID and setup code are made on first
// start and kept in DataDir.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Role != pki.RoleNode && cfg.Role != pki.RoleWitness {
		return nil, fmt.Errorf("cluster agent: role %q: want node or witness", cfg.Role)
	}
	if cfg.Name == "" || cfg.DataDir == "" || cfg.Addresses == nil {
		return nil, errors.New("cluster agent: name, data directory and addresses are required")
	}
	if cfg.Timing.Heartbeat == 0 {
		cfg.Timing = DefaultTiming()
	}
	if cfg.Timing.LeaderLease >= cfg.Timing.Heartbeat {
		return nil, fmt.Errorf("cluster agent: leader lease %v must be shorter than the heartbeat timeout %v", cfg.Timing.LeaderLease, cfg.Timing.Heartbeat)
	}
	if cfg.Port == 0 {
		cfg.Port = 443
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster agent: %w", err)
	}
	prefix := "n-"
	if cfg.Role == pki.RoleWitness {
		prefix = "w-"
	}
	id, err := loadOrCreate(filepath.Join(cfg.DataDir, "member-id"), func() string { return prefix + randomHex(6) })
	if err != nil {
		return nil, fmt.Errorf("cluster agent: member ID: %w", err)
	}
	if err := pki.CheckID(id); err != nil {
		return nil, fmt.Errorf("cluster agent: %s: %w", filepath.Join(cfg.DataDir, "member-id"), err)
	}
	code, err := loadOrCreate(filepath.Join(cfg.DataDir, "setup-code"), func() string {
		h := randomHex(4)
		return h[:4] + "-" + h[4:]
	})
	if err != nil {
		return nil, fmt.Errorf("cluster agent: setup code: %w", err)
	}
	files := pki.Files{Dir: filepath.Join(cfg.DataDir, "tls")}
	live := pki.NewLive(files)
	a := &Agent{
		cfg: cfg, log: cfg.Logger, id: pki.Identity{Role: cfg.Role, ID: id}, files: files, live: live,
		setupCode: code,
		dial:      &memberconn.Dialer{Self: pki.Identity{Role: cfg.Role, ID: id}, Live: live, PerAddress: 700 * time.Millisecond},
	}
	a.dir.Store(directory.New())
	if cfg.ClusterIPDevice != "" {
		a.ip = newClusterIP(cfg.ClusterIPDevice, cfg.Logger)
	}
	a.disco = newDiscovery(a)
	a.probes = newProbes()
	a.heartbeats = newHeartbeats()
	a.boardFences = newBoardFences()
	a.auth = newAuthCache()
	a.logins = newLoginGuard(nil)
	return a, nil
}

// ID is this member's identity.
func (a *Agent) ID() pki.Identity { return a.id }

// SetupCode is the secret that authorises bootstrapping or joining this
// member before it has users; it is shown on the console.
func (a *Agent) SetupCode() string { return a.setupCode }

// Directory is the local view of the replicated directory.
func (a *Agent) Directory() *directory.Directory { return a.dir.Load() }

// Run starts raft if the member is in a cluster, serves the API on the
// socket, and runs until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.ctx = ctx
	a.log.Info("cluster agent starting", "member", a.id, "name", a.cfg.Name)
	if !a.files.Exists() {
		a.log.Info("not in a cluster yet: bootstrap this member or join it to a cluster", "setup_code", a.setupCode)
	} else if err := a.startRaft(nil, nil); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	if a.cfg.Socket != "" {
		g.Go(func() error { return a.serveSocket(gctx) })
	}
	g.Go(func() error { a.housekeeping(gctx); return nil })
	if a.cfg.JoinFile != "" {
		g.Go(func() error { a.joinFromFile(gctx); return nil })
	}
	if a.cfg.Interconnect != "" {
		g.Go(func() error { a.disco.run(gctx); return nil })
	}
	err := g.Wait()
	a.stopRaft()
	if a.ip != nil {
		a.ip.release()
	}
	return err
}

func (a *Agent) serveSocket(ctx context.Context) error {
	l, err := frontdoor.ListenSocket(a.cfg.Socket)
	if err != nil {
		return fmt.Errorf("cluster agent: %w", err)
	}
	return frontdoor.ServeSocket(ctx, l, a.Handler(), a.log)
}

// addresses are where peers reach this member, without the cluster IP
// (which moves to whoever leads).
func (a *Agent) addresses() []string {
	all := a.cfg.Addresses()
	ip := a.clusterIPSetting()
	if !ip.IsValid() {
		return all
	}
	out := make([]string, 0, len(all))
	for _, ad := range all {
		if host, _, err := net.SplitHostPort(ad); err == nil && host == ip.Addr().String() {
			continue
		}
		out = append(out, ad)
	}
	return out
}

// r returns the running raft instance, or nil.
func (a *Agent) r() *raft.Raft {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raft
}

// raftConfig is raft's configuration for this member.
func (a *Agent) raftConfig(notify chan bool) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(a.id.ID)
	c.Logger = newHCLogger(a.log)
	// The witness uses the nodes' timeouts: a longer one would make it
	// refuse a node's votes while it still remembers a dead leader (raft's
	// leader stickiness). When it wins, it hands leadership to a node.
	hb := a.cfg.Timing.Heartbeat
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = hb, hb, a.cfg.Timing.LeaderLease
	c.CommitTimeout = 20 * time.Millisecond
	c.SnapshotThreshold = 8192
	c.SnapshotInterval = 2 * time.Minute
	c.TrailingLogs = 10240
	c.NotifyCh = notify
	return c
}

// startRaft opens the stores and starts raft. bootstrap, if given, forms
// a new cluster; recover, if given, first rewrites the configuration
// (forced single-node mode).
func (a *Agent) startRaft(bootstrap *raft.Configuration, recover *raft.Configuration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.raft != nil {
		return errors.New("raft is already running")
	}
	rdir := filepath.Join(a.cfg.DataDir, "raft")
	store, snaps, err := openStores(rdir, a.log)
	if err != nil {
		return err
	}
	if bootstrap == nil && recover == nil {
		if excluded, by := a.excludedByForcedPeer(store, snaps); excluded {
			// An admin forced another node to go on alone while this one
			// was away; this member's old configuration could otherwise
			// elect a rival leader with the other returning member. Its
			// state is set aside (kept for inspection) and it starts empty,
			// to be re-added by the forced node.
			store.Close()
			aside := rdir + ".excluded-" + time.Now().UTC().Format("20060102T150405Z")
			if err := os.Rename(rdir, aside); err != nil {
				return fmt.Errorf("set aside the excluded raft state: %w", err)
			}
			a.log.Warn("this member was left out while another node was forced to go on alone: its raft state was set aside and it starts empty, to be re-added",
				"forced_by", by, "kept_in", aside)
			if store, snaps, err = openStores(rdir, a.log); err != nil {
				return err
			}
		}
	}
	self := FormatAddress(a.id.ID, a.addresses())
	stream := newStreamLayer(a.dial, self, a.isMember)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 2 * time.Second, Logger: newHCLogger(a.log),
	})
	notify := make(chan bool, 16)
	conf := a.raftConfig(notify)
	if recover != nil {
		// RecoverCluster replays the log into a scratch FSM; the directory
		// proper is filled when raft starts below.
		if err := raft.RecoverCluster(conf, directory.New(), store, store, snaps, trans, *recover); err != nil {
			trans.Close()
			store.Close()
			return fmt.Errorf("recover the raft configuration: %w", err)
		}
	}
	fsm := directory.New()
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return fmt.Errorf("raft: %w", err)
	}
	if bootstrap != nil {
		if err := r.BootstrapCluster(*bootstrap).Error(); err != nil {
			r.Shutdown()
			trans.Close()
			store.Close()
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	a.dir.Store(fsm)
	a.raft, a.transport, a.stream, a.store, a.snaps = r, trans, stream, store, snaps
	go a.watchLeadership(r, notify)
	a.observe(r)
	a.log.Info("raft started", "address", self)
	return nil
}

func openStores(dir string, log *slog.Logger) (*raftboltdb.BoltStore, raft.SnapshotStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, nil, fmt.Errorf("raft log store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newHCLogger(log))
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("raft snapshots: %w", err)
	}
	return store, snaps, nil
}

// excludedByForcedPeer asks the other members of this member's last known
// configuration whether one of them was forced to go on alone without
// it. Unreachable peers say nothing; only a forced peer excludes.
func (a *Agent) excludedByForcedPeer(store *raftboltdb.BoltStore, snaps raft.SnapshotStore) (bool, string) {
	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil || !has {
		return false, ""
	}
	_, scratch := raft.NewInmemTransportWithTimeout("", time.Second)
	conf, err := raft.GetConfiguration(a.raftConfig(make(chan bool, 1)), directory.New(), store, store, snaps, scratch)
	if err != nil {
		a.log.Warn("reading the last raft configuration", "err", err)
		return false, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, s := range conf.Servers {
		id, addrs, err := ParseAddress(s.Address)
		if err != nil || id == a.id.ID {
			continue
		}
		var st MemberState
		if err := a.memberCall(ctx, directory.Member{ID: id, Addresses: addrs}, http.MethodGet, "/api/v1/cluster/members/self", nil, &st); err != nil {
			continue
		}
		if st.Forced && !slices.Contains(st.Voters, a.id.ID) {
			return true, id
		}
	}
	return false, ""
}

// stopRaft shuts raft down and closes its stores.
func (a *Agent) stopRaft() {
	a.mu.Lock()
	r, trans, store := a.raft, a.transport, a.store
	a.raft, a.transport, a.store, a.stream = nil, nil, nil, nil
	a.mu.Unlock()
	if r == nil {
		return
	}
	// The transport first: RPCs in flight to unreachable peers end now
	// rather than at their timeouts, which raft's shutdown would wait for.
	trans.Close()
	if err := r.Shutdown().Error(); err != nil {
		a.log.Warn("raft shutdown", "err", err)
	}
	store.Close()
}

// isMember reports whether an identity is in the current raft
// configuration or in the directory. The front door has already checked
// that the cluster CA issued its certificate; this keeps out members that
// were removed. A member that has just joined knows nobody yet: until
// its log arrives it accepts any certificate of the cluster.
func (a *Agent) isMember(id pki.Identity) bool {
	r := a.r()
	if r == nil {
		return false
	}
	if _, ok := a.Directory().Cluster(); !ok {
		return true
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == id.ID {
				return true
			}
		}
	}
	m, ok := a.Directory().Member(id.ID)
	return ok && m.Role == id.Role
}

// propose applies a command through raft on the leader and returns the
// directory's answer.
func (a *Agent) propose(t directory.Type, actor, from string, payload any) (directory.Result, error) {
	return a.proposeKeyed(t, actor, from, "", payload)
}

// proposeKeyed is propose with a client's Idempotency-Key.
func (a *Agent) proposeKeyed(t directory.Type, actor, from, key string, payload any) (directory.Result, error) {
	r := a.r()
	if r == nil {
		return directory.Result{}, ErrNotInCluster
	}
	data, err := directory.Encode(t, directory.Envelope{Actor: actor, From: from, Key: key, Time: time.Now().UTC()}, payload)
	if err != nil {
		return directory.Result{}, fmt.Errorf("%w: %v", directory.ErrInvalid, err)
	}
	f := r.Apply(data, 10*time.Second)
	if err := f.Error(); err != nil {
		return directory.Result{}, err
	}
	res, ok := f.Response().(directory.Result)
	if !ok {
		return directory.Result{}, fmt.Errorf("directory answered %T", f.Response())
	}
	return res, res.Err
}

func loadOrCreate(path string, make func() string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	v := make()
	if err := pki.WriteFileAtomic(path, []byte(v+"\n"), 0o600); err != nil {
		return "", err
	}
	return v, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
