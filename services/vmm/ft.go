package vmm

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
)

// Fault tolerance per VM with COLO: the VM's QEMU on its node is COLO's
// primary, a secondary QEMU on the other node runs the same guest in
// step, and when either node goes the other runs on with the guest's
// connections.
//
// Protection, driven by the primary's manager (protect):
//  1. It opens the control link to the other node's manager (member
//     TLS through the front door, Upgrade tandem-migration/1, path
//     /ft/<vm>/control) with the hardware its QEMU runs; that manager
//     starts the secondary QEMU, -incoming, wired for COLO (ftqemu.go).
//  2. It pauses the guest and records the pairing in the directory
//     (vm.ft protect): from then on the volumes' copies are kept by COLO
//     (storage/copy.go followColo), not by the replicator. The guest is
//     paused so that no write falls between the two.
//  3. The secondary's manager opens its NBD server once its copies are
//     writable there; the primary's QEMU gets COLO's disk replication,
//     resumes, and migrates into the secondary: syncing.
//  4. When QEMU reports COLO and has made its first checkpoint, the
//     NICs get COLO's mirror and compare (joinColoNICs: not earlier, or
//     the compare holds the guest's answers through the whole copy);
//     after the next checkpoint the pairing is recorded protected.
//
// Every COLO channel is a Unix socket on each side, joined by the two
// managers through one front-door connection each. The control link
// carries a ping each way every ftPing: it is the heartbeat QEMU lacks.
//
// Failover: a side whose QEMU died says so on the link ("bye") and
// closes it; a side that hears nothing for ftSilence, or loses the link,
// takes the pairing's channels down (its QEMU stops waiting on them) and
// records a failover with itself as survivor. The directory takes only
// the first failover of a pairing, and only from a member of the
// majority: a node cut off cannot record one, and its QEMU, whose output
// COLO holds back until the next checkpoint, stops at its fence bound
// (fence.go). The winner's QEMU goes on alone (takeOver, leaveColo); the
// loser's is stopped. The primary has the right of way: the secondary
// waits ftDeferToPrimary longer unless the primary's QEMU said it died.
//
// Re-protection is step 1 again, once the survivor's copies have brought
// the other node's up to date (the replicator's resync).

const (
	// Three pings missed: raft's own heartbeat bound. A false alarm
	// costs protection for a few seconds, not the guest: the primary,
	// claiming first, keeps it. A true one costs the client's TCP a
	// retransmission round per 0.2-0.4 s of delay.
	ftPing           = 100 * time.Millisecond
	ftSilence        = 300 * time.Millisecond
	ftDeferToPrimary = 100 * time.Millisecond
	// ftCheckpointMillis is COLO's checkpoint interval; a difference in
	// the two guests' output forces one sooner.
	ftCheckpointMillis = 2000
	// ftRetry spaces the attempts to protect a VM that could not be.
	ftRetry = 3 * time.Second
	// ftTakeoverWait is how long a node whose primary QEMU is gone waits
	// for the secondary to take over before it ends the pairing and
	// starts the VM itself.
	ftTakeoverWait = 5 * time.Second
)

const (
	headerFTEpoch = "X-Tandem-FT-Epoch"
	ftPathPrefix  = "/ft/"
)

// ftPair is one side of a VM's pairing, on its instance.
type ftPair struct {
	secondary bool // this side runs the secondary QEMU
	peer      directory.Member
	nics      int
	disks     int

	mu       sync.Mutex
	epoch    uint64 // the directory's, as this side last recorded or saw it
	state    string // starting, syncing, protected
	progress float64
	control  net.Conn
	conns    []net.Conn
	lis      []net.Listener
	lastPing time.Time
	inColo   bool // QEMU entered COLO (the primary's migration reached it)
	ended    chan struct{}
	endOnce  sync.Once
	peerBye  string // why the peer said it ends
	claiming bool   // a failover claim of this side is under way
	// COLO's checkpoints, seen as the primary's pauses once in COLO.
	pausedAt    time.Time
	checkpoints int
	pauses      []time.Duration // the last ones
}

// checkpointStarts and checkpointEnds follow the primary guest's pauses:
// in COLO, each is a checkpoint.
func (p *ftPair) checkpointStarts(at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inColo && !p.secondary {
		p.pausedAt = at
	}
}

func (p *ftPair) checkpointEnds(at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pausedAt.IsZero() {
		return
	}
	p.checkpoints++
	p.pauses = append(p.pauses, at.Sub(p.pausedAt))
	if len(p.pauses) > 200 {
		p.pauses = p.pauses[len(p.pauses)-200:]
	}
	p.pausedAt = time.Time{}
}

func newPair(secondary bool, peer directory.Member, epoch uint64, vm directory.VM) *ftPair {
	return &ftPair{secondary: secondary, peer: peer, epoch: epoch, state: "starting", nics: len(vm.NICs), disks: len(vm.Disks),
		ended: make(chan struct{}), lastPing: time.Now()}
}

