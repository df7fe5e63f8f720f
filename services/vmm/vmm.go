// Package vmm is the node's VM manager: one QEMU per VM, driven over QMP,
// made to match what the cluster's directory wants on this node. Disks
// are replicated volumes from the storage service's NBD socket; NICs are
// taps on the LAN bridge. QEMU runs in a session of its own and is found
// again through its run folder, so restarting the manager never touches
// a running guest.
package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandemhci/tandem/initramfs/watchdog"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/metrics"
	"github.com/tandemhci/tandem/services/nbd"
	"github.com/tandemhci/tandem/services/qemu"
)

// Config wires the manager into the node.
type Config struct {
	// RunDir holds one folder per running VM: QMP, serial and VNC
	// sockets, the pid file, the definition it runs.
	RunDir string
	// StateDir keeps each VM's event history across restarts.
	StateDir string
	// BootDir holds kernels for VMs that boot one.
	BootDir string
	// NBDSocket is the storage service's, where the VMs' volumes are.
	NBDSocket string
	// Bridge is the LAN bridge VM NICs join.
	Bridge string
	// QEMU is the system emulator (Tandem's build: COLO under TCG needs
	// its fixes, scripts/qemu).
	QEMU string
	// QemuImg makes a secondary's COLO overlays.
	QemuImg string
	// Socket serves the API behind the front door.
	Socket  string
	Cluster *cluster.LocalClient
	// FenceLease is where the manager promises the supervisor that its
	// VMs stop in time (default watchdog.LeasePath).
	FenceLease string
	// Dialer forwards a request to the node running the VM.
	Dialer *memberconn.Dialer
	// ShutdownTimeout is how long a guest has to power off after the ACPI
	// button before it is powered off (default 60 s).
	ShutdownTimeout time.Duration
	// RestartLimit crashes within RestartWindow stop the automatic
	// restarts of a VM (defaults 3 in 10 minutes).
	RestartLimit  int
	RestartWindow time.Duration
	Logger        *slog.Logger
}

// Manager is the VM manager.
type Manager struct {
	cfg Config
	log *slog.Logger
	acc qemu.Prober

	mu       sync.Mutex
	view     cluster.LocalView
	vms      map[string]*instance
	crashes  map[string][]time.Time
	problems map[string]string    // why a wanted VM is not running
	ftWhy    map[string]string    // why a fault-tolerant VM is not protected
	ftTried  map[string]time.Time // its last attempt
	// ftOrphaned: paired VMs placed here whose QEMU is gone, since when
	ftOrphaned map[string]orphan
	history    *history
	kick       chan struct{}
	// quorumAt is this node's last contact with the cluster's majority;
	// its VMs stop fenceAfter it (fence.go).
	quorumAt   time.Time
	fenceAfter time.Duration
	starting   int        // QEMUs being started, covered by the lease
	leaseMu    sync.Mutex // one lease write at a time
	sampler    *metrics.Sampler
}

// New checks the configuration.
func New(cfg Config) (*Manager, error) {
	if cfg.RunDir == "" || cfg.StateDir == "" || cfg.NBDSocket == "" || cfg.Socket == "" || cfg.Cluster == nil || cfg.Dialer == nil {
		return nil, errors.New("vmm: RunDir, StateDir, NBDSocket, Socket, Cluster and Dialer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QEMU == "" {
		cfg.QEMU = qemu.System
	}
	if cfg.QemuImg == "" {
		cfg.QemuImg = "qemu-img"
	}
	if cfg.FenceLease == "" {
		cfg.FenceLease = watchdog.LeasePath
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "br-mgmt"
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 60 * time.Second
	}
	if cfg.RestartLimit == 0 {
		cfg.RestartLimit = 3
	}
	if cfg.RestartWindow == 0 {
		cfg.RestartWindow = 10 * time.Minute
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, vms: map[string]*instance{}, crashes: map[string][]time.Time{},
		problems: map[string]string{}, ftWhy: map[string]string{}, ftTried: map[string]time.Time{}, ftOrphaned: map[string]orphan{}, history: newHistory(filepath.Join(cfg.StateDir, "history")), kick: make(chan struct{}, 1)}
	m.sampler = m.newSampler()
	return m, nil
}

// Run adopts the QEMUs already running, then reconciles until ctx ends.
// Guests keep running when it returns.
func (m *Manager) Run(ctx context.Context) error {
	for _, d := range []string{m.cfg.RunDir, m.cfg.StateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("vmm: %w", err)
		}
	}
	m.initQuorum()
	m.adoptAll()
	l, err := frontdoor.ListenSocket(m.cfg.Socket)
	if err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return frontdoor.ServeSocket(gctx, l, m.Handler(), m.log) })
	g.Go(func() error { m.follow(gctx); return nil })
	g.Go(func() error { m.fenceLoop(gctx); return nil })
	g.Go(func() error { return m.sampler.Run(gctx) })
	err = g.Wait()
	m.mu.Lock()
	for _, in := range m.vms {
		in.mon.Disconnect() // the guests run on
	}
	m.mu.Unlock()
	return err
}

