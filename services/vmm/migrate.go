package vmm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
)

// Live migration, memory only: the disks are already on both nodes.
//
//  1. The directory says MigrateTo: the source's manager calls the
//     target's front door (member TLS, Upgrade tandem-migration/1) with
//     the definition its QEMU runs (hot-adds included, pending edits
//     not: the two QEMUs must have the same hardware). The target's
//     manager starts an incoming QEMU with it (-incoming, -S: it will
//     not run by itself), whose disks are the local copies, still
//     secondary.
//  2. The source's manager has its QEMU migrate to a socket of its own,
//     which it pipes through that connection into the incoming QEMU.
//  3. When the source QEMU reports completion it is paused for good; the
//     source records Node = target in the directory.
//  4. The target's manager sees the VM placed on it with a completed
//     incoming QEMU: it makes the volumes primary here (the source's
//     copies can no longer write), waits until they are served, resumes
//     the guest and announces its NICs. The source's QEMU is then quit.

const (
	headerVM           = "X-Tandem-VM"
	headerVMDefinition = "X-Tandem-VM-Definition" // base64 of the JSON the source runs
)

func (p paths) incoming() string { return filepath.Join(p.dir, "incoming.sock") }
func (p paths) outgoing() string { return filepath.Join(p.dir, "outgoing.sock") }

// startIncoming starts the QEMU that receives a migrating VM.
func (m *Manager) startIncoming(ctx context.Context, vm directory.VM) (*instance, error) {
	in, err := m.startQEMU(ctx, vm, nil, "-incoming", "unix:"+paths{dir: m.vmDir(vm.Name)}.incoming(), "-S")
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	in.incoming = true
	in.mu.Unlock()
	m.watch(in)
	m.history.add(vm.Name, "incoming", fmt.Sprintf("QEMU %d waits for the VM's memory", in.pid))
	return in, nil
}

// serveMigration takes a migration stream the source node sends through
// the front door and pipes it into the incoming QEMU.
func (m *Manager) serveMigration(w http.ResponseWriter, r *http.Request) {
	id, err := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
	name := r.Header.Get(headerVM)
	m.mu.Lock()
	view := m.view
	m.mu.Unlock()
	vm, ok := findVM(view.VMs, name)
	if err != nil || !ok || vm.Node != id.ID || vm.MigrateTo != view.Self {
		frontdoor.WriteError(w, http.StatusForbidden, "not_migrating", fmt.Sprintf("VM %q is not migrating from %s to this node", name, id.ID))
		return
	}
	var runs directory.VM
	b, err := base64.StdEncoding.DecodeString(r.Header.Get(headerVMDefinition))
	if err == nil {
		err = json.Unmarshal(b, &runs)
	}
	if err == nil && runs.Name != name {
		err = fmt.Errorf("it names VM %q", runs.Name)
	}
	if err != nil {
		frontdoor.WriteError(w, http.StatusBadRequest, "invalid", "the definition the source runs ("+headerVMDefinition+"): "+err.Error())
		return
	}
	in := m.instance(name)
	if in == nil {
		// Not the request's context: QEMU must outlive the request.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
		in, err = m.startIncoming(sctx, runs)
		cancel()
		if err != nil {
			m.history.add(name, "incoming-failed", err.Error())
			m.log.Error("cannot start the incoming QEMU of a migration", "vm", name, "err", err)
			frontdoor.WriteError(w, http.StatusInternalServerError, "incoming_failed", err.Error())
			return
		}
	}
	in.mu.Lock()
	incoming := in.incoming
	in.mu.Unlock()
	if !incoming {
		frontdoor.WriteError(w, http.StatusConflict, "running_here", fmt.Sprintf("VM %s already runs on this node", name))
		return
	}
	q, err := net.Dial("unix", in.p.incoming())
	if err != nil {
		w.Header().Set("Retry-After", "1")
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "not_ready", err.Error())
		return
	}
	conn, err := memberconn.Accept(w, frontdoor.UpgradeMigration)
	if err != nil {
		q.Close()
		return
	}
	pipe(conn, q)
}

