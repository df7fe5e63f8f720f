package dhcp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Config is what the handler answers with.
type Config struct {
	ServerIP netip.Addr   // this server, on the provisioning network
	Subnet   netip.Prefix // the provisioning network
	Router   netip.Addr   // optional
	DNS      []netip.Addr
	Lease    time.Duration // default 1 h
	Boot     BootFiles
	// Proxy is proxyDHCP mode, beside a site's own DHCP server: PXE and
	// iPXE clients get boot information only, no address, and nobody
	// else gets an answer.
	Proxy bool
	// OnBoot, if set, hears of every network boot client's DISCOVER and
	// REQUEST: what it was answered, or why it got no boot answer (an
	// unknown architecture). It must not block.
	OnBoot func(mac string, boot Boot, err error)
	Logger *slog.Logger
}

// Handler answers DHCP requests: pure logic, the sockets are the
// server's.
type Handler struct {
	cfg    Config
	leases *Leases
	log    *slog.Logger
}

// NewHandler checks the configuration. leases may be nil in proxy mode.
func NewHandler(cfg Config, leases *Leases) (*Handler, error) {
	if !cfg.ServerIP.Is4() || !cfg.Subnet.Addr().Is4() || !cfg.Subnet.Contains(cfg.ServerIP) {
		return nil, fmt.Errorf("dhcp: server %v and network %v: want an IPv4 address inside an IPv4 network", cfg.ServerIP, cfg.Subnet)
	}
	if !cfg.Proxy && leases == nil {
		return nil, errors.New("dhcp: a lease table is needed unless in proxy mode")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Handler{cfg: cfg, leases: leases, log: cfg.Logger}, nil
}

// Handle answers one request; nil means no answer. A malformed or
// foreign request gets nil and an error saying why, for the log.
func (h *Handler) Handle(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, fmt.Errorf("op code %v: not a request", req.OpCode)
	}
	if len(req.ClientHWAddr) != 6 {
		return nil, fmt.Errorf("hardware address %x: want an Ethernet MAC", []byte(req.ClientHWAddr))
	}
	mac := req.ClientHWAddr.String()
	boot, bootErr := bootFor(req, h.cfg.Boot)
	if bootErr != nil && !errors.Is(bootErr, ErrNotPXE) {
		// An unknown architecture still gets an address (not in proxy
		// mode), without boot information.
		h.log.Warn("dhcp: no boot answer", "mac", mac, "err", bootErr)
	}
	resp, err := h.answer(req, mac, boot, bootErr)
	if h.cfg.OnBoot != nil && !errors.Is(bootErr, ErrNotPXE) {
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest:
			// A boot client left without an answer (no address left)
			// hears of it in its sequence log, not only in ours.
			heard := bootErr
			if heard == nil && resp == nil && err != nil {
				heard = err
			}
			if heard != nil || resp != nil {
				h.cfg.OnBoot(mac, boot, heard)
			}
		}
	}
	return resp, err
}

// answer is the answer to a well-formed request.
func (h *Handler) answer(req *dhcpv4.DHCPv4, mac string, boot Boot, bootErr error) (*dhcpv4.DHCPv4, error) {
	if h.cfg.Proxy {
		return h.proxy(req, boot, bootErr)
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip, err := h.leases.Offer(mac, addrOf(req.RequestedIPAddress()))
		if err != nil {
			return nil, fmt.Errorf("no offer for %s: %w", mac, err)
		}
		return h.reply(req, dhcpv4.MessageTypeOffer, ip, boot, bootErr)
	case dhcpv4.MessageTypeRequest:
		return h.request(req, mac, boot, bootErr)
	case dhcpv4.MessageTypeRelease:
		h.log.Info("dhcp: release", "mac", mac, "ip", addrOf(req.ClientIPAddr))
		return nil, h.leases.Release(mac, addrOf(req.ClientIPAddr))
	case dhcpv4.MessageTypeDecline:
		return nil, h.leases.Decline(mac, addrOf(req.RequestedIPAddress()))
	case dhcpv4.MessageTypeInform:
		return h.reply(req, dhcpv4.MessageTypeAck, netip.Addr{}, boot, bootErr)
	}
	return nil, fmt.Errorf("message type %v from %s: not answered", req.MessageType(), mac)
}