func (m *Manager) vmDir(name string) string { return filepath.Join(m.cfg.RunDir, name) }

// adoptAll finds the QEMUs an earlier run of the manager started.
func (m *Manager) adoptAll() {
	entries, _ := os.ReadDir(m.cfg.RunDir)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := paths{dir: m.vmDir(e.Name())}
		in, err := m.attach(e.Name(), p)
		if err != nil {
			m.log.Info("no QEMU to adopt", "vm", e.Name(), "err", err)
			os.RemoveAll(p.dir)
			continue
		}
		if b, err := os.ReadFile(p.def()); err == nil {
			var def directory.VM
			if json.Unmarshal(b, &def) == nil {
				in.def = def
			}
		}
		in.started = time.Now()
		if st, err := os.Stat(p.pidfile()); err == nil {
			in.started = st.ModTime()
		}
		m.mu.Lock()
		m.vms[in.name] = in
		m.mu.Unlock()
		m.watch(in)
		m.log.Info("adopted a running VM", "vm", in.name, "pid", in.pid, "status", in.status)
		m.history.add(in.name, "adopted", fmt.Sprintf("QEMU %d found running after the VM manager restarted", in.pid))
	}
}

// watch reconciles again as soon as the instance's QEMU goes away.
func (m *Manager) watch(in *instance) {
	go func() {
		<-in.done
		m.poke()
	}()
}

func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// follow long-polls the directory and reconciles on every change, when a
// QEMU exits, and every few seconds.
func (m *Manager) follow(ctx context.Context) {
	// A short wait: the quorum is checked every second. Views are noted
	// here, not in the loop below, which may be busy starting a VM: the
	// fence counts on every contact.
	go m.cfg.Cluster.Follow(ctx, time.Second, m.log, func(v cluster.LocalView) {
		m.noteView(v)
		m.poke()
	})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-tick.C:
		}
		m.reconcile(ctx)
	}
}