// track remembers a connection or listener to close when the pair ends.
func (p *ftPair) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.ended:
		c.Close()
		return false
	default:
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *ftPair) listen(l net.Listener) {
	p.mu.Lock()
	p.lis = append(p.lis, l)
	p.mu.Unlock()
}

// end takes the pairing's channels down: both QEMUs see them fail.
func (p *ftPair) end() {
	p.endOnce.Do(func() {
		p.mu.Lock()
		close(p.ended)
		conns, lis, ctl := p.conns, p.lis, p.control
		p.conns, p.lis = nil, nil
		p.mu.Unlock()
		for _, l := range lis {
			l.Close()
		}
		for _, c := range conns {
			c.Close()
		}
		if ctl != nil {
			ctl.Close()
		}
	})
}

func (p *ftPair) isEnded() bool {
	select {
	case <-p.ended:
		return true
	default:
		return false
	}
}

func (p *ftPair) set(f func(p *ftPair)) {
	p.mu.Lock()
	f(p)
	p.mu.Unlock()
}

// FTStatus is a VM's fault tolerance as this node's manager sees it.
type FTStatus struct {
	State     string  `json:"state"` // unprotected, syncing, re-protecting, protected, failed-over
	Role      string  `json:"role,omitempty"`
	Peer      string  `json:"peer,omitempty"`
	Progress  float64 `json:"progress_percent,omitempty"`
	Reason    string  `json:"reason,omitempty"`
	Epoch     uint64  `json:"epoch,omitempty"`
	Secondary string  `json:"secondary,omitempty"`
	// Checkpoints since the pairing reached COLO, and the guest's pause
	// for each, median and longest of the last 200 (the primary's side).
	Checkpoints       int     `json:"checkpoints,omitempty"`
	CheckpointPauseMs float64 `json:"checkpoint_pause_ms,omitempty"`
	CheckpointMaxMs   float64 `json:"checkpoint_pause_max_ms,omitempty"`
}

// ftStatus joins the directory's record with the pair's live state.
func (m *Manager) ftStatus(vm directory.VM, in *instance) *FTStatus {
	if !vm.FT && vm.FTState == "" {
		return nil
	}
	st := &FTStatus{State: vm.FTState, Reason: vm.FTReason, Epoch: vm.FTEpoch, Secondary: m.memberName(vm.FTSecondary)}
	if st.State == "" {
		st.State = "unprotected"
		if why := m.ftProblem(vm.Name); why != "" {
			st.Reason = why
		}
	}
	if in != nil {
		if p := in.pair(); p != nil {
			p.mu.Lock()
			st.Role, st.Peer, st.Progress = "primary", p.peer.Name, p.progress
			if p.secondary {
				st.Role = "secondary"
			}
			st.Checkpoints = p.checkpoints
			if n := len(p.pauses); n > 0 {
				s := slices.Clone(p.pauses)
				slices.Sort(s)
				st.CheckpointPauseMs = float64(s[n/2].Microseconds()) / 1000
				st.CheckpointMaxMs = float64(s[n-1].Microseconds()) / 1000
			}
			p.mu.Unlock()
		}
	}
	return st
}

func (m *Manager) ftProblem(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ftWhy[name]
}

func (m *Manager) setFTProblem(name, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if why == "" {
		delete(m.ftWhy, name)
	} else {
		m.ftWhy[name] = why
		m.ftTried[name] = time.Now()
	}
}

