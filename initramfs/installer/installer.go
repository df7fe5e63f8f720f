// Package installer is what a new machine runs in RAM after it booted
// the firmware image over the network in installer mode: it reports the
// machine's hardware to the provisioning API and, once an admin (or the
// allowlist) approved it, installs the firmware on the disk the board's
// rules pick, step by step, each step reported to the directory's
// sequence log: disk, download, wipe, write, verify, data, seal, reboot.
//
// Nothing is written to any disk before the approval. The disk becomes
// bootable only at seal, after everything written was read back and
// checked, so a machine whose install stopped half-way boots the
// installer again, never a half-written system.
package installer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
)

// Config is the installer's configuration.
type Config struct {
	Provision     string // host:port of the serving node's front door
	CAFingerprint string // the cluster CA's SHA-256, pinned
	MAC           string // the NIC the machine booted from
	Board         *board.Board
	BootDir       string // GRUB for both firmware types (disklayout.BootDir)
	WorkDir       string // downloads, in RAM
	Root          string // where /sys and /proc are ("/")
	Version       string // of the running image
	Mke2fs        string
	// Reboot restarts the machine into its own disk.
	Reboot    func() error
	PollEvery time.Duration // default 2 s
	Logger    *slog.Logger
}

// Installer runs one install.
type Installer struct {
	cfg Config
	log *slog.Logger
	api *client
	// What the steps found and fetched, in this boot's memory.
	disk    *targetDisk
	files   *downloaded
	current cluster.InstallPlan
}