// reconcile starts what should run here and stops what should not.
func (m *Manager) reconcile(ctx context.Context) {
	m.mu.Lock()
	view := m.view
	m.mu.Unlock()
	if !view.InCluster || view.Self == "" {
		return
	}
	if out, _ := m.outOfQuorum(); out {
		return // fenceLoop stops what runs; nothing starts
	}
	want := map[string]directory.VM{}     // to run here
	incoming := map[string]directory.VM{} // migrating here
	for _, vm := range view.VMs {
		switch {
		case vm.Running && vm.Node == view.Self:
			want[vm.Name] = vm
		case vm.Running && vm.MigrateTo == view.Self:
			incoming[vm.Name] = vm
		}
	}
	// QEMUs that went away.
	for _, name := range m.names() {
		in := m.instance(name)
		if in == nil || !in.gone() {
			continue
		}
		m.mu.Lock()
		delete(m.vms, name)
		m.mu.Unlock()
		in.mon.Disconnect()
		os.RemoveAll(in.p.dir)
		_, guestOff, stopping := in.state()
		switch {
		case stopping:
		case guestOff:
			m.history.add(name, "guest-poweroff", "the guest powered itself off")
			m.log.Info("the guest powered itself off", "vm", name)
			if vm, ok := want[name]; ok {
				// The guest's own shutdown is the user's wish: record it.
				if err := m.cfg.Cluster.VMStopped(ctx, cluster.VMStopped{Name: name, Generation: vm.Generation}); err != nil {
					m.log.Warn("could not record the guest's shutdown", "vm", name, "err", err)
				}
				delete(want, name)
			}
		case in.isSecondary():
			m.history.add(name, "ft-secondary-exited", "the secondary's QEMU exited")
			m.log.Warn("the secondary's QEMU exited", "vm", name, "pid", in.pid, "qemu_log", tailOf(in.p.qemuLog(), 1024))
		default:
			m.history.add(name, "crashed", "QEMU exited without being asked to")
			m.log.Warn("QEMU exited unexpectedly", "vm", name, "pid", in.pid, "qemu_log", tailOf(in.p.qemuLog(), 1024))
			m.noteCrash(name)
		}
	}
	// Stop what should not run here.
	for _, name := range m.names() {
		if _, ok := want[name]; ok {
			continue
		}
		in := m.instance(name)
		if _, ok := incoming[name]; ok && in.incoming {
			continue
		}
		vm, ok := findVM(view.VMs, name)
		if ok && (keepSecondary(in, vm, view.Self) || in.ownedSince() > vm.FTEpoch) {
			continue // a pairing's secondary, or one that took over after this view
		}
		force := false
		if ok {
			force = vm.StopForce || (vm.Running && vm.Node != view.Self) // it must go elsewhere: no waiting on the guest
		} else {
			force = true
		}
		if in.beginStop() {
			m.log.Info("stopping a VM not wanted here", "vm", name, "defined", ok, "running", vm.Running, "node", vm.Node, "migrate_to", vm.MigrateTo)
			go m.stopInstance(in, force)
		}
	}
	// Start what should.
	if !view.Current {
		return // a node behind the cluster does not act on old wishes
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return want[b].Priority - want[a].Priority }) // higher first
	for _, name := range names {
		vm := want[name]
		if in := m.instance(name); in != nil {
			m.follow1(ctx, in, vm)
			continue
		}
		if why := m.restartBlocked(name); why != "" {
			m.setProblem(name, why)
			continue
		}
		if why := waitingDisk(view, vm); why != "" {
			m.setProblem(name, why)
			continue
		}
		if vm.FTRunning() {
			// The primary's QEMU of a pairing is gone: the secondary takes
			// over (ft.go). Only if it does not, the pairing is ended here
			// and the VM starts anew.
			if why := m.pairedWithoutPrimary(ctx, vm); why != "" {
				m.setProblem(name, why)
				continue
			}
		}
		if err := m.start(ctx, vm); err != nil {
			m.setProblem(name, err.Error())
			m.history.add(name, "start-failed", err.Error())
			m.log.Error("cannot start VM", "vm", name, "err", err)
			m.noteCrash(name)
			continue
		}
		m.setProblem(name, "")
	}
	// Incoming QEMUs are started when the source calls (migrate.go).
}

// keepSecondary says whether a secondary QEMU here still follows its
// VM: the pairing it started for has not ended (before the directory
// records it, FTSecondary is still empty).
func keepSecondary(in *instance, vm directory.VM, self string) bool {
	p := in.pair()
	if p == nil || !p.secondary {
		return false
	}
	p.mu.Lock()
	claiming := p.claiming
	p.mu.Unlock()
	if claiming {
		return true // it may be the one to run on: the directory decides
	}
	if p.isEnded() {
		return false
	}
	return vm.Running && vm.FT && vm.Node == p.peer.ID && (vm.FTSecondary == self || vm.FTSecondary == "")
}