// request answers a REQUEST: a client selecting this server's offer,
// or renewing or confirming (INIT-REBOOT) its address.
func (h *Handler) request(req *dhcpv4.DHCPv4, mac string, boot Boot, bootErr error) (*dhcpv4.DHCPv4, error) {
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(h.cfg.ServerIP.AsSlice())) {
		return nil, nil // it chose another server
	}
	ip := addrOf(req.RequestedIPAddress())
	if !ip.IsValid() {
		ip = addrOf(req.ClientIPAddr) // renewing
	}
	if !ip.IsValid() || !h.cfg.Subnet.Contains(ip) {
		return h.nak(req, fmt.Sprintf("%v is not on this network", ip))
	}
	le, err := h.leases.Ack(mac, ip, h.cfg.Lease, req.HostName())
	if err != nil {
		return h.nak(req, err.Error())
	}
	h.log.Info("dhcp: lease", "mac", mac, "ip", le.IP, "until", le.Expires, "boot", boot.Firmware)
	return h.reply(req, dhcpv4.MessageTypeAck, le.IP, boot, bootErr)
}

func (h *Handler) nak(req *dhcpv4.DHCPv4, why string) (*dhcpv4.DHCPv4, error) {
	return dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(h.cfg.ServerIP.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptMessage(why)))
}

// reply makes an OFFER or ACK with the address (if any), the network's
// options and the boot answer.
func (h *Handler) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, ip netip.Addr, boot Boot, bootErr error) (*dhcpv4.DHCPv4, error) {
	server := net.IP(h.cfg.ServerIP.AsSlice())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
		dhcpv4.WithNetmask(net.CIDRMask(h.cfg.Subnet.Bits(), 32)),
	}
	if ip.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(net.IP(ip.AsSlice())), dhcpv4.WithLeaseTime(uint32(h.cfg.Lease.Seconds())))
	}
	if h.cfg.Router.IsValid() {
		mods = append(mods, dhcpv4.WithRouter(net.IP(h.cfg.Router.AsSlice())))
	}
	if len(h.cfg.DNS) > 0 {
		var dns []net.IP
		for _, d := range h.cfg.DNS {
			dns = append(dns, net.IP(d.AsSlice()))
		}
		mods = append(mods, dhcpv4.WithDNS(dns...))
	}
	if bootErr == nil {
		mods = append(mods, bootOptions(server, boot)...)
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

// proxy answers a PXE or iPXE client with boot information only
// (proxyDHCP): the site's DHCP server gives the address.
func (h *Handler) proxy(req *dhcpv4.DHCPv4, boot Boot, bootErr error) (*dhcpv4.DHCPv4, error) {
	if bootErr != nil {
		return nil, nil // not ours to answer
	}
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		mt = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	server := net.IP(h.cfg.ServerIP.AsSlice())
	mods := append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
	}, bootOptions(server, boot)...)
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

// bootOptions carry the boot answer: the next server and the file (TFTP
// for a ROM, the script's URL for iPXE), PXEClient as vendor class (PXE
// ROMs look for it), and for iPXE the setting no-pxedhcp, so it does not
// wait for a ProxyDHCP answer (encapsulated option 175.176).
func bootOptions(server net.IP, boot Boot) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithServerIP(server),
		// In the header's file field, where ROMs read it, and as option 67.
		func(d *dhcpv4.DHCPv4) { d.BootFileName = boot.File },
		dhcpv4.WithOption(dhcpv4.OptBootFileName(boot.File)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
	}
	if boot.Firmware == FirmwareIPXE {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{176, 1, 1}))
	}
	return mods
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}
