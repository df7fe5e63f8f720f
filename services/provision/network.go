package provision

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sync/errgroup"

	"github.com/tandemhci/tandem/initramfs/netconf"
	"github.com/tandemhci/tandem/services/dhcp"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/tftp"
)

// proxyPort is where PXE clients send their second request to a
// proxyDHCP server (PXE 2.1), unicast.
const proxyPort = 4011

// serveNetwork gives the provisioning port the plan's address and runs
// DHCP, TFTP and the router advertisement on it until ctx ends; the
// address is taken off again at the end.
func (s *Service) serveNetwork(ctx context.Context, plan directory.Provisioning) error {
	prefix, err := netip.ParsePrefix(plan.Address)
	if err != nil {
		return fmt.Errorf("plan address %q: %w", plan.Address, err)
	}
	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("provisioning port %s: %w (does the board name a provisioning NIC?)", s.cfg.Interface, err)
	}
	// The installer's files before any answer: a machine that gets an
	// address must find them.
	if _, err := s.files.prepare(); err != nil {
		return fmt.Errorf("the installer's files: %w", err)
	}
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer conn.Close()
	if err := netconf.LinkUp(conn, ifi.Name); err != nil {
		return fmt.Errorf("%s up: %w", ifi.Name, err)
	}
	if err := netconf.AddAddress(conn, uint32(ifi.Index), prefix); err != nil {
		return fmt.Errorf("address %v on %s: %w", prefix, ifi.Name, err)
	}
	defer func() {
		if err := netconf.DelAddress(conn, uint32(ifi.Index), prefix); err != nil {
			s.log.Warn("provisioning address not removed", "address", prefix, "err", err)
		}
	}()

	h, leases, err := s.dhcpHandler(plan, prefix)
	if err != nil {
		return err
	}
	if leases != nil {
		defer leases.Close()
	}
	ports := []int{67}
	if plan.Mode == directory.ProvisionProxy {
		ports = append(ports, proxyPort)
	}
	var servers []*dhcp.Server
	for _, port := range ports {
		srv, err := dhcp.NewServer(dhcp.ServerConfig{Interface: ifi.Name, Port: port, Handler: h, Logger: s.log})
		if err != nil {
			return err
		}
		servers = append(servers, srv)
	}
	tftpSrv, err := tftp.New(tftp.Config{Listen: net.JoinHostPort(prefix.Addr().String(), "69"), Files: s.cfg.Loaders, Logger: s.log})
	if err != nil {
		return err
	}
	ra := &routerAdvertiser{ifname: ifi.Name, log: s.log}

	g, gctx := errgroup.WithContext(ctx)
	for _, srv := range servers {
		g.Go(func() error { return srv.Run(gctx) })
	}
	g.Go(func() error { return tftpSrv.Run(gctx) })
	g.Go(func() error { return ra.run(gctx) })
	s.log.Info("provisioning network serving", "interface", ifi.Name, "address", prefix, "mode", plan.Mode)
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("stopped")
	}
	return err
}

// dhcpHandler makes the DHCP answers of the plan: in dhcp mode with a
// lease table kept under DataDir.
func (s *Service) dhcpHandler(plan directory.Provisioning, prefix netip.Prefix) (*dhcp.Handler, *dhcp.Leases, error) {
	server := prefix.Addr()
	cfg := dhcp.Config{
		ServerIP: server,
		Subnet:   prefix.Masked(),
		Lease:    time.Duration(plan.LeaseSeconds) * time.Second,
		Boot: dhcp.BootFiles{
			BIOS:   LoaderBIOS,
			UEFI:   LoaderUEFI,
			Script: "http://" + net.JoinHostPort(server.String(), strconv.Itoa(s.cfg.Port)) + bootPrefix + "ipxe",
		},
		Proxy:  plan.Mode == directory.ProvisionProxy,
		OnBoot: s.pxe.heard,
		Logger: s.log,
	}
	cfg.Router, _ = netip.ParseAddr(plan.Router)
	for _, d := range plan.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			cfg.DNS = append(cfg.DNS, a)
		}
	}
	var leases *dhcp.Leases
	if !cfg.Proxy {
		start, err1 := netip.ParseAddr(plan.RangeStart)
		end, err2 := netip.ParseAddr(plan.RangeEnd)
		if err := errors.Join(err1, err2); err != nil {
			return nil, nil, fmt.Errorf("plan range: %w", err)
		}
		reserved := map[string]netip.Addr{}
		for mac, ip := range plan.Reservations {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				return nil, nil, fmt.Errorf("reservation for %s: %w", mac, err)
			}
			reserved[mac] = a
		}
		var err error
		leases, err = dhcp.NewLeases(start, end, reserved, filepath.Join(s.cfg.DataDir, "leases.jsonl"), nil)
		if err != nil {
			return nil, nil, err
		}
	}
	h, err := dhcp.NewHandler(cfg, leases)
	if err != nil {
		if leases != nil {
			leases.Close()
		}
		return nil, nil, err
	}
	return h, leases, nil
}