// followFT moves a running primary's fault tolerance along: start a
// pairing when FT is wanted, end this side of one the directory ended.
func (m *Manager) followFT(ctx context.Context, in *instance, vm directory.VM, view cluster.LocalView) {
	if vm.FTEpoch < in.ownedSince() {
		return // a view from before this side's own failover
	}
	p := in.pair()
	switch {
	case p != nil && p.secondary:
		// The directory made this node the VM's: the secondary takes
		// over (a planned failover, or one recorded elsewhere).
		if !vm.FTRunning() {
			m.finishFailover(in, p, "the cluster recorded "+orDefault(vm.FTReason, "the failover"), vm.FTEpoch)
		}
	case p != nil && p.recorded() && (!vm.FTRunning() || vm.FTSecondary != p.peer.ID):
		m.finishFailover(in, p, orDefault(vm.FTReason, "the pairing ended"), vm.FTEpoch)
	case p != nil:
		if peer, ok := m.member(vm.FTSecondary); ok && peer.Maintenance && !p.isEnded() {
			go m.claimFailover(ctx, in, p, fmt.Sprintf("%s entered maintenance", peer.Name))
		}
	case p == nil && vm.FTRunning():
		// A pairing this manager does not run (it restarted, and its
		// channels with it): end it; QEMU may still be in COLO.
		peer, _ := m.member(vm.FTSecondary)
		lost := newPair(false, peer, vm.FTEpoch, vm)
		lost.inColo = true
		if in.setPair(lost) {
			go m.claimFailover(ctx, in, lost, "the VM manager lost the pairing (it restarted)")
		}
	case p == nil && vm.FT:
		m.mu.Lock()
		tried := m.ftTried[vm.Name]
		m.mu.Unlock()
		if time.Since(tried) < ftRetry {
			return
		}
		peer, ok := peerNode(view)
		if why := m.cannotProtect(vm, peer, ok, view); why != "" {
			m.setFTProblem(vm.Name, why)
			return
		}
		m.setFTProblem(vm.Name, "")
		m.mu.Lock()
		m.ftTried[vm.Name] = time.Now()
		m.mu.Unlock()
		pair := newPair(false, peer, vm.FTEpoch, vm)
		if !in.setPair(pair) {
			return
		}
		go func() {
			if err := m.protect(ctx, in, vm, pair); err != nil {
				m.setFTProblem(vm.Name, err.Error())
				m.history.add(vm.Name, "ft-failed", err.Error())
				m.log.Error("FT: protection failed", "vm", vm.Name, "err", err)
			}
			m.poke()
		}()
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// peerNode is the other node of the cluster.
func peerNode(view cluster.LocalView) (directory.Member, bool) {
	for _, mem := range view.Members {
		if mem.Role == directory.MemberNode && mem.ID != view.Self {
			return mem, true
		}
	}
	return directory.Member{}, false
}

// cannotProtect says why a pairing cannot start now.
func (m *Manager) cannotProtect(vm directory.VM, peer directory.Member, ok bool, view cluster.LocalView) string {
	switch {
	case !ok:
		return "waiting: no other node for the secondary"
	case peer.Maintenance:
		return fmt.Sprintf("waiting: %s is in maintenance", peer.Name)
	case vm.MigrateTo != "":
		return "waiting: the VM is migrating"
	}
	for _, d := range vm.Disks {
		for _, v := range view.Volumes {
			if v.Name == d.Volume && (v.Copies[peer.ID] != directory.CopyUpToDate || v.Colo != "") {
				return fmt.Sprintf("waiting: the copy of disk %s on %s is being brought up to date", d.Volume, peer.Name)
			}
		}
	}
	return ""
}

// protect pairs a running VM with a secondary on peer (the steps above).
func (m *Manager) protect(ctx context.Context, in *instance, vm directory.VM, p *ftPair) (err error) {
	runs := in.definition()
	committed := false
	paused := false
	defer func() {
		if err == nil {
			return
		}
		if paused {
			_ = in.raw.Cont()
		}
		if committed {
			// The copies are COLO's now: the pairing must be ended in the
			// directory for the replicator to take them back. The
			// failover takes the COLO plumbing out too (leaveColo).
			m.claimFailover(ctx, in, p, "protection failed: "+err.Error())
			return
		}
		p.end()
		in.setPair(nil)
	}()
	if err := p.waitOverlaysCommitted(in, time.Minute); err != nil {
		return err
	}
	m.history.add(vm.Name, "ft-pairing", "starting a secondary on "+p.peer.Name)
	def, _ := json.Marshal(runs)
	ctl, err := m.cfg.Dialer.Upgrade(ctx, p.peer.ID, p.peer.Addresses, frontdoor.UpgradeMigration, ftPathPrefix+vm.Name+"/control",
		http.Header{headerVM: {vm.Name}, headerVMDefinition: {base64.StdEncoding.EncodeToString(def)}, headerFTEpoch: {strconv.FormatUint(p.epoch, 10)}})
	if err != nil {
		return fmt.Errorf("reach %s: %w", p.peer.Name, err)
	}
	p.set(func(p *ftPair) { p.control = ctl })
	r := bufio.NewReader(ctl)
	if err := expect(ctl, r, "started", 2*time.Minute); err != nil {
		return fmt.Errorf("the secondary on %s: %w", p.peer.Name, err)
	}

	// The switch of the copies from the replicator to COLO, guest paused.
	t0 := time.Now()
	if err := in.raw.Stop(); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	paused = true
	if err := m.cfg.Cluster.VMFT(ctx, directory.VMFTPayload{Name: vm.Name, Op: directory.FTOpProtect, Epoch: p.epoch, Secondary: p.peer.ID}); err != nil {
		return fmt.Errorf("record the pairing: %w", err)
	}
	committed = true
	p.set(func(p *ftPair) { p.epoch++; p.state = "syncing" })
	if _, err := fmt.Fprintf(ctl, "serve %d\n", p.epoch); err != nil {
		return err
	}
	if err := expect(ctl, r, "serving", 30*time.Second); err != nil {
		return fmt.Errorf("the secondary's disks on %s: %w", p.peer.Name, err)
	}
	// Channels QEMU connects to: the replication's NBD, the migration.
	if err := m.ftForward(ctx, in, p, chanNBD+"-out", chanNBD); err != nil {
		return err
	}
	if err := m.ftForward(ctx, in, p, chanMigrate+"-out", chanMigrate); err != nil {
		return err
	}
	if err := in.joinColoDisks(in.p, p.disks); err != nil {
		return fmt.Errorf("COLO plumbing: %w", err)
	}
	caps := []map[string]any{{"capability": "x-colo", "state": true}}
	if err := in.qmp("migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		return err
	}
	if err := in.qmp("migrate-set-parameters", map[string]any{"x-checkpoint-delay": ftCheckpointMillis, "max-bandwidth": int64(10) << 30}, nil); err != nil {
		return err
	}
	if err := in.qmp("migrate", map[string]any{"uri": "unix:" + in.p.ftSocket(chanMigrate+"-out")}, nil); err != nil {
		return err
	}
	if err := in.raw.Cont(); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	paused = false
	m.log.Info("FT: COLO started, guest resumed", "vm", vm.Name, "paused_ms", time.Since(t0).Milliseconds())
	go m.ftLink(ctx, in, p, r)

	// Syncing: the first full copy of the memory, then COLO.
	for {
		var info migrationInfo
		if err := in.qmp("query-migrate", nil, &info); err != nil {
			return err
		}
		if info.RAM.Total > 0 {
			p.set(func(p *ftPair) { p.progress = 100 * float64(info.RAM.Transferred) / float64(info.RAM.Total) })
		}
		switch info.Status {
		case "colo":
			// In step only after a first checkpoint: the secondary runs
			// COLO a moment after the primary reports it, and one that
			// takes over before its first checkpoint fails the guest's
			// disk writes.
			p.set(func(p *ftPair) { p.inColo, p.progress = true, 100 })
			if err := p.waitCheckpoint(in, 0, 3*time.Duration(ftCheckpointMillis)*time.Millisecond); err != nil {
				return err
			}
			// The network joins COLO now (joinColoNICs), then a
			// checkpoint brings the secondary in step with it.
			if err := in.joinColoNICs(in.p, p.nics); err != nil {
				return fmt.Errorf("COLO network plumbing: %w", err)
			}
			// Channels QEMU serves: each NIC's mirror and compare input.
			for i := 0; i < p.nics; i++ {
				for _, ch := range []string{chanMirror, chanCompare} {
					if err := m.ftJoin(ctx, p, in.p.ftSocket(ch+fmt.Sprint(i)), ch+fmt.Sprint(i), vm.Name); err != nil {
						return err
					}
				}
			}
			p.mu.Lock()
			seen := p.checkpoints
			p.mu.Unlock()
			// Setting the interval in COLO makes a checkpoint at once:
			// the secondary needs not wait for the next one to catch up
			// with the network, nor the compare to hold answers till then.
			if err := in.qmp("migrate-set-parameters", map[string]any{"x-checkpoint-delay": ftCheckpointMillis}, nil); err != nil {
				return err
			}
			if err := p.waitCheckpoint(in, seen, 3*time.Duration(ftCheckpointMillis)*time.Millisecond); err != nil {
				return err
			}
			p.set(func(p *ftPair) { p.state = "protected" })
			epoch := p.epochNow()
			if err := m.cfg.Cluster.VMFT(ctx, directory.VMFTPayload{Name: vm.Name, Op: directory.FTOpProtected, Epoch: epoch}); err != nil {
				return fmt.Errorf("record the protection: %w", err)
			}
			p.set(func(p *ftPair) { p.epoch++ })
			m.history.add(vm.Name, "ft-protected", fmt.Sprintf("secondary on %s in step, %.1fs after the start", p.peer.Name, time.Since(t0).Seconds()))
			m.log.Info("FT: protected", "vm", vm.Name, "secondary", p.peer.Name, "s", time.Since(t0).Seconds())
			return nil
		case "failed", "cancelled", "completed":
			return fmt.Errorf("QEMU: the COLO migration %s: %s", info.Status, info.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-in.done:
			return errors.New("QEMU exited during the first copy")
		case <-p.ended:
			return errors.New("the pairing ended during the first copy")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitFor checks done every step until it holds, QEMU exits, the
// pairing ends or timeout passes; what names what is waited for.
func (p *ftPair) waitFor(in *instance, what string, step, timeout time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s within %v", what, timeout)
		}
		select {
		case <-in.done:
			return fmt.Errorf("QEMU exited before %s", what)
		case <-p.ended:
			return fmt.Errorf("the pairing ended before %s", what)
		case <-time.After(step):
		}
	}
}

// waitOverlaysCommitted waits until a former secondary's overlays are
// committed (overlaysCommitted).
func (p *ftPair) waitOverlaysCommitted(in *instance, timeout time.Duration) error {
	return p.waitFor(in, "commit of the former secondary's overlays", 100*time.Millisecond, timeout, func() (bool, error) {
		done, err := in.overlaysCommitted()
		if err != nil {
			return false, fmt.Errorf("QEMU's block nodes: %w", err)
		}
		return done, nil
	})
}

// waitCheckpoint waits until the primary has made more than seen
// checkpoints in COLO.
func (p *ftPair) waitCheckpoint(in *instance, seen int, timeout time.Duration) error {
	return p.waitFor(in, "COLO checkpoint", 20*time.Millisecond, timeout, func() (bool, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.checkpoints > seen, nil
	})
}

// recorded says whether the directory has recorded the pairing (before,
// the directory shows none, rightly).
func (p *ftPair) recorded() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state != "starting"
}

func (p *ftPair) epochNow() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.epoch
}

// expect reads the next control line and wants it to start with word;
// "error ..." is the other side's refusal.
func expect(c net.Conn, r *bufio.Reader, word string, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSpace(line)
		switch {
		case line == "ping":
			continue
		case strings.HasPrefix(line, word):
			return nil
		case strings.HasPrefix(line, "error "):
			return errors.New(strings.TrimPrefix(line, "error "))
		}
		return fmt.Errorf("unexpected %q", line)
	}
}

// ftForward listens on the run-folder socket local for QEMU and sends
// each connection to the peer's channel.
func (m *Manager) ftForward(ctx context.Context, in *instance, p *ftPair, local, channel string) error {
	path := in.p.ftSocket(local)
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	p.listen(l)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !p.track(c) {
				return
			}
			go func() {
				up, err := m.ftDial(ctx, p, channel, in.name)
				if err != nil {
					m.log.Warn("FT: channel not joined", "vm", in.name, "channel", channel, "err", err)
					c.Close()
					return
				}
				pipe(c, up)
			}()
		}
	}()
	return nil
}

