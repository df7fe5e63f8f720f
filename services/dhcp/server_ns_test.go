package dhcp_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/dhcp"
	"github.com/tandemhci/tandem/services/nstest"
	"github.com/tandemhci/tandem/services/nstest/netns"
)

// TestRealClients serves the provisioning network from a namespace and
// has real clients in another take leases, renew and release: busybox
// udhcpc and ISC dhclient.
func TestRealClients(t *testing.T) {
	nstest.Require(t)
	for _, tool := range []string{"busybox", "dhclient"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make deps)", tool)
		}
	}
	srvNS, cli := nstest.New(t, "dhcps"), nstest.New(t, "dhcpc")
	nstest.Veth(t, srvNS, "prov0", cli, "eth0")
	srvNS.Run("ip", "addr", "add", "192.0.2.1/24", "dev", "prov0")
	mac := strings.TrimSpace(cli.Run("cat", "/sys/class/net/eth0/address"))

	dir := t.TempDir()
	leases, err := dhcp.NewLeases(netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("192.0.2.110"), nil, filepath.Join(dir, "leases.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := dhcp.NewHandler(dhcp.Config{ServerIP: netip.MustParseAddr("192.0.2.1"), Subnet: netip.MustParsePrefix("192.0.2.0/24"),
		Router: netip.MustParseAddr("192.0.2.1"), DNS: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Lease: 10 * time.Minute, Logger: quiet}, leases)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, srvNS.Name, "prov0", h))

	// The clients' scripts note what they got and set the address, as a
	// system's would (a release is sent from it).
	script := filepath.Join(dir, "script")
	got := filepath.Join(dir, "got")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
r="${1:-$reason}"
a="$ip$new_ip_address"
echo "$r ip=$a mask=$subnet$new_subnet_mask router=$router$new_routers" >> `+got+`
case "$r" in
bound|renew|BOUND|RENEW|REBOOT|REBIND) ip addr flush dev "$interface"; ip addr add "$a/24" dev "$interface" ;;
deconfig|RELEASE|STOP|EXPIRE) ip addr flush dev "$interface" ;;
esac
`), 0o755); err != nil {
		t.Fatal(err)
	}
	seen := func(want string) bool {
		b, _ := os.ReadFile(got)
		return strings.Contains(string(b), want)
	}
	leased := func() string {
		if le, ok := leases.Lease(mac); ok {
			return le.IP.String()
		}
		return ""
	}

	// busybox udhcpc: a lease, a renewal (SIGUSR1), and the release as it
	// is stopped (-R).
	udhcpc := cli.Command("busybox", "udhcpc", "-i", "eth0", "-f", "-R", "-t", "5", "-T", "1", "-s", script)
	if err := udhcpc.Start(); err != nil {
		t.Fatal(err)
	}
	nstest.WaitFor(t, 10*time.Second, "udhcpc's lease", func() bool { return seen("bound ip=192.0.2.100 mask=255.255.255.0 router=192.0.2.1") })
	_ = udhcpc.Process.Signal(syscall.SIGUSR1)
	nstest.WaitFor(t, 10*time.Second, "udhcpc's renewal", func() bool { return seen("renew ip=192.0.2.100") })
	_ = udhcpc.Process.Signal(syscall.SIGTERM)
	_ = udhcpc.Wait()
	nstest.WaitFor(t, 5*time.Second, "udhcpc's release", func() bool { return leased() == "" })

	// ISC dhclient: a lease (DORA), then a new run asks for it again
	// (INIT-REBOOT) and gets the same one, then releases it.
	args := []string{"dhclient", "-4", "-1", "-sf", script, "-lf", filepath.Join(dir, "dhclient.leases"), "-pf", filepath.Join(dir, "dhclient.pid")}
	cli.Run(append(args, "eth0")...)
	first := leased()
	if !seen("BOUND ip="+first+" mask=255.255.255.0 router=192.0.2.1") || first == "" {
		t.Fatalf("dhclient got no lease (the server leased %q): %s", first, readFile(got))
	}
	cli.Run(append(args, "-x", "eth0")...) // stop without releasing
	cli.Run(append(args, "eth0")...)
	if !seen("REBOOT ip="+first) || leased() != first {
		t.Errorf("dhclient again: leased %q, want %s: %s", leased(), first, readFile(got))
	}
	cli.Run(append(args, "-r", "eth0")...)
	nstest.WaitFor(t, 5*time.Second, "dhclient's release", func() bool { return leased() == "" })
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// serve runs a DHCP server with the handler on the interface of the
// namespace (its socket bound there) and returns what stops it.
func serve(t *testing.T, ns, iface string, h *dhcp.Handler) (stop func()) {
	t.Helper()
	var srv *dhcp.Server
	err := netns.Do(ns, func() error {
		var err error
		srv, err = dhcp.NewServer(dhcp.ServerConfig{Interface: iface, Handler: h, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
