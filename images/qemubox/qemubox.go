// Package qemubox boots the virtual Tandem box: QEMU machines running the
// built image, laid out as the qemu-2node board says (every device at the
// PCI address its board file names), each with its own system disk (a
// copy-on-write overlay of images/out/disk.img), on a site network of
// their own (site.go): a management LAN with a DHCP server and room for a
// witness, and the interconnect between the nodes. The host reaches each
// node's front door, and the cluster IP, on forwarded localhost ports.
// `make run` and the boot tests both use it; it needs root.
//
// KVM is used where it works, TCG otherwise.
package qemubox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/services/nstest/netns"
	"github.com/tandemhci/tandem/services/qemu"
)

// Boot says how a node starts.
type Boot int

const (
	// DirectKernel hands QEMU the kernel and initramfs (fastest; the
	// kernel command line can carry settings).
	DirectKernel Boot = iota
	// UEFI boots the disk image under OVMF through GRUB, as hardware does.
	UEFI
	// PXE is a new machine: an empty disk, and SeaBIOS boots from the
	// provisioning network until the disk has a system.
	PXE
	// PXEUEFI is PXE under OVMF.
	PXEUEFI
)

// pxe says whether the machine starts with an empty disk.
func (b Boot) pxe() bool { return b == PXE || b == PXEUEFI }

// Config describes the box.
type Config struct {
	ImageDir string       // images/out
	Board    *board.Board // its NIC and disk PCI addresses place the devices
	WorkDir  string       // overlays, sockets, console logs; kept between runs if reused
	Nodes    []NodeConfig
	Logger   *slog.Logger
}

// NodeConfig describes one machine.
type NodeConfig struct {
	Name      string // also its hostname on the direct-kernel command line
	Boot      Boot
	MemoryMiB int      // default 2048
	CPUs      int      // default 2
	DiskGiB   int      // system disk size; default 8
	Append    []string // extra kernel arguments (direct-kernel boot)
	// FreshDisk discards a disk overlay left by an earlier run.
	FreshDisk bool
	// Deferred is not started by Start: StartNode starts it later (a
	// machine plugged in once the box runs).
	Deferred bool
}

// Box is a running set of nodes.
type Box struct {
	cfg   Config
	site  *site
	Accel qemu.Accelerator
	Nodes []*Node
	// ClusterPort is the localhost port forwarded to the cluster IP's
	// front door.
	ClusterPort int
}

// Node is one running machine.
type Node struct {
	Name        string
	IP          string // management address on the site LAN
	Accel       qemu.Accelerator
	HTTPSPort   int    // localhost port forwarded to the node's front door (443)
	ConsoleLog  string // everything the serial console printed
	ConsolePath string // Unix socket of the serial console
	Disk        string

	cmd     *exec.Cmd
	exited  chan struct{}
	err     error
	mu      sync.Mutex
	console net.Conn   // the one connection to the serial console
	typing  sync.Mutex // one writer on the console at a time
	site    *site
	taps    []string // management, interconnect, provisioning
}

// Start boots every node and returns at once; use WaitHealthy to wait.
func Start(ctx context.Context, cfg Config) (*Box, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var err error
	// Absolute: dnsmasq changes directory, and QEMU gets file names.
	if cfg.WorkDir, err = filepath.Abs(cfg.WorkDir); err != nil {
		return nil, err
	}
	if cfg.ImageDir, err = filepath.Abs(cfg.ImageDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []string{"vmlinuz", "initramfs.cpio.zst", "disk.img"} {
		if _, err := os.Stat(filepath.Join(cfg.ImageDir, f)); err != nil {
			return nil, fmt.Errorf("image not built (make image): %w", err)
		}
	}
	st, err := newSite(cfg.Logger)
	if err != nil {
		return nil, err
	}
	b := &Box{cfg: cfg, site: st, Accel: qemu.Probe(ctx)}
	var hosts []dhcpHost
	for i, nc := range cfg.Nodes {
		hosts = append(hosts, dhcpHost{mac: mac(i, 1), ip: NodeIP(i), name: nc.Name})
	}
	if err := st.startDHCP(cfg.WorkDir, hosts); err != nil {
		b.Stop()
		return nil, err
	}
	if b.ClusterPort, err = st.forward(ClusterIP + ":443"); err != nil {
		b.Stop()
		return nil, err
	}
	for i, nc := range cfg.Nodes {
		if nc.Deferred {
			continue
		}
		n, err := b.startNode(ctx, i, nc)
		if err != nil {
			b.Stop()
			return nil, fmt.Errorf("node %s: %w", nc.Name, err)
		}
		b.Nodes = append(b.Nodes, n)
	}
	return b, nil
}

// StartNode starts a node the configuration marked Deferred.
func (b *Box) StartNode(ctx context.Context, name string) (*Node, error) {
	for i, nc := range b.cfg.Nodes {
		if nc.Name != name {
			continue
		}
		n, err := b.startNode(ctx, i, nc)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", nc.Name, err)
		}
		b.Nodes = append(b.Nodes, n)
		return n, nil
	}
	return nil, fmt.Errorf("no node %q in the box's configuration", name)
}