// pipe copies both ways until either side ends.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if c, ok := dst.(interface{ CloseWrite() error }); ok {
			c.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}

// migrationInfo is the part of query-migrate the manager reads.
type migrationInfo struct {
	Status    string `json:"status"`
	TotalTime int64  `json:"total-time"`
	Downtime  int64  `json:"downtime"`
	ErrorDesc string `json:"error-desc"`
	RAM       struct {
		Transferred int64 `json:"transferred"`
		Remaining   int64 `json:"remaining"`
		Total       int64 `json:"total"`
	} `json:"ram"`
}

func (in *instance) qmp(cmd string, args any, out any) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	resp, err := in.mon.Run(b)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if out != nil {
		var r struct {
			Return json.RawMessage `json:"return"`
		}
		if err := json.Unmarshal(resp, &r); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		return json.Unmarshal(r.Return, out)
	}
	return nil
}

// migrateOut sends a VM running here to vm.MigrateTo and records the
// result in the directory.
func (m *Manager) migrateOut(ctx context.Context, in *instance, vm directory.VM) {
	defer func() {
		in.mu.Lock()
		in.migrating = false
		in.mu.Unlock()
		m.poke()
	}()
	start := time.Now()
	info, err := m.sendMemory(ctx, in, vm)
	moved := cluster.VMMoved{Name: vm.Name, Generation: vm.Generation}
	if err != nil {
		moved.Reason = err.Error()
		m.history.add(vm.Name, "migration-failed", err.Error())
		m.log.Error("live migration failed", "vm", vm.Name, "err", err)
		if st, _, _ := in.state(); st != "running" {
			_ = in.raw.Cont() // it stays here: keep it running
		}
	} else {
		moved.To = vm.MigrateTo
		m.history.add(vm.Name, "migrated-out", fmt.Sprintf("to %s in %.1fs, %d MiB sent, QEMU downtime %d ms",
			m.memberName(vm.MigrateTo), time.Since(start).Seconds(), info.RAM.Transferred>>20, info.Downtime))
	}
	var rerr error
	for i := 0; i < 50; i++ {
		if rerr = m.cfg.Cluster.VMMoved(ctx, moved); rerr == nil || errors.Is(rerr, context.Canceled) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rerr != nil {
		m.log.Error("could not record the end of a migration", "vm", vm.Name, "err", rerr)
	}
}

// sendMemory runs the migration proper.
func (m *Manager) sendMemory(ctx context.Context, in *instance, vm directory.VM) (migrationInfo, error) {
	var info migrationInfo
	target, ok := m.member(vm.MigrateTo)
	if !ok {
		return info, fmt.Errorf("target %s is not a member", vm.MigrateTo)
	}
	// The target's copies of the disks must hold every write before the
	// guest can move there (a recent move may still be resyncing them).
	if err := m.waitCopiesUpToDate(ctx, vm, target.ID); err != nil {
		return info, err
	}
	def, err := json.Marshal(in.definition())
	if err != nil {
		return info, err
	}
	runs := base64.StdEncoding.EncodeToString(def)
	_ = os.Remove(in.p.outgoing())
	l, err := net.Listen("unix", in.p.outgoing())
	if err != nil {
		return info, err
	}
	defer l.Close()
	// The target may still be catching up with the directory.
	var up net.Conn
	deadline := time.Now().Add(60 * time.Second)
	for {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		up, err = m.cfg.Dialer.Upgrade(dctx, target.ID, target.Addresses, frontdoor.UpgradeMigration, "/migrate/"+vm.Name,
			http.Header{headerVM: {vm.Name}, headerVMDefinition: {runs}})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return info, fmt.Errorf("reach the incoming QEMU on %s: %w", target.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	caps := []map[string]any{{"capability": "auto-converge", "state": true}}
	if err := in.qmp("migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		up.Close()
		return info, err
	}
	if err := in.qmp("migrate-set-parameters", map[string]any{"downtime-limit": 300, "max-bandwidth": int64(10) << 30}, nil); err != nil {
		up.Close()
		return info, err
	}
	if err := in.qmp("migrate", map[string]any{"uri": "unix:" + in.p.outgoing()}, nil); err != nil {
		up.Close()
		return info, err
	}
	c, ok := <-accepted
	if !ok {
		up.Close()
		return info, errors.New("QEMU did not connect to the migration socket")
	}
	go pipe(c, up)
	for {
		if err := in.qmp("query-migrate", nil, &info); err != nil {
			return info, err
		}
		switch info.Status {
		case "completed":
			return info, nil
		case "failed", "cancelled":
			return info, fmt.Errorf("QEMU: migration %s: %s", info.Status, info.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			_ = in.qmp("migrate_cancel", nil, nil)
			return info, ctx.Err()
		case <-in.done:
			return info, errors.New("QEMU exited during the migration")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// activate resumes a VM whose memory arrived here: its volumes become
// primary here first, so the guest's first write lands on a primary.
func (m *Manager) activate(ctx context.Context, in *instance, vm directory.VM) error {
	t0 := time.Now()
	// The source saw its side complete; the last bytes may still be on
	// their way here. Every millisecond here is the guest's downtime.
	var info migrationInfo
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := in.qmp("query-migrate", nil, &info); err != nil {
			return err
		}
		if info.Status == "completed" {
			break
		}
		if info.Status == "failed" || time.Now().After(deadline) {
			return fmt.Errorf("the incoming migration is %q", info.Status)
		}
		time.Sleep(2 * time.Millisecond)
	}
	runs := in.definition() // the source's hardware, not the directory's
	for _, d := range runs.Disks {
		if err := m.cfg.Cluster.PrimaryHere(ctx, cluster.PrimaryHere{Name: d.Volume}); err != nil {
			return fmt.Errorf("disk %s: %w", d.Volume, err)
		}
	}
	t1 := time.Now()
	if err := m.waitExports(ctx, runs); err != nil {
		return err
	}
	t2 := time.Now()
	if err := in.raw.Cont(); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	m.log.Info("resumed a migrated VM", "vm", vm.Name, "arrive_and_primary_ms", t1.Sub(t0).Milliseconds(), "served_ms", t2.Sub(t1).Milliseconds(), "cont_ms", time.Since(t2).Milliseconds())
	// Switches learn where the guest's MACs are now.
	if err := in.qmp("announce-self", map[string]any{"initial": 50, "max": 550, "rounds": 5, "step": 100}, nil); err != nil &&
		!strings.Contains(err.Error(), "CommandNotFound") {
		m.log.Warn("announce-self", "vm", vm.Name, "err", err)
	}
	in.mu.Lock()
	in.incoming = false
	in.mu.Unlock()
	m.history.add(vm.Name, "migrated-in", fmt.Sprintf("resumed here as QEMU %d", in.pid))
	return nil
}

func (m *Manager) member(id string) (directory.Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mem := range m.view.Members {
		if mem.ID == id {
			return mem, true
		}
	}
	return directory.Member{}, false
}

func (m *Manager) memberName(id string) string {
	if mem, ok := m.member(id); ok {
		return mem.Name
	}
	return id
}

// waitCopiesUpToDate waits until the directory records node's copy of
// each of the VM's volumes as up to date.
func (m *Manager) waitCopiesUpToDate(ctx context.Context, vm directory.VM, node string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m.mu.Lock()
		view := m.view
		m.mu.Unlock()
		behind := ""
		for _, d := range vm.Disks {
			for _, v := range view.Volumes {
				if v.Name == d.Volume && v.Copies[node] != directory.CopyUpToDate {
					behind = d.Volume
				}
			}
		}
		if behind == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the target's copy of %s is not up to date (resync still running?)", behind)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
