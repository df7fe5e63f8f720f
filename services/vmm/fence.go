package vmm

import (
	"context"
	"fmt"
	"time"

	"github.com/tandemhci/tandem/initramfs/watchdog"
	"github.com/tandemhci/tandem/services/cluster"
)

// Fencing: the two copies of a VM must never run at once. This node's
// VMs stop fenceAfter its last contact with the cluster's majority; the
// survivor restarts them only after that bound, plus the grace and the
// watchdog timeout the leader adds for a node whose VM manager cannot
// stop them (the fence lease, see initramfs/watchdog). The check runs on
// its own clock, not in the reconcile loop, which may be busy starting a
// VM when the contact ends.

// fenceCheckEvery is how often the bound is checked and the lease renewed.
const fenceCheckEvery = 200 * time.Millisecond

// defaultFenceAfter stands in for the agent's bound until a view says it.
const defaultFenceAfter = 4 * time.Second

// initQuorum takes the contact the previous run of the manager promised
// on from its lease, so that a restart does not extend the VMs' lives.
func (m *Manager) initQuorum() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.quorumAt, m.fenceAfter = time.Now(), defaultFenceAfter
	l, ok, err := watchdog.ReadLease(m.cfg.FenceLease)
	if err != nil || !ok || l.QuorumAt == 0 {
		return
	}
	m.quorumAt = time.Now().Add(-(watchdog.Monotonic() - l.QuorumAt))
	if f := l.Deadline - l.QuorumAt - cluster.FenceGrace; f > 0 {
		m.fenceAfter = f
	}
}

// noteView records the contact a view proves.
func (m *Manager) noteView(v cluster.LocalView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.view = v
	if v.FenceAfter > 0 {
		m.fenceAfter = v.FenceAfter
	}
	if v.Quorum && v.QuorumAt.After(m.quorumAt) {
		m.quorumAt = v.QuorumAt
	}
}

// outOfQuorum says whether this node's VMs must be stopped now.
func (m *Manager) outOfQuorum() (bool, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	since := time.Since(m.quorumAt)
	return since > m.fenceAfter, since
}

// fenceLoop stops every VM once the bound has passed, and keeps the
// lease current.
func (m *Manager) fenceLoop(ctx context.Context) {
	tick := time.NewTicker(fenceCheckEvery)
	defer tick.Stop()
	for {
		if out, since := m.outOfQuorum(); out {
			m.fenceAll(since)
		}
		if err := m.renewLease(); err != nil {
			m.log.Error("fence lease not renewed: the watchdog will reset this node", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// fenceAll kills every QEMU here, whatever it was doing (a graceful stop
// under way waits for no one now).
func (m *Manager) fenceAll(since time.Duration) {
	for _, name := range m.names() {
		in := m.instance(name)
		if in == nil || in.gone() {
			continue
		}
		in.beginStop()
		in.kill()
		m.history.add(name, "fenced", fmt.Sprintf("this node was out of the cluster's majority for %.1fs: VM stopped so that another node may run it", since.Seconds()))
		m.log.Warn("fenced: VM stopped, this node lost the cluster", "vm", name)
	}
}

// renewLease writes the lease for the QEMUs that run or are about to start
// here: they may run until the bound after the last contact.
func (m *Manager) renewLease() error {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	m.mu.Lock()
	n := m.starting
	for _, in := range m.vms {
		if !in.gone() {
			n++
		}
	}
	age, fenceAfter := time.Since(m.quorumAt), m.fenceAfter
	m.mu.Unlock()
	now := watchdog.Monotonic()
	return watchdog.WriteLease(m.cfg.FenceLease, watchdog.Lease{
		VMs: n, QuorumAt: now - age, Deadline: now - age + fenceAfter + cluster.FenceGrace})
}

// beginStart covers a QEMU about to start with the lease first; endStart
// is called once the manager tracks it (or it failed).
func (m *Manager) beginStart() error {
	m.mu.Lock()
	m.starting++
	m.mu.Unlock()
	if err := m.renewLease(); err != nil {
		m.endStart()
		return fmt.Errorf("fence lease: %w", err)
	}
	if out, since := m.outOfQuorum(); out {
		m.endStart()
		return fmt.Errorf("this node has not heard from the cluster's majority for %.1fs: it runs no VMs until it does", since.Seconds())
	}
	return nil
}

func (m *Manager) endStart() {
	m.mu.Lock()
	m.starting--
	m.mu.Unlock()
}
