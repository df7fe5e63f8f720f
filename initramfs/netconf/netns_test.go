package netconf

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/services/nstest"
)

// The test binary runs itself inside the namespaces as a helper: the DHCP
// server on one side, the netconf Manager (as the node) on the other.
const helperEnv = "TANDEM_NETCONF_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "dhcp-server":
		if err := dhcpServerHelper(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "node":
		if err := nodeHelper(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dhcpServerHelper leases 192.0.2.50/24 for 4 s (renewal every 2 s) and
// prints a line for every REQUEST it acknowledges.
func dhcpServerHelper() error {
	var requests atomic.Int32
	handler := func(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		resp, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithYourIP(net.IPv4(192, 0, 2, 50)),
			dhcpv4.WithServerIP(net.IPv4(192, 0, 2, 1)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 0, 2, 1))),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
			dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(192, 0, 2, 1))),
			dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(192, 0, 2, 53))),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(4*time.Second)),
		)
		if err != nil {
			return
		}
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
		case dhcpv4.MessageTypeRequest:
			resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
			fmt.Printf("ACK %d hostname=%s\n", requests.Add(1), req.HostName())
		default:
			return
		}
		dst := peer
		if u, ok := peer.(*net.UDPAddr); ok && u.IP.IsUnspecified() {
			dst = &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
		}
		_, _ = conn.WriteTo(resp.ToBytes(), dst)
	}
	srv, err := server4.NewServer("eth0", nil, handler)
	if err != nil {
		return err
	}
	return srv.Serve()
}

// nodeHelper brings up management by DHCP and interconnect statically,
// keeps the lease for 7 s, then prints the interfaces as JSON.
func nodeHelper() error {
	b := &board.Board{NICs: []board.NIC{
		{Role: board.RoleManagement, Match: board.NICMatch{Name: "eth7"}},
		{Role: board.RoleInterconnect, Match: board.NICMatch{Name: "eth8"}},
		{Role: board.RoleProvisioning, Match: board.NICMatch{Name: "eth9"}},
	}}
	list := func() ([]board.Interface, error) {
		var out []board.Interface
		for _, n := range []string{"eth7", "eth8"} {
			i, err := net.InterfaceByName(n)
			if err != nil {
				return nil, err
			}
			out = append(out, board.Interface{Name: n, MAC: i.HardwareAddr.String(), Driver: "veth"})
		}
		return out, nil
	}
	m := New(Config{
		Board: b,
		Roles: map[board.Role]RoleConfig{
			board.RoleManagement:   {Mode: ModeDHCP},
			board.RoleInterconnect: {Mode: ModeStatic, Address: netip.MustParsePrefix("10.9.0.2/24")},
		},
		Hostname:       "node-a",
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, nil)),
		ListInterfaces: list,
		ResolvConf:     os.Getenv("RESOLV_CONF"),
		FirstLeaseWait: 10 * time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	if err := m.Up(ctx); err != nil {
		return err
	}
	_ = m.Run(ctx)
	return json.NewEncoder(os.Stdout).Encode(m.Interfaces())
}

func TestDHCPAndStaticInNamespaces(t *testing.T) {
	nstest.Require(t)
	srv := nstest.New(t, "dhcpsrv")
	node := nstest.New(t, "node")
	nstest.Veth(t, srv, "eth0", node, "eth7")
	nstest.Veth(t, srv, "eth1", node, "eth8")
	srv.Run("ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
	srv.Run("ip", "addr", "add", "10.9.0.1/24", "dev", "eth1")

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	server := srv.Command("env", helperEnv+"=dhcp-server", self)
	var serverOut strings.Builder
	server.Stdout = &serverOut
	server.Stderr = os.Stderr
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })

	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	nodeCmd := node.Command("env", helperEnv+"=node", "RESOLV_CONF="+resolv, self)
	nodeCmd.Stderr = os.Stderr
	// While the node keeps its lease, look at it from outside.
	type result struct {
		out []byte
		err error
	}
	done := make(chan result)
	go func() { out, err := nodeCmd.Output(); done <- result{out, err} }()

	nstest.WaitFor(t, 15*time.Second, "DHCP address on br-mgmt", func() bool {
		out, _ := node.Command("ip", "-4", "addr", "show", "dev", ManagementBridge).Output()
		return strings.Contains(string(out), "192.0.2.50/24")
	})
	route := node.Run("ip", "route", "show", "default")
	if !strings.Contains(route, "via 192.0.2.1 dev br-mgmt") {
		t.Errorf("default route %q", route)
	}
	if out := node.Run("ip", "link", "show", "mgmt0"); !strings.Contains(out, "master br-mgmt") {
		t.Errorf("mgmt0 not in the bridge: %s", out)
	}
	if out := node.Run("ip", "-4", "addr", "show", "dev", "ic0"); !strings.Contains(out, "10.9.0.2/24") {
		t.Errorf("interconnect: %s", out)
	}
	// The address answers across the links.
	srv.Run("ping", "-c", "1", "-W", "2", "192.0.2.50")
	srv.Run("ping", "-c", "1", "-W", "2", "10.9.0.2")

	r := <-done
	if r.err != nil {
		t.Fatalf("node helper: %v", r.err)
	}
	var got []struct {
		Role      string
		Name      string
		Mode      string
		Addresses []string
	}
	if err := json.Unmarshal(r.out, &got); err != nil {
		t.Fatalf("node output %q: %v", r.out, err)
	}
	if len(got) != 2 || got[0].Name != ManagementBridge || fmt.Sprint(got[0].Addresses) != "[192.0.2.50/24]" ||
		got[1].Name != InterconnectPort || fmt.Sprint(got[1].Addresses) != "[10.9.0.2/24]" {
		t.Errorf("interfaces %+v", got)
	}
	b, err := os.ReadFile(resolv)
	if err != nil || !strings.Contains(string(b), "nameserver 192.0.2.53") {
		t.Errorf("resolv.conf %q %v", b, err)
	}
	// A 4 s lease renewed at 2 s for 7 s: the first ACK plus at least two
	// renewals, each sending the hostname.
	server.Process.Kill()
	server.Wait()
	acks := strings.Count(serverOut.String(), "ACK ")
	if acks < 3 {
		t.Errorf("%d ACKs, want the first lease and at least 2 renewals:\n%s", acks, serverOut.String())
	}
	if !strings.Contains(serverOut.String(), "hostname=node-a") {
		t.Errorf("hostname not sent:\n%s", serverOut.String())
	}
}