// New checks the configuration.
func New(cfg Config) (*Installer, error) {
	if cfg.Provision == "" || cfg.CAFingerprint == "" || cfg.MAC == "" {
		return nil, errors.New("installer: the kernel command line names no provisioning node, CA fingerprint or boot NIC (tandem.provision, tandem.ca, BOOTIF)")
	}
	mac, err := directory.CanonicalMAC(cfg.MAC)
	if err != nil {
		return nil, fmt.Errorf("installer: boot NIC: %w", err)
	}
	cfg.MAC = mac
	if cfg.Board == nil || cfg.Reboot == nil {
		return nil, errors.New("installer: Board and Reboot are required")
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = 2 * time.Second
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.Mke2fs == "" {
		cfg.Mke2fs = "mke2fs"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return &Installer{cfg: cfg, log: cfg.Logger, api: newClient(cfg.Provision, hex.EncodeToString(key), mac)}, nil
}

// Run reports, waits for approval, installs and reboots; it returns
// only when ctx ends (or the reboot failed).
func (in *Installer) Run(ctx context.Context) error {
	in.log.Info("installer starting", "mac", in.cfg.MAC, "provisioning", in.cfg.Provision)
	// The network may still be settling, or drop: every call is retried.
	in.retry(ctx, "pin the cluster CA", func() error { return in.api.pin(ctx, in.cfg.CAFingerprint) })
	report := cluster.InstallerReport{MAC: in.cfg.MAC, Address: in.address()}
	inv := Inventory(in.cfg.Root)
	inv.ImageVersion = in.cfg.Version
	report.Inventory = &inv
	in.retry(ctx, "report the machine", func() (err error) {
		in.current, err = in.api.report(ctx, report)
		return err
	})
	in.log.Info("reported", "disks", len(inv.Disks), "nics", len(inv.NICs), "firmware", inv.Firmware, "state", in.current.State)

	said := ""
	for ctx.Err() == nil {
		p := in.current
		if msg := p.State + ": " + p.Message; msg != said {
			in.log.Info("machine", "state", p.State, "message", p.Message)
			said = msg
		}
		switch p.State {
		case directory.MachineApproved, directory.MachineInstalling:
			if err := in.install(ctx); err != nil {
				in.log.Error("install stopped", "err", err)
			}
		case directory.MachineInstalled:
			// Reported done; the reboot itself failed or is late.
			return in.cfg.Reboot()
		}
		if !sleep(ctx, in.cfg.PollEvery) {
			break
		}
		in.retry(ctx, "poll the plan", func() (err error) {
			in.current, err = in.api.plan(ctx)
			return err
		})
	}
	return nil
}

// install runs the steps not done yet, in order, each reported; it
// returns after a failed step (the admin retries it) or the reboot.
func (in *Installer) install(ctx context.Context) error {
	for _, name := range directory.InstallerSteps() {
		if stepDone(in.current, name) {
			continue
		}
		in.report(ctx, cluster.InstallerStep{Step: name, State: directory.StepRunning})
		if in.current.State != directory.MachineInstalling && in.current.State != directory.MachineApproved {
			return fmt.Errorf("the machine is %s now: the install stops", in.current.State)
		}
		if name == directory.StepReboot {
			// Said before it happens: once rebooting nothing reports.
			in.report(ctx, cluster.InstallerStep{Step: name, State: directory.StepDone, Output: "rebooting into the installed firmware"})
			in.log.Info("installed: rebooting into the installed firmware")
			return in.cfg.Reboot()
		}
		start := time.Now()
		out, err := in.run(ctx, name)
		if err != nil {
			in.log.Error("step failed", "step", name, "err", err)
			in.report(ctx, cluster.InstallerStep{Step: name, State: directory.StepFailed, Output: out, Error: err.Error()})
			return err
		}
		out = strings.TrimSpace(out + fmt.Sprintf("\n(%.1f s)", time.Since(start).Seconds()))
		in.log.Info("step done", "step", name, "output", out)
		in.report(ctx, cluster.InstallerStep{Step: name, State: directory.StepDone, Output: out})
	}
	return nil
}

// report tells the directory of a step, retrying until it is heard.
func (in *Installer) report(ctx context.Context, s cluster.InstallerStep) {
	in.retry(ctx, "report step "+s.Step, func() (err error) {
		in.current, err = in.api.step(ctx, s)
		return err
	})
}

func stepDone(p cluster.InstallPlan, name string) bool {
	i := slices.IndexFunc(p.Steps, func(s directory.Step) bool { return s.Name == name })
	return i >= 0 && p.Steps[i].State == directory.StepDone
}

// run does one step and says what it did.
func (in *Installer) run(ctx context.Context, step string) (string, error) {
	switch step {
	case directory.StepDisk:
		return in.stepDisk()
	case directory.StepDownload:
		return in.stepDownload(ctx)
	}
	// The later steps need what those two found and fetched: a retried
	// install in the same boot has it, a new boot finds it again.
	if in.disk == nil {
		if _, err := in.stepDisk(); err != nil {
			return "", err
		}
	}
	if in.files == nil {
		if _, err := in.stepDownload(ctx); err != nil {
			return "", err
		}
	}
	switch step {
	case directory.StepWipe:
		return in.stepWipe()
	case directory.StepWrite:
		return in.stepWrite()
	case directory.StepVerify:
		return in.stepVerify()
	case directory.StepData:
		return in.stepData(ctx)
	case directory.StepSeal:
		return in.stepSeal()
	}
	return "", fmt.Errorf("unknown step %q", step)
}

// retry runs f until it succeeds or ctx ends, backing off up to 10 s.
func (in *Installer) retry(ctx context.Context, what string, f func() error) {
	wait := 500 * time.Millisecond
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := f()
		if err == nil {
			return
		}
		var stop *errStop
		if errors.As(err, &stop) {
			wait = 10 * time.Second
		}
		if attempt == 1 || attempt%10 == 0 {
			in.log.Warn("cannot "+what+"; trying again", "attempt", attempt, "err", err)
		}
		if !sleep(ctx, wait) {
			return
		}
		wait = min(wait*2, 10*time.Second)
	}
}

// address is the boot NIC's IPv4 address, for the console.
func (in *Installer) address() string {
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if !strings.EqualFold(i.HardwareAddr.String(), in.cfg.MAC) {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return ""
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