// ftJoin connects to a socket QEMU serves here and joins it to the
// peer's channel.
func (m *Manager) ftJoin(ctx context.Context, p *ftPair, path, channel, vm string) error {
	c, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("COLO channel %s: %w", channel, err)
	}
	if !p.track(c) {
		return errors.New("the pairing ended")
	}
	up, err := m.ftDial(ctx, p, channel, vm)
	if err != nil {
		return fmt.Errorf("COLO channel %s: %w", channel, err)
	}
	go pipe(c, up)
	return nil
}

func (m *Manager) ftDial(ctx context.Context, p *ftPair, channel, vm string) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	up, err := m.cfg.Dialer.Upgrade(dctx, p.peer.ID, p.peer.Addresses, frontdoor.UpgradeMigration, ftPathPrefix+vm+"/"+channel,
		http.Header{headerVM: {vm}, headerFTEpoch: {strconv.FormatUint(p.epochNow(), 10)}})
	if err != nil {
		return nil, err
	}
	if !p.track(up) {
		return nil, errors.New("the pairing ended")
	}
	return up, nil
}

// ftLink runs the control link's heartbeat until the pairing ends, and
// decides the failover when the peer goes quiet.
func (m *Manager) ftLink(ctx context.Context, in *instance, p *ftPair, r *bufio.Reader) {
	p.mu.Lock()
	ctl := p.control
	p.lastPing = time.Now()
	p.mu.Unlock()
	lines := make(chan string, 8)
	go func() {
		defer close(lines)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimSpace(line)
		}
	}()
	tick := time.NewTicker(ftPing)
	defer tick.Stop()
	reason := ""
	for reason == "" {
		select {
		case <-p.ended:
			return
		case <-ctx.Done():
			return
		case <-in.done:
			// Our QEMU died: the peer goes on alone.
			ctl.SetWriteDeadline(time.Now().Add(ftPing))
			fmt.Fprintf(ctl, "bye QEMU on %s exited\n", m.selfName())
			p.end()
			return
		case line, ok := <-lines:
			if !ok {
				reason = fmt.Sprintf("lost the link to %s", p.peer.Name)
				break
			}
			if why, bye := strings.CutPrefix(line, "bye "); bye {
				p.set(func(p *ftPair) { p.peerBye = why })
				reason = why
				break
			}
			p.set(func(p *ftPair) { p.lastPing = time.Now() })
		case <-tick.C:
			ctl.SetWriteDeadline(time.Now().Add(ftSilence))
			if _, err := fmt.Fprintln(ctl, "ping"); err != nil {
				reason = fmt.Sprintf("lost the link to %s: %v", p.peer.Name, err)
				break
			}
			p.mu.Lock()
			quiet := time.Since(p.lastPing)
			p.mu.Unlock()
			if quiet > ftSilence {
				reason = fmt.Sprintf("%s silent for %.1fs", p.peer.Name, quiet.Seconds())
			}
		}
	}
	m.log.Warn("FT: the pairing broke", "vm", in.name, "reason", reason, "secondary_side", p.secondary)
	m.claimFailover(ctx, in, p, reason)
}