// Namespace is the site network's namespace: commands run in it with
// `ip netns exec`.
func (b *Box) Namespace() string { return b.site.ns }

// Command returns a command that runs on the site network (a witness, a
// client), started and ended by the caller.
func (b *Box) Command(args ...string) *exec.Cmd { return netns.Command(b.site.ns, args...) }

// ClusterURL is the cluster IP's front door as seen from the host.
func (b *Box) ClusterURL() string { return fmt.Sprintf("https://127.0.0.1:%d", b.ClusterPort) }

func (b *Box) startNode(ctx context.Context, i int, nc NodeConfig) (*Node, error) {
	if nc.MemoryMiB == 0 {
		nc.MemoryMiB = 2048
	}
	if nc.CPUs == 0 {
		nc.CPUs = 2
	}
	if nc.DiskGiB == 0 {
		nc.DiskGiB = 8
	}
	dir := filepath.Join(b.cfg.WorkDir, nc.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &Node{
		Name:        nc.Name,
		ConsoleLog:  filepath.Join(dir, "console.log"),
		ConsolePath: filepath.Join(dir, "console.sock"),
		Disk:        filepath.Join(dir, "disk.qcow2"),
		IP:          NodeIP(i),
		Accel:       b.Accel,
		exited:      make(chan struct{}),
		site:        b.site,
		taps:        []string{fmt.Sprintf("n%dlan", i), fmt.Sprintf("n%dic", i), fmt.Sprintf("n%dprov", i)},
	}
	for k, bridge := range []string{"lan", "ic", "prov"} {
		if err := b.site.addTap(n.taps[k], bridge); err != nil {
			return nil, err
		}
	}
	if nc.FreshDisk || nc.Boot.pxe() {
		_ = os.Remove(n.Disk)
	}
	if nc.Boot.pxe() {
		// A new machine's disk: empty, and sparse, so that a test can
		// tell whether anything at all was written to it.
		n.Disk = filepath.Join(dir, "disk.raw")
		_ = os.Remove(n.Disk)
		f, err := os.Create(n.Disk)
		if err == nil {
			err = f.Truncate(int64(nc.DiskGiB) << 30)
			f.Close()
		}
		if err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(n.Disk); err != nil {
		img, _ := filepath.Abs(filepath.Join(b.cfg.ImageDir, "disk.img"))
		out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", "raw", n.Disk, fmt.Sprintf("%dG", nc.DiskGiB)).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("qemu-img create: %w: %s", err, out)
		}
	}
	_ = os.Remove(n.ConsoleLog)
	_ = os.Remove(n.ConsolePath)
	port, err := b.site.forward(n.IP + ":443")
	if err != nil {
		return nil, err
	}
	n.HTTPSPort = port

	args, err := b.qemuArgs(i, nc, n)
	if err != nil {
		return nil, err
	}
	n.cmd = netns.Command(b.site.ns, append([]string{qemu.System}, args...)...)
	stderr, err := os.Create(filepath.Join(dir, "qemu.stderr"))
	if err != nil {
		return nil, err
	}
	n.cmd.Stderr = stderr
	// Its own process group, so Ctrl-C in `make run` reaches us first and
	// we stop QEMU ourselves, cleanly.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cfg.Logger.Debug("starting QEMU", "node", nc.Name, "args", strings.Join(args, " "))
	if err := n.cmd.Start(); err != nil {
		stderr.Close()
		return nil, fmt.Errorf("start QEMU: %w", err)
	}
	go func() {
		err := n.cmd.Wait()
		stderr.Close()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(n.exited)
	}()
	if err := n.attachConsole(); err != nil {
		n.Kill()
		return nil, err
	}
	return n, nil
}

// attachConsole connects to the serial console socket as soon as QEMU
// offers it and copies everything the guest prints into ConsoleLog.
func (n *Node) attachConsole() error {
	log, err := os.Create(n.ConsoleLog)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.Dial("unix", n.ConsolePath)
		if err == nil {
			n.console = conn
			break
		}
		select {
		case <-n.exited:
			log.Close()
			return fmt.Errorf("QEMU exited before its console could be attached: %v", n.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log.Close()
			return fmt.Errorf("console %s: %w", n.ConsolePath, err)
		}
	}
	go func() {
		_, _ = io.Copy(log, n.console)
		log.Close()
	}()
	return nil
}

// pciAddr turns a board PCI path (0000:00:03.0) into QEMU's addr= (0x3).
func pciAddr(path string) (string, error) {
	var dom, bus, slot, fn int
	if _, err := fmt.Sscanf(path, "%x:%x:%x.%x", &dom, &bus, &slot, &fn); err != nil || dom != 0 || bus != 0 {
		return "", fmt.Errorf("PCI path %q: qemubox places devices on bus 0000:00 only", path)
	}
	return fmt.Sprintf("0x%x.0x%x", slot, fn), nil
}

func (b *Box) qemuArgs(i int, nc NodeConfig, n *Node) ([]string, error) {
	bd := b.cfg.Board
	addrOf := func(r board.Role) (string, error) {
		nic, ok := bd.NIC(r)
		if !ok {
			return "", fmt.Errorf("board %s has no %s NIC", bd.Name, r)
		}
		return pciAddr(nic.Match.PCIPath)
	}
	mgmtAddr, err := addrOf(board.RoleManagement)
	if err != nil {
		return nil, err
	}
	icAddr, err := addrOf(board.RoleInterconnect)
	if err != nil {
		return nil, err
	}
	provAddr, err := addrOf(board.RoleProvisioning)
	if err != nil {
		return nil, err
	}
	diskAddr, err := pciAddr(bd.Disks.System.Match.PCIPath)
	if err != nil {
		return nil, err
	}
	// A new machine tries its disk first and the provisioning network
	// next; its other NICs carry no boot ROM.
	format, diskBoot, provBoot, noROM := "qcow2", "", "", ""
	if nc.Boot.pxe() {
		format, diskBoot, provBoot, noROM = "raw", ",bootindex=1", ",bootindex=2", ",romfile="
	}
	args := []string{
		"-name", nc.Name,
		"-machine", "q35",
		"-m", strconv.Itoa(nc.MemoryMiB),
		"-smp", strconv.Itoa(nc.CPUs),
		"-nographic", "-nodefaults", "-vga", "none",
		// QEMU waits for qemubox to connect before it starts the guest, so
		// the console log has every byte from the first.
		"-chardev", fmt.Sprintf("socket,id=console,path=%s,server=on,wait=on", n.ConsolePath),
		"-serial", "chardev:console",
		"-netdev", fmt.Sprintf("tap,id=mgmt,ifname=%s,script=no,downscript=no", n.taps[0]),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=mgmt,addr=%s,mac=%s%s", mgmtAddr, mac(i, 1), noROM),
		"-netdev", fmt.Sprintf("tap,id=ic,ifname=%s,script=no,downscript=no", n.taps[1]),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=ic,addr=%s,mac=%s%s", icAddr, mac(i, 2), noROM),
		"-netdev", fmt.Sprintf("tap,id=prov,ifname=%s,script=no,downscript=no", n.taps[2]),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=prov,addr=%s,mac=%s%s", provAddr, mac(i, 3), provBoot),
		"-drive", fmt.Sprintf("file=%s,if=none,id=system,format=%s,cache=unsafe", n.Disk, format),
		"-device", fmt.Sprintf("virtio-blk-pci,drive=system,addr=%s%s", diskAddr, diskBoot),
		"-device", "virtio-rng-pci",
	}
	if bd.Watchdog.Module == "i6300esb" {
		args = append(args, "-device", "i6300esb", "-action", "watchdog=reset")
	}
	args = append(args, b.Accel.Args()...)
	switch nc.Boot {
	case DirectKernel:
		appendArgs := append([]string{
			"console=tty0", bd.Console.KernelArg(), "panic=10", "tandem.hostname=" + nc.Name,
		}, nc.Append...)
		args = append(args,
			"-kernel", filepath.Join(b.cfg.ImageDir, "vmlinuz"),
			"-initrd", filepath.Join(b.cfg.ImageDir, "initramfs.cpio.zst"),
			"-append", strings.Join(appendArgs, " "))
	case UEFI, PXEUEFI:
		args = append(args, "-bios", "/usr/share/qemu/OVMF.fd")
	}
	return args, nil
}

// MAC returns the MAC qemubox gives node i's NIC k (1 management,
// 2 interconnect, 3 provisioning).
func MAC(i, k int) string { return mac(i, k) }

// mac returns a stable, locally administered MAC for node i's NIC k.
func mac(i, k int) string { return fmt.Sprintf("52:54:00:7a:%02x:%02x", i+1, k) }

// Stop ends every node (QEMU is asked to quit, then killed) and removes
// the site network with whatever still runs on it.
func (b *Box) Stop() {
	for _, n := range b.Nodes {
		n.Kill()
	}
	b.site.close()
}

// LinksDown cuts the node's cables (management and interconnect); the
// machine keeps running.
func (n *Node) LinksDown() error {
	for _, t := range n.taps {
		if err := n.site.ip("link", "set", t, "down"); err != nil {
			return err
		}
	}
	return nil
}

// LinksUp plugs the node's cables back in.
func (n *Node) LinksUp() error {
	for _, t := range n.taps {
		if err := n.site.ip("link", "set", t, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Kill ends the node's QEMU at once, like pulling the power cord.
func (n *Node) Kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case <-n.exited:
		return
	default:
	}
	stopGroup(n.cmd.Process.Pid, n.exited)
}

// stopGroup ends the process group led by pid: SIGTERM, then SIGKILL after
// 5 s; done is closed once the leader has been waited for.
func stopGroup(pid int, done <-chan struct{}) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
}

// Exited is closed when the node's QEMU has ended.
func (n *Node) Exited() <-chan struct{} { return n.exited }

// Err is why QEMU ended, once it has.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}
