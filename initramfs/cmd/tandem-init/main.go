// Package tandeminit is the tandem-init command: the node's supervisor, started by u-root's init as
// its uinit. It mounts the kernel file systems, loads the board's kernel
// modules, prepares the data partition, resolves the settings, brings up
// the network, and then runs the service table until a reboot or
// power-off is asked for. It pets the hardware watchdog only while it and
// the critical services are healthy.
//
// If it ever exits, u-root's init falls back to a shell on the console.
package tandeminit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/initramfs/datadisk"
	"github.com/tandemhci/tandem/initramfs/earlyfs"
	"github.com/tandemhci/tandem/initramfs/netconf"
	"github.com/tandemhci/tandem/initramfs/settings"
	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/initramfs/supervisor"
)

// Paths in the image and on the data partition.
const (
	versionFile = "/etc/tandem/version"
	dataDir     = "/data"
	logDir      = "/data/log"
)

// Main runs tandem-init; it returns only if the node cannot boot.
func Main(args []string) int {
	// It takes over the machine (mounts, hostname, network, reboot):
	// refuse to start anywhere but a Tandem node's initramfs.
	if len(args) > 0 {
		fmt.Fprintln(os.Stderr, "tandem-init takes no arguments: it is started by u-root's init as /bin/uinit")
		return 2
	}
	if err := checkInitramfs(); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-init:", err)
		return 2
	}
	level := new(slog.LevelVar)
	console := openConsoles()
	log := slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: level}))
	n := &node{log: log, console: console, bootedAt: time.Now(), powerReq: make(chan string, 1), watchdogState: "off"}
	if err := n.boot(level); err != nil {
		log.Error("boot failed", "err", err)
		return 1
	}
	action := n.run()
	n.powerOff(action)
	return 1 // powerOff returns only when the reboot system call failed
}

// boot runs the steps before the services start. Only a step without which
// nothing can run returns an error; the others record a problem and boot
// goes on.
func (n *node) boot(level *slog.LevelVar) error {
	n.log.Info("tandem-init starting", "pid", os.Getpid())
	if err := earlyfs.MountAll(); err != nil {
		n.problem("mounts: %v", err)
	}
	// Orphans of services (a VM's QEMU whose manager restarted) become our
	// children, so that the supervisor's reaper collects them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		n.problem("child subreaper: %v", err)
	}
	if v, err := os.ReadFile(versionFile); err == nil {
		n.version = strings.TrimSpace(string(v))
	} else {
		n.problem("image version: %v", err)
	}
	b, err := board.Load(board.ImagePath)
	if err != nil {
		// Validated at build time, so this is a damaged image: run with
		// no hardware knowledge so the console can still reach the node.
		n.problem("%v", err)
		b = &board.Board{Name: "unknown"}
	}
	n.board = b
	n.log.Info("board", "name", b.Name, "version", n.version)

	n.loadModules()

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		n.problem("kernel command line: %v", err)
	}
	n.cmdline = string(cmdline)
	// The installer never touches a disk before its machine is approved:
	// not even the data partition it would find there.
	n.installer = settings.Resolve(settings.Sources{Cmdline: n.cmdline}).Get(settings.KeyMode) == settings.ModeInstall
	var res datadisk.Result
	if n.installer {
		n.log.Info("installer mode: the disks are left alone; /data is in RAM")
		err = errInstallerMode
	} else {
		res, err = datadisk.Prepare(context.Background(), datadisk.Config{MountPoint: dataDir, Logger: n.log})
	}
	if err != nil {
		if !n.installer {
			n.problem("data partition: %v", err)
		}
		// Services still need somewhere to write; it does not survive a reboot.
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			n.problem("mkdir %s: %v", dataDir, err)
		}
		if err := unix.Mount("tmpfs", dataDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
			n.problem("tmpfs on %s: %v", dataDir, err)
		}
	} else {
		n.dataMounted = true
		n.log.Info("data partition mounted", "device", res.Device, "formatted", res.Formatted, "grown", res.Grown)
	}
	for _, d := range []string{logDir, dataDir + "/etc"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			n.problem("mkdir %s: %v", d, err)
		}
	}

	n.settings = n.resolveSettings()
	if err := level.UnmarshalText([]byte(n.settings.Get(settings.KeyLogLevel))); err != nil {
		n.problem("log level: %v", err)
	}
	n.slot = n.settings.Get(settings.KeySlot)

	n.hostname = n.settings.Get(settings.KeyHostname)
	if n.hostname == "" {
		n.hostname = defaultHostname(n.board)
	}
	if err := unix.Sethostname([]byte(n.hostname)); err != nil {
		n.problem("hostname: %v", err)
	}

	n.net = netconf.New(n.netConfig())
	netCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.net.Up(netCtx); err != nil {
		n.problem("network: %v", err)
	}

	table := serviceTable(n.settings, n.board)
	if n.installer {
		table = installerTable(n.settings, n.board, bootMAC(n.cmdline))
	}
	n.sup, err = supervisor.New(supervisor.Config{
		Services: table,
		LogDir:   logDir,
		Logger:   n.log,
	})
	if err != nil {
		return fmt.Errorf("service table: %w", err)
	}
	return nil
}