// claimFailover records a failover with this node as the survivor and,
// if the directory takes it, runs the VM on alone here; if the other
// side won, this side's QEMU is stopped by the reconcile loop.
func (m *Manager) claimFailover(ctx context.Context, in *instance, p *ftPair, reason string) {
	t0 := time.Now()
	if p != nil {
		p.set(func(p *ftPair) { p.claiming = true })
		defer p.set(func(p *ftPair) { p.claiming = false })
		p.end()
		p.mu.Lock()
		bye := p.peerBye
		p.mu.Unlock()
		if p.secondary && bye == "" {
			// The primary has the right of way when both claim.
			time.Sleep(ftDeferToPrimary)
		}
	}
	won := false
	var epoch uint64 // the directory's after the failover
	for attempt := 0; ; attempt++ {
		if in.gone() || ctx.Err() != nil {
			return
		}
		view, err := m.cfg.Cluster.View(ctx, 0, 0)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		m.noteView(view)
		vm, ok := findVM(view.VMs, in.name)
		if ok && p != nil && p.recorded() && vm.FTEpoch < p.epochNow() && time.Since(t0) < 5*time.Second {
			// This node's agent has not applied the pairing yet.
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if !ok || !vm.FTRunning() || (vm.Node != view.Self && vm.FTSecondary != view.Self) {
			won, epoch = ok && vm.Node == view.Self, vm.FTEpoch
			break
		}
		// A short bound per attempt: while the cluster elects a new
		// leader (the lost node led), a call to the old one hangs, and
		// the next attempt should reach the new one as soon as it is
		// elected (0.3-0.6 s). An attempt cut short that committed
		// after all is seen in the next view.
		actx, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
		err = m.cfg.Cluster.VMFT(actx, directory.VMFTPayload{Name: in.name, Op: directory.FTOpFailover, Epoch: vm.FTEpoch, Survivor: view.Self, Reason: reason})
		cancel()
		if err == nil {
			won, epoch = true, vm.FTEpoch+1
			break
		}
		if attempt%20 == 0 {
			m.log.Warn("FT: failover not recorded yet", "vm", in.name, "err", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.log.Info("FT: failover decided", "vm", in.name, "won", won, "ms", time.Since(t0).Milliseconds(), "reason", reason)
	if won && p != nil {
		m.finishFailover(in, p, reason, epoch)
	}
	m.poke()
}

// finishFailover runs this side's QEMU on alone once the directory
// says the VM is this node's without a pairing, at epoch.
func (m *Manager) finishFailover(in *instance, p *ftPair, reason string, epoch uint64) {
	if !in.clearPair(p) {
		return // done already
	}
	in.mu.Lock()
	in.owned = max(in.owned, epoch)
	in.mu.Unlock()
	p.end()
	t0 := time.Now()
	var err error
	if p.secondary {
		err = in.takeOver(p.nics)
		if err == nil {
			in.mu.Lock()
			in.secondary = false
			in.mu.Unlock()
			if aerr := in.qmp("announce-self", map[string]any{"initial": 50, "max": 550, "rounds": 5, "step": 100}, nil); aerr != nil {
				m.log.Warn("announce-self", "vm", in.name, "err", aerr)
			}
		}
		m.history.add(in.name, "ft-takeover", fmt.Sprintf("the secondary took over here in %d ms: %s", time.Since(t0).Milliseconds(), reason))
	} else {
		p.mu.Lock()
		inColo := p.inColo
		p.mu.Unlock()
		err = in.leaveColo(p.disks, p.nics, inColo)
		if st, _, _ := in.state(); st != "running" {
			_ = in.raw.Cont()
		}
		m.history.add(in.name, "ft-alone", fmt.Sprintf("runs on alone (%d ms): %s", time.Since(t0).Milliseconds(), reason))
	}
	if err != nil {
		m.log.Error("FT: failover steps failed", "vm", in.name, "secondary_side", p.secondary, "err", err)
		m.history.add(in.name, "ft-failover-error", err.Error())
	}
	m.log.Info("FT: running alone", "vm", in.name, "ms", time.Since(t0).Milliseconds())
	m.mu.Lock()
	m.ftTried[in.name] = time.Now().Add(-ftRetry + time.Second)
	m.mu.Unlock()
}

func (m *Manager) selfName() string {
	m.mu.Lock()
	self := m.view.Self
	m.mu.Unlock()
	return m.memberName(self)
}

// --- the secondary's side ---------------------------------------------

// serveFT answers the primary's manager: the control link and the COLO
// channels of a pairing.
func (m *Manager) serveFT(w http.ResponseWriter, r *http.Request) {
	id, err := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
	rest := strings.TrimPrefix(r.URL.Path, ftPathPrefix)
	name, channel, _ := strings.Cut(rest, "/")
	// The primary starts pairing as soon as the cluster commits FT on;
	// this node's view of the directory may be a moment behind.
	paired := func() (directory.VM, bool) {
		m.mu.Lock()
		view := m.view
		m.mu.Unlock()
		vm, ok := findVM(view.VMs, name)
		return vm, ok && vm.Node == id.ID && vm.FT
	}
	vm, ok := paired()
	for deadline := time.Now().Add(2 * time.Second); err == nil && !ok && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		vm, ok = paired()
	}
	if err != nil || !ok {
		frontdoor.WriteError(w, http.StatusForbidden, "not_paired", fmt.Sprintf("VM %q is not a fault-tolerant VM of %s", name, id.ID))
		return
	}
	if channel == "control" {
		m.serveFTControl(w, r, vm, id.ID)
		return
	}
	in := m.instance(name)
	var p *ftPair
	if in != nil {
		p = in.pair()
	}
	if p == nil || !p.secondary {
		frontdoor.WriteError(w, http.StatusConflict, "no_secondary", fmt.Sprintf("no secondary of VM %s runs here", name))
		return
	}
	sec := m.secondaryOf(in)
	path, ok := sec.localSocket(channel)
	if !ok {
		frontdoor.WriteError(w, http.StatusNotFound, "no_channel", fmt.Sprintf("no COLO channel %q", channel))
		return
	}
	q, err := net.Dial("unix", path)
	if err != nil {
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "not_ready", err.Error())
		return
	}
	if !p.track(q) {
		frontdoor.WriteError(w, http.StatusConflict, "ended", "the pairing ended")
		return
	}
	conn, err := memberconn.Accept(w, frontdoor.UpgradeMigration)
	if err != nil {
		q.Close()
		return
	}
	if !p.track(conn) {
		return
	}
	pipe(conn, q)
}

func (m *Manager) secondaryOf(in *instance) *coloSecondary {
	return &coloSecondary{p: in.p, scratch: filepath.Join(m.cfg.StateDir, "colo", in.name)}
}

// serveFTControl starts the secondary QEMU and runs this side of the
// control link.
func (m *Manager) serveFTControl(w http.ResponseWriter, r *http.Request, vm directory.VM, primary string) {
	var runs directory.VM
	b, err := base64.StdEncoding.DecodeString(r.Header.Get(headerVMDefinition))
	if err == nil {
		err = json.Unmarshal(b, &runs)
	}
	if err == nil && runs.Name != vm.Name {
		err = fmt.Errorf("it names VM %q", runs.Name)
	}
	epoch, eerr := strconv.ParseUint(r.Header.Get(headerFTEpoch), 10, 64)
	if err == nil && eerr != nil {
		err = fmt.Errorf("%s: %w", headerFTEpoch, eerr)
	}
	if err != nil {
		frontdoor.WriteError(w, http.StatusBadRequest, "invalid", "the pairing's request: "+err.Error())
		return
	}
	if in := m.instance(vm.Name); in != nil {
		frontdoor.WriteError(w, http.StatusConflict, "running_here", fmt.Sprintf("VM %s already has a QEMU on this node", vm.Name))
		return
	}
	peer, ok := m.member(primary)
	if !ok {
		frontdoor.WriteError(w, http.StatusForbidden, "not_member", primary+" is not a member")
		return
	}
	conn, err := memberconn.Accept(w, frontdoor.UpgradeMigration)
	if err != nil {
		return
	}
	ctx := context.WithoutCancel(r.Context())
	in, p, err := m.startSecondary(ctx, runs, peer, epoch)
	if err != nil {
		fmt.Fprintf(conn, "error %s\n", oneLine(err.Error()))
		conn.Close()
		m.history.add(vm.Name, "ft-secondary-failed", err.Error())
		m.log.Error("FT: cannot start the secondary", "vm", vm.Name, "err", err)
		return
	}
	p.set(func(p *ftPair) { p.control = conn })
	fmt.Fprintln(conn, "started")
	rd := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	line, err := rd.ReadString('\n')
	conn.SetReadDeadline(time.Time{})
	if err == nil && strings.HasPrefix(line, "serve ") {
		err = m.serveSecondaryDisks(ctx, in, p, runs, strings.TrimSpace(strings.TrimPrefix(line, "serve ")))
		if err != nil {
			fmt.Fprintf(conn, "error %s\n", oneLine(err.Error()))
		}
	} else if err == nil {
		err = fmt.Errorf("unexpected %q", strings.TrimSpace(line))
	}
	if err != nil {
		m.log.Error("FT: the secondary's disks", "vm", vm.Name, "err", err)
		p.end()
		in.beginStop()
		in.kill()
		return
	}
	fmt.Fprintln(conn, "serving")
	m.ftLink(ctx, in, p, rd)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// startSecondary starts the secondary QEMU of a pairing.
func (m *Manager) startSecondary(ctx context.Context, vm directory.VM, peer directory.Member, epoch uint64) (*instance, *ftPair, error) {
	p := paths{dir: m.vmDir(vm.Name)}
	sec := &coloSecondary{p: p, scratch: filepath.Join(m.cfg.StateDir, "colo", vm.Name)}
	var sizes []int64
	m.mu.Lock()
	view := m.view
	m.mu.Unlock()
	for _, d := range vm.Disks {
		found := false
		for _, v := range view.Volumes {
			if v.Name == d.Volume {
				sizes, found = append(sizes, v.SizeBytes), true
			}
		}
		if !found {
			return nil, nil, fmt.Errorf("disk %s: no such volume", d.Volume)
		}
	}
	if err := sec.makeOverlays(m.cfg.QemuImg, sizes); err != nil {
		return nil, nil, err
	}
	in, err := m.startQEMU(ctx, vm, sec, "-incoming", "unix:"+p.incoming())
	if err != nil {
		return nil, nil, err
	}
	pair := newPair(true, peer, epoch, vm)
	in.mu.Lock()
	in.secondary = true
	in.mu.Unlock()
	in.setPair(pair)
	m.watch(in)
	m.history.add(vm.Name, "ft-secondary", fmt.Sprintf("QEMU %d follows the VM on %s", in.pid, peer.Name))
	return in, pair, nil
}

// serveSecondaryDisks waits until the directory recorded the pairing
// (epoch) and this node's copies are writable, then opens the NBD
// server the primary's replication writes to.
func (m *Manager) serveSecondaryDisks(ctx context.Context, in *instance, p *ftPair, vm directory.VM, epoch string) error {
	want, err := strconv.ParseUint(epoch, 10, 64)
	if err != nil {
		return fmt.Errorf("epoch %q: %w", epoch, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		view, err := m.cfg.Cluster.View(ctx, 0, 0)
		if err == nil {
			if cur, ok := findVM(view.VMs, vm.Name); ok && cur.FTEpoch >= want {
				if cur.FTEpoch != want || cur.FTSecondary != view.Self {
					return fmt.Errorf("the pairing moved on (epoch %d, secondary %q)", cur.FTEpoch, cur.FTSecondary)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the pairing was not recorded in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.set(func(p *ftPair) { p.epoch = want; p.state = "syncing" })
	if err := m.waitExports(ctx, vm); err != nil {
		return err
	}
	return in.serveReplication(in.p, len(vm.Disks))
}

// --- instance bookkeeping ----------------------------------------------

func (in *instance) pair() *ftPair {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.ft
}

// setPair sets or clears the instance's pairing; setting fails if one
// runs.
func (in *instance) setPair(p *ftPair) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if p != nil && in.ft != nil {
		return false
	}
	in.ft = p
	return true
}

// clearPair clears p if it is still the instance's pairing.
func (in *instance) clearPair(p *ftPair) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.ft != p {
		return false
	}
	in.ft = nil
	return true
}

// ownedSince is the FT epoch from which the directory gives this
// instance its VM (a takeover it won): a view older than that is stale.
func (in *instance) ownedSince() uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.owned
}

// pairedWithoutPrimary is the start of a VM placed here while its
// pairing stands but its QEMU here is gone: the secondary takes over
// (its manager claims it at once); if none has within ftTakeoverWait,
// the pairing is ended with this node as the survivor, and the VM
// starts here. It says why the VM does not start yet.
func (m *Manager) pairedWithoutPrimary(ctx context.Context, vm directory.VM) string {
	m.mu.Lock()
	since, ok := m.ftOrphaned[vm.Name]
	if !ok || since.epoch != vm.FTEpoch {
		since = orphan{epoch: vm.FTEpoch, at: time.Now()}
		m.ftOrphaned[vm.Name] = since
	}
	m.mu.Unlock()
	if vm.FTState == directory.FTProtected && time.Since(since.at) < ftTakeoverWait {
		return fmt.Sprintf("waiting: the secondary on %s takes over", m.memberName(vm.FTSecondary))
	}
	err := m.cfg.Cluster.VMFT(ctx, directory.VMFTPayload{Name: vm.Name, Op: directory.FTOpFailover, Epoch: vm.FTEpoch, Survivor: vm.Node,
		Reason: "the primary's QEMU was gone and the secondary did not take over"})
	if err != nil {
		return "waiting: ending the pairing: " + err.Error()
	}
	return "waiting: the pairing ended"
}

// orphan is when a paired VM was first seen without its primary QEMU.
type orphan struct {
	epoch uint64
	at    time.Time
}

// isSecondary says whether the instance is a pairing's secondary.
func (in *instance) isSecondary() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.secondary
}
