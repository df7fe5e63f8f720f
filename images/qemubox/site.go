package qemubox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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

	"github.com/tandemhci/tandem/services/nstest/netns"
)

// The site network, inside the box's own network namespace:
//
//	lan   10.99.0.0/24, the management LAN and uplink: the site host .1
//	      (DHCP server, the witness), node i at .11+i, the cluster IP
//	      .100, guests from .150
//	ic    the interconnect between the two nodes (no addresses: the nodes
//	      use IPv6 link-local)
//	prov  the provisioning network, where new machines PXE-boot from the
//	      node that serves it (no address on the site host)
//
// Nothing in the namespace reaches the host's networks; the host reaches
// the nodes only through the localhost forwards the box opens.
const (
	LANPrefix = "10.99.0."
	HostIP    = LANPrefix + "1"
	ClusterIP = LANPrefix + "100"
	lanCIDR   = "/24"
	guestLow  = LANPrefix + "150"
	guestHigh = LANPrefix + "199"
)

// NodeIP is the management address of the box's node i.
func NodeIP(i int) string { return LANPrefix + strconv.Itoa(11+i) }

// site is the box's network namespace with its bridges, DHCP server and
// forwards.
type site struct {
	ns  string
	log *slog.Logger

	mu       sync.Mutex
	servers  []*exec.Cmd // DHCP servers
	forwards []net.Listener
}

// nsPrefix names the box's namespaces; the PID says whose it is, so a
// namespace left by a box whose process died can be told apart and
// removed.
const nsPrefix = "tandem-box-"

// newSite makes the namespace and its bridges.
func newSite(log *slog.Logger) (*site, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the virtual box needs root: its network is a namespace of its own (run as root or with sudo)")
	}
	removeStaleSites(log)
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	s := &site{ns: fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), hex.EncodeToString(b)), log: log}
	if err := netns.Add(s.ns); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"link", "add", "lan", "type", "bridge"},
		{"addr", "add", HostIP + lanCIDR, "dev", "lan"},
		{"link", "set", "lan", "up"},
		{"link", "add", "ic", "type", "bridge"},
		{"link", "set", "ic", "up"},
		{"link", "add", "prov", "type", "bridge"},
		{"link", "set", "prov", "up"},
	}
	for _, st := range steps {
		if err := s.ip(st...); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// removeStaleSites deletes namespaces of boxes whose process is gone (a
// `make run` killed with -9).
func removeStaleSites(log *slog.Logger) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		log.Info("removing a namespace left by an earlier box", "namespace", e.Name())
		_ = netns.Delete(e.Name())
	}
}

func (s *site) ip(args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", s.ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s (in %s): %w: %s", strings.Join(args, " "), s.ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// addTap makes a tap device on a bridge for a node's NIC.
func (s *site) addTap(name, bridge string) error {
	if err := s.ip("tuntap", "add", name, "mode", "tap"); err != nil {
		return err
	}
	if err := s.ip("link", "set", name, "master", bridge); err != nil {
		return err
	}
	return s.ip("link", "set", name, "up")
}

// startDHCP runs the site's DHCP server on the LAN: each node gets its
// fixed address by MAC, guests get addresses from a pool.
func (s *site) startDHCP(workDir string, nodes []dhcpHost) error {
	var hosts []string
	for _, h := range nodes {
		hosts = append(hosts, fmt.Sprintf("--dhcp-host=%s,%s,%s", h.mac, h.ip, h.name))
	}
	return s.dnsmasq(workDir, "dnsmasq", "lan", guestLow, guestHigh, hosts...)
}

// Addresses of the site's own DHCP server on the provisioning network,
// for proxyDHCP tests: the site host takes ProvSiteIP and hands out
// ProvPoolLow to ProvPoolHigh.
const (
	ProvSiteIP   = "192.168.77.2"
	ProvPoolLow  = "192.168.77.150"
	ProvPoolHigh = "192.168.77.199"
)

// StartProvisioningDHCP runs a site DHCP server (dnsmasq, addresses only,
// no boot options) on the provisioning network, as a site that already
// has one does: Tandem then serves it in proxyDHCP mode.
func (b *Box) StartProvisioningDHCP() error {
	if err := b.site.ip("addr", "add", ProvSiteIP+"/24", "dev", "prov"); err != nil {
		return err
	}
	return b.site.dnsmasq(b.cfg.WorkDir, "dnsmasq-prov", "prov", ProvPoolLow, ProvPoolHigh)
}

// dnsmasq runs a DHCP server (no DNS) on a bridge of the site, logging
// to <name>.log in workDir; it is killed with the site.
func (s *site) dnsmasq(workDir, name, bridge, low, high string, extra ...string) error {
	args := append([]string{"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
		"--interface=" + bridge, "--bind-interfaces", "--dhcp-authoritative", "--log-dhcp",
		"--dhcp-range=" + low + "," + high + ",12h",
		"--dhcp-leasefile=" + filepath.Join(workDir, name+".leases"),
		"--pid-file=" + filepath.Join(workDir, name+".pid"),
	}, extra...)
	cmd := netns.Command(s.ns, args...)
	logf, err := os.Create(filepath.Join(workDir, name+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start dnsmasq (the site's DHCP server): %w", err)
	}
	logf.Close()
	s.mu.Lock()
	s.servers = append(s.servers, cmd)
	s.mu.Unlock()
	go func() { _ = cmd.Wait() }()
	return nil
}

type dhcpHost struct{ mac, ip, name string }

// forward listens on a localhost port of the host and connects each
// client to addr inside the site.
func (s *site) forward(addr string) (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.forwards = append(s.forwards, l)
	s.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.pipe(c, addr)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *site) pipe(c net.Conn, addr string) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	up, err := netns.Dial(ctx, s.ns, "tcp", addr)
	cancel()
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

// close stops the forwards and the DHCP server and removes the namespace
// with whatever still runs in it.
func (s *site) close() {
	s.mu.Lock()
	for _, l := range s.forwards {
		l.Close()
	}
	s.forwards = nil
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, cmd := range servers {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	if err := netns.Delete(s.ns); err != nil {
		s.log.Warn("removing the box's namespace", "err", err)
	}
}