// errPowerAction ends the supervision when an operator asks for a reboot
// or power-off.
var errPowerAction = errors.New("power action requested")

// run supervises until a power action is asked for, and returns it.
func (n *node) run() string {
	// The watchdog outlives the services: it is pet through shutdown.
	shutdown := make(chan struct{})
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	wdDone := make(chan struct{})
	go func() {
		n.runWatchdog(wdCtx, shutdown)
		close(wdDone)
	}()

	action := statusapi.PowerReboot // if a part fails rather than an operator asking
	g, ctx := errgroup.WithContext(context.Background())
	g.Go(func() error { return n.sup.Run(ctx) })
	g.Go(func() error {
		return (&statusapi.Server{Socket: statusapi.Socket, Source: n, Logger: n.log}).Run(ctx)
	})
	g.Go(func() error { return n.net.Run(ctx) })
	g.Go(func() error {
		select {
		case action = <-n.powerReq:
			n.log.Info("stopping services", "for", action)
			return errPowerAction
		case <-ctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		<-ctx.Done()
		close(shutdown)
		return nil
	})
	if err := g.Wait(); err != nil && !errors.Is(err, errPowerAction) {
		n.log.Error("supervision ended", "err", err)
	}
	n.setFinalAction(action)
	stopWatchdog()
	<-wdDone
	return action
}

// powerOff syncs, unmounts the data partition and reboots or powers off.
func (n *node) powerOff(action string) {
	unix.Sync()
	if n.dataMounted {
		if err := unix.Unmount(dataDir, 0); err != nil {
			n.log.Warn("unmount data partition", "err", err)
			_ = unix.Unmount(dataDir, unix.MNT_DETACH)
		}
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if action == statusapi.PowerPoweroff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	n.log.Info("bye", "action", action)
	n.console.drain()
	if err := unix.Reboot(cmd); err != nil {
		n.log.Error("reboot system call", "err", err)
	}
}

// checkInitramfs reports whether this process runs where tandem-init
// belongs: started by PID 1, with the root file system in RAM.
func checkInitramfs() error {
	if os.Getppid() != 1 {
		return errors.New("refusing to start: not started by init (PID 1); tandem-init only runs as a node's uinit")
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return fmt.Errorf("statfs /: %w", err)
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("refusing to start: / is not an initramfs (file system type %#x)", st.Type)
	}
	return nil
}

// loadModules loads the board's kernel modules and their dependencies.
func (n *node) loadModules() {
	if len(n.board.Modules) == 0 {
		return
	}
	p, err := kmodule.NewProber(kmodule.ProbeOpts{})
	if err != nil {
		n.problem("kernel modules: %v", err)
		return
	}
	var failed []string
	for _, m := range n.board.Modules {
		if err := p.Probe(m, ""); err != nil {
			failed = append(failed, fmt.Sprintf("%s (%v)", m, err))
		}
	}
	if len(failed) > 0 {
		n.problem("kernel modules not loaded: %s", strings.Join(failed, ", "))
	}
	n.log.Info("kernel modules loaded", "count", len(n.board.Modules)-len(failed))
}

// errInstallerMode is why an installer runs with /data in RAM.
var errInstallerMode = errors.New("installer mode")

func (n *node) resolveSettings() *settings.Settings {
	path := dataDir + "/" + settings.DataFile
	file, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.problem("settings file: %v", err)
	}
	s := settings.Resolve(settings.Sources{
		Cmdline: n.cmdline, DataFile: file, DataFilePath: path,
		BoardDefaults: n.board.Defaults, BoardPath: board.ImagePath,
	})
	for _, p := range s.Problems {
		n.problem("%v", p)
	}
	return s
}

func (n *node) netConfig() netconf.Config {
	roles := map[board.Role]netconf.RoleConfig{}
	for _, nic := range n.board.NICs {
		r := string(nic.Role)
		rc := netconf.RoleConfig{Mode: n.settings.Get(settings.NetKey(r, "mode"))}
		rc.Address, _ = netip.ParsePrefix(n.settings.Get(settings.NetKey(r, "address")))
		rc.Gateway, _ = netip.ParseAddr(n.settings.Get(settings.NetKey(r, "gateway")))
		roles[nic.Role] = rc
	}
	if n.installer {
		roles = installerRoles(n.board, bootMAC(n.cmdline))
	}
	var dns []netip.Addr
	for _, a := range strings.Split(n.settings.Get(settings.KeyDNS), ",") {
		if ip, err := netip.ParseAddr(strings.TrimSpace(a)); err == nil {
			dns = append(dns, ip)
		}
	}
	return netconf.Config{Board: n.board, Roles: roles, DNS: dns, Hostname: n.hostname, Logger: n.log}
}

// defaultHostname is tandem-<last three bytes of the management MAC>, so
// two nodes of one box differ without anyone typing a name.
func defaultHostname(b *board.Board) string {
	ifaces, err := netconf.Discover("/sys/class/net")
	if err == nil {
		if i, ok := b.AssignRoles(ifaces)[board.RoleManagement]; ok {
			mac := strings.ReplaceAll(i.MAC, ":", "")
			if len(mac) == 12 {
				return "tandem-" + mac[6:]
			}
		}
	}
	return "tandem"
}