// follow1 moves a running instance along: an arrived migration is
// resumed, a requested one is started, an edit is applied, fault
// tolerance is followed.
func (m *Manager) follow1(ctx context.Context, in *instance, vm directory.VM) {
	in.mu.Lock()
	incoming, migrating, stopping, runs := in.incoming, in.migrating, in.stopping, in.def.Generation
	in.mu.Unlock()
	if !stopping && !incoming && !migrating {
		m.mu.Lock()
		view := m.view
		m.mu.Unlock()
		defer m.followFT(ctx, in, vm, view)
	}
	switch {
	case stopping:
	case incoming:
		if err := m.activate(ctx, in, vm); err != nil {
			m.setProblem(vm.Name, "resume after migration: "+err.Error())
			m.log.Warn("cannot resume a migrated VM yet", "vm", vm.Name, "err", err)
		} else {
			m.setProblem(vm.Name, "")
		}
	case vm.MigrateTo != "" && !migrating:
		in.mu.Lock()
		in.migrating = true
		in.mu.Unlock()
		m.history.add(vm.Name, "migrating", "to "+m.memberName(vm.MigrateTo))
		go m.migrateOut(ctx, in, vm)
	case vm.MigrateTo == "" && !migrating && runs != vm.Generation:
		m.applyEdit(ctx, in, vm)
	}
}

// waitingDisk says which of the VM's disks is not ready to use yet: a
// clone whose data is still being copied in.
func waitingDisk(view cluster.LocalView, vm directory.VM) string {
	for _, d := range vm.Disks {
		for _, v := range view.Volumes {
			if v.Name == d.Volume && v.Copying() {
				return fmt.Sprintf("waiting: disk %s is still being cloned from %s", v.Name, v.CloneFrom)
			}
		}
	}
	return ""
}

func findVM(vms []directory.VM, name string) (directory.VM, bool) {
	for _, vm := range vms {
		if vm.Name == name {
			return vm, true
		}
	}
	return directory.VM{}, false
}

func (m *Manager) names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.vms {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (m *Manager) instance(name string) *instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vms[name]
}

func (m *Manager) setProblem(name, p string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p == "" {
		delete(m.problems, name)
	} else {
		m.problems[name] = p
	}
}

func (m *Manager) noteCrash(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashes[name] = append(m.crashes[name], time.Now())
}

// restartBlocked says why a VM that failed too often is not started again.
func (m *Manager) restartBlocked(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var recent []time.Time
	for _, t := range m.crashes[name] {
		if time.Since(t) < m.cfg.RestartWindow {
			recent = append(recent, t)
		}
	}
	m.crashes[name] = recent
	if len(recent) >= m.cfg.RestartLimit {
		return fmt.Sprintf("failed %d times in %v: not restarted until it is stopped and started again", len(recent), m.cfg.RestartWindow)
	}
	return ""
}

// start makes the VM's volumes primary here, waits until the storage
// service serves them, and starts QEMU.
func (m *Manager) start(ctx context.Context, vm directory.VM) error {
	for _, d := range vm.Disks {
		if err := m.cfg.Cluster.PrimaryHere(ctx, cluster.PrimaryHere{Name: d.Volume}); err != nil {
			return fmt.Errorf("disk %s: %w", d.Volume, err)
		}
	}
	if err := m.waitExports(ctx, vm); err != nil {
		return err
	}
	in, err := m.startQEMU(ctx, vm, nil)
	if err != nil {
		return err
	}
	m.watch(in)
	m.history.add(vm.Name, "started", fmt.Sprintf("QEMU %d (%d CPUs, %d MiB, %s)", in.pid, vm.CPUs, vm.MemoryMiB, m.acc.Get(ctx).Name()))
	m.log.Info("VM started", "vm", vm.Name, "pid", in.pid)
	return nil
}

// waitExports waits until the storage service exports every disk here.
func (m *Manager) waitExports(ctx context.Context, vm directory.VM) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		names, err := nbd.ListExports(ctx, "unix", m.cfg.NBDSocket)
		missing := ""
		for _, d := range vm.Disks {
			if !slices.Contains(names, d.Volume) {
				missing = d.Volume
				break
			}
		}
		if err == nil && missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("the storage service does not answer: %w", err)
			}
			return fmt.Errorf("disk %s is not served on this node (is its copy primary here?)", missing)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // part of a migration's downtime
		}
	}
}

// stopInstance stops an instance the caller marked (beginStop).
func (m *Manager) stopInstance(in *instance, force bool) {
	how := in.stop(force, m.cfg.ShutdownTimeout)
	m.history.add(in.name, "stopped", how)
	m.log.Info("VM stopped", "vm", in.name, "how", how)
	m.poke()
}
