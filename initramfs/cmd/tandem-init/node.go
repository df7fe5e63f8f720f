package tandeminit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/initramfs/netconf"
	"github.com/tandemhci/tandem/initramfs/settings"
	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/initramfs/supervisor"
	"github.com/tandemhci/tandem/initramfs/watchdog"
)

// node holds what the supervisor knows about this node; it is the status
// API's source.
type node struct {
	log         *slog.Logger
	console     *consoles
	bootedAt    time.Time
	version     string
	board       *board.Board
	settings    *settings.Settings
	hostname    string
	slot        string
	dataMounted bool
	cmdline     string
	installer   bool // booted in installer mode
	net         *netconf.Manager
	sup         *supervisor.Supervisor
	powerReq    chan string

	mu            sync.Mutex
	problems      []string
	watchdogState string
	watchdogArmed time.Duration // the armed watchdog's timeout
	finalAction   string
}

// problem records something wrong that the node runs on with.
func (n *node) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	n.log.Warn("problem", "msg", msg)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.problems = append(n.problems, msg)
}

func (n *node) setWatchdogState(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.watchdogState = s
}

func (n *node) setFinalAction(a string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.finalAction = a
}

// Node implements statusapi.Source.
func (n *node) Node() statusapi.Node {
	n.mu.Lock()
	problems := append([]string(nil), n.problems...)
	wd, wdTimeout := n.watchdogState, n.watchdogArmed
	n.mu.Unlock()
	return statusapi.Node{
		Name:                   n.hostname,
		Board:                  n.board.Name,
		Version:                n.version,
		Slot:                   n.slot,
		BootedAt:               n.bootedAt,
		UptimeSeconds:          time.Since(n.bootedAt).Seconds(),
		DataMounted:            n.dataMounted,
		Watchdog:               wd,
		WatchdogTimeoutSeconds: int(wdTimeout / time.Second),
		Interfaces:             n.net.Interfaces(),
		Services:               n.sup.Services(),
		Problems:               problems,
	}
}

// ServiceLog implements statusapi.Source.
func (n *node) ServiceLog(name string, lines int) ([]statusapi.LogLine, error) {
	return n.sup.Log(name, lines)
}

// Control implements statusapi.Source.
func (n *node) Control(ctx context.Context, service, action string) error {
	return n.sup.Control(ctx, service, action)
}

// Power implements statusapi.Source.
func (n *node) Power(action string) error {
	switch action {
	case statusapi.PowerReboot, statusapi.PowerPoweroff:
	default:
		return fmt.Errorf("unknown power action %q (want reboot or poweroff)", action)
	}
	select {
	case n.powerReq <- action:
		return nil
	default:
		return fmt.Errorf("a power action is already under way")
	}
}

// shutdownPetLimit bounds how long the watchdog is pet once shutdown has
// begun: services get their stop timeouts, but a shutdown that hangs
// longer is ended by the watchdog.
const shutdownPetLimit = 90 * time.Second

// runWatchdog pets the board's watchdog every third of its timeout while
// the critical services are healthy and the VM manager's fence lease
// holds, and regardless of the services (for a bounded time) once
// shutdown has begun. It disarms the watchdog at the end only
// for a power-off.
func (n *node) runWatchdog(ctx context.Context, shutdown <-chan struct{}) {
	wb := n.board.Watchdog
	if wb.Device == "" || !n.settings.On(settings.KeyWatchdog) {
		return
	}
	var dev *watchdog.Device
	var err error
	// The device appears once its module has bound; give it a moment.
	for i := 0; i < 50; i++ {
		if dev, err = watchdog.Open(wb.Device, wb.Timeout); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		n.problem("%v: the node runs without a hardware watchdog", err)
		return
	}
	grace := n.settings.Duration(settings.KeyWatchdogGrace)
	n.log.Info("watchdog armed", "device", wb.Device, "timeout", dev.Timeout(), "grace", grace)
	n.mu.Lock()
	n.watchdogArmed = dev.Timeout()
	n.mu.Unlock()
	n.setWatchdogState("armed")
	tick := time.NewTicker(dev.Timeout() / 3)
	defer tick.Stop()
	var shutdownSince time.Time
	withheld := false
	for {
		select {
		case <-ctx.Done():
			n.mu.Lock()
			poweroff := n.finalAction == statusapi.PowerPoweroff
			n.mu.Unlock()
			if poweroff {
				if err := dev.Disarm(); err != nil {
					n.log.Warn("watchdog not disarmed", "err", err)
				}
			}
			return
		case <-shutdown:
			shutdown = nil // seen; keep ticking
			shutdownSince = time.Now()
			continue
		case <-tick.C:
		}
		var reason error
		if shutdownSince.IsZero() {
			reason = n.sup.Health(grace)
		} else if time.Since(shutdownSince) > shutdownPetLimit {
			reason = fmt.Errorf("shutdown has taken over %v", shutdownPetLimit)
		}
		if reason == nil {
			// The fence backstop: VMs past their lease reset the node
			// within the timeout, which is what the survivor counts on.
			reason = watchdog.LeaseProblem(watchdog.LeasePath, watchdog.Monotonic())
		}
		if reason != nil {
			if !withheld {
				n.log.Error("withholding the watchdog: the node resets unless this clears", "reason", reason, "within", dev.Timeout())
				n.setWatchdogState("withheld: " + reason.Error())
				withheld = true
			}
			continue
		}
		if withheld {
			n.log.Info("watchdog pet again")
			n.setWatchdogState("armed")
			withheld = false
		}
		if err := dev.Pet(); err != nil {
			n.log.Error("watchdog", "err", err)
		}
	}
}
