// Package qemu holds what every part of Tandem that starts QEMU shares:
// choosing the accelerator, and the binaries' names.
package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"time"
)

// System is the system emulator Tandem runs.
const System = "qemu-system-x86_64"

// Accelerator says how guests run: KVM where it works, TCG otherwise.
type Accelerator struct {
	KVM    bool
	Reason string // why TCG was chosen; empty with KVM
}

// Name is "kvm" or "tcg".
func (a Accelerator) Name() string {
	if a.KVM {
		return "kvm"
	}
	return "tcg"
}

// Args are QEMU's accelerator and CPU arguments.
func (a Accelerator) Args() []string {
	if a.KVM {
		return []string{"-accel", "kvm", "-cpu", "host"}
	}
	// -cpu max gives the guest RDRAND, so its entropy pool fills at boot
	// and crypto/rand does not block.
	return []string{"-accel", "tcg,thread=multi", "-cpu", "max"}
}

// CPUDevice is the device type of one vCPU of the model Args chooses,
// for CPUs added as devices.
func (a Accelerator) CPUDevice() string {
	if a.KVM {
		return "host-x86_64-cpu"
	}
	return "max-x86_64-cpu"
}

// Probe finds out whether KVM works here. /dev/kvm alone is not enough:
// under nested virtualisation that lacks features QEMU aborts while
// setting up a "-cpu host" vCPU, so a real QEMU is started paused and must
// still be alive after a moment.
func Probe(ctx context.Context) Accelerator {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return Accelerator{Reason: "no usable /dev/kvm: " + err.Error()}
	}
	f.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Not paused (-S): some hosts fail only once a vCPU runs ("failed to
	// set MSR"); with no disk the BIOS just waits for a boot device.
	cmd := exec.CommandContext(ctx, System, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "64",
		"-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none")
	if err := cmd.Start(); err != nil {
		return Accelerator{Reason: "start " + System + ": " + err.Error()}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			err = errors.New("exited")
		}
		return Accelerator{Reason: "/dev/kvm is there but QEMU cannot run a -cpu host guest on it: " + err.Error()}
	case <-time.After(1500 * time.Millisecond):
		cancel()
		<-exited
		return Accelerator{KVM: true}
	}
}

// Prober remembers the first probe's answer: the host does not change
// while a process runs.
type Prober struct {
	once sync.Once
	mu   sync.Mutex
	acc  Accelerator
}

// Get probes once and returns the answer every time after.
func (p *Prober) Get(ctx context.Context) Accelerator {
	p.once.Do(func() { p.acc = Probe(ctx) })
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acc
}

// FallBack records that KVM failed after all (a guest did not start on
// it): from now on guests run under TCG.
func (p *Prober) FallBack(reason string) {
	p.once.Do(func() {})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.acc = Accelerator{Reason: reason}
}
