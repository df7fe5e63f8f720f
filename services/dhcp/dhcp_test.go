package dhcp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	files = BootFiles{BIOS: "undionly.kpxe", UEFI: "snponly.efi", Script: "http://192.0.2.1/boot.ipxe"}
	macA  = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0xa}
	macB  = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0xb}
	macR  = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0xc}
)

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestBootFor(t *testing.T) {
	pxe := func(arch ...iana.Arch) dhcpv4.Modifier {
		return func(d *dhcpv4.DHCPv4) {
			d.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))
			if len(arch) > 0 {
				d.UpdateOption(dhcpv4.OptClientArch(arch...))
			}
		}
	}
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want Boot
		err  bool
		not  bool
	}{
		{"BIOS PXE ROM", []dhcpv4.Modifier{pxe(iana.INTEL_X86PC)}, Boot{FirmwareBIOS, "undionly.kpxe", FirmwareBIOS}, false, false},
		{"PXE without option 93", []dhcpv4.Modifier{pxe()}, Boot{FirmwareBIOS, "undionly.kpxe", FirmwareBIOS}, false, false},
		{"x86-64 UEFI", []dhcpv4.Modifier{pxe(iana.EFI_X86_64)}, Boot{FirmwareUEFI, "snponly.efi", FirmwareUEFI}, false, false},
		{"EFI BC", []dhcpv4.Modifier{pxe(iana.EFI_BC)}, Boot{FirmwareUEFI, "snponly.efi", FirmwareUEFI}, false, false},
		{"ARM64 UEFI", []dhcpv4.Modifier{pxe(iana.EFI_ARM64)}, Boot{}, true, false},
		{"iPXE, raw user class", []dhcpv4.Modifier{pxe(iana.INTEL_X86PC), dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))}, Boot{FirmwareIPXE, files.Script, FirmwareBIOS}, false, false},
		{"iPXE, RFC 3004 user class", []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", true)}, Boot{FirmwareIPXE, files.Script, ""}, false, false},
		{"an ordinary client", nil, Boot{}, true, true},
	}
	for _, tt := range tests {
		got, err := bootFor(discover(t, macA, tt.mods...), files)
		if (err != nil) != tt.err || got != tt.want || errors.Is(err, ErrNotPXE) != tt.not {
			t.Errorf("%s: %+v %v, want %+v (error %v, not PXE %v)", tt.name, got, err, tt.want, tt.err, tt.not)
		}
	}
}

func newTestLeases(t *testing.T, now *time.Time, file string) *Leases {
	t.Helper()
	l, err := NewLeases(netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.12"),
		map[string]netip.Addr{macR.String(): netip.MustParseAddr("192.0.2.50")}, file, func() time.Time { return *now })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLeases(t *testing.T) {
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	file := filepath.Join(t.TempDir(), "leases.json")
	l := newTestLeases(t, &now, file)
	a, b := macA.String(), macB.String()
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }

	if got, _ := l.Offer(a, netip.Addr{}); got != ip("192.0.2.10") {
		t.Errorf("first offer %v", got)
	}
	if got, _ := l.Offer(b, ip("192.0.2.10")); got != ip("192.0.2.11") {
		t.Errorf("an address offered to another was offered again: %v", got)
	}
	if got, _ := l.Offer(macR.String(), netip.Addr{}); got != ip("192.0.2.50") {
		t.Errorf("the reservation was not offered: %v", got)
	}
	if _, err := l.Ack(a, ip("192.0.2.11"), time.Hour, ""); err == nil {
		t.Error("an address offered to another was leased")
	}
	if _, err := l.Ack(a, ip("192.0.2.10"), time.Hour, "node-c"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ack(macR.String(), ip("192.0.2.10"), time.Hour, ""); err == nil {
		t.Error("a reserved MAC took another address")
	}
	// The lease survives a restart.
	l2 := newTestLeases(t, &now, file)
	if le, ok := l2.Lease(a); !ok || le.IP != ip("192.0.2.10") || le.Host != "node-c" {
		t.Errorf("lease after a restart: %+v %v", le, ok)
	}
	if got, _ := l2.Offer(a, netip.Addr{}); got != ip("192.0.2.10") {
		t.Errorf("a client with a lease was offered %v", got)
	}
	// A declined address stays out for a while; the range runs out.
	_ = l2.Decline(b, ip("192.0.2.12"))
	if _, err := l2.Offer("52:54:00:00:00:0d", netip.Addr{}); err != nil {
		t.Errorf("offer with one free address left: %v", err)
	}
	if _, err := l2.Offer("52:54:00:00:00:0e", netip.Addr{}); !errors.Is(err, ErrExhausted) {
		t.Errorf("offer with none left: %v", err)
	}
	// Leases and offers expire; a release frees at once.
	now = now.Add(2 * time.Hour)
	if _, ok := l2.Lease(a); ok {
		t.Error("a lease outlived its time")
	}
	if _, err := l2.Ack(b, ip("192.0.2.10"), time.Hour, ""); err != nil {
		t.Errorf("an expired lease's address: %v", err)
	}
	if err := l2.Release(b, ip("192.0.2.10")); err != nil {
		t.Fatal(err)
	}
	if len(l2.All()) != 0 {
		t.Errorf("leases after release: %+v", l2.All())
	}
	if _, err := NewLeases(ip("192.0.2.20"), ip("192.0.2.10"), nil, "", nil); err == nil {
		t.Error("a range upside down")
	}
}

func newTestHandler(t *testing.T, proxy bool) *Handler {
	t.Helper()
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	var l *Leases
	if !proxy {
		l = newTestLeases(t, &now, "")
	}
	h, err := NewHandler(Config{ServerIP: netip.MustParseAddr("192.0.2.1"), Subnet: netip.MustParsePrefix("192.0.2.0/24"),
		DNS: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Boot: files, Proxy: proxy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, l)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDORA runs a PXE ROM's exchange, then iPXE's, then a renewal and a
// release, and a request the server must refuse.
func TestDORA(t *testing.T) {
	h := newTestHandler(t, false)
	var heard []string
	h.cfg.OnBoot = func(mac string, b Boot, err error) {
		heard = append(heard, fmt.Sprintf("%s %s/%s %v", mac, b.Firmware, b.Arch, err))
	}
	rom := discover(t, macA, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003010")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)))
	offer, err := h.Handle(rom)
	if err != nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.ParseIP("192.0.2.10")) {
		t.Fatalf("offer: %v %v", offer, err)
	}
	if offer.BootFileName != "snponly.efi" || !offer.ServerIPAddr.Equal(net.ParseIP("192.0.2.1")) || offer.ClassIdentifier() != "PXEClient" {
		t.Errorf("boot answer to a UEFI ROM: file %q next server %v class %q", offer.BootFileName, offer.ServerIPAddr, offer.ClassIdentifier())
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	ack, err := h.Handle(req)
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.ParseIP("192.0.2.10")) || ack.IPAddressLeaseTime(0) != time.Hour {
		t.Fatalf("ack: %v %v", ack, err)
	}
	// iPXE, chainloaded, asks again: the same address, and its script.
	ipxe := discover(t, macA, dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003010")))
	offer, _ = h.Handle(ipxe)
	if !offer.YourIPAddr.Equal(net.ParseIP("192.0.2.10")) || offer.BootFileName != files.Script {
		t.Errorf("iPXE's offer: %v file %q", offer.YourIPAddr, offer.BootFileName)
	}
	if enc := offer.GetOneOption(dhcpv4.GenericOptionCode(175)); string(enc) != "\xb0\x01\x01" {
		t.Errorf("iPXE's encapsulated options %x, want no-pxedhcp", enc)
	}
	// Renewal: ciaddr, no server identifier.
	renew, _ := dhcpv4.NewRenewFromAck(ack)
	if again, err := h.Handle(renew); err != nil || again.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renewal: %v %v", again, err)
	}
	// Another client asking for A's address is refused.
	other, _ := dhcpv4.New(dhcpv4.WithHwAddr(macB), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.0.2.10"))))
	if nak, _ := h.Handle(other); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("a request for another's address: %v", nak)
	}
	// A request for another server's offer gets no answer.
	elsewhere, _ := dhcpv4.New(dhcpv4.WithHwAddr(macB), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("192.0.2.254"))))
	if r, _ := h.Handle(elsewhere); r != nil {
		t.Errorf("answered a request for another server: %v", r)
	}
	release, _ := dhcpv4.NewReleaseFromACK(ack)
	if _, err := h.Handle(release); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.leases.Lease(macA.String()); ok {
		t.Error("a lease outlived its release")
	}
	// An ordinary client gets an address and no boot answer.
	plain, _ := h.Handle(discover(t, macB))
	if plain == nil || plain.BootFileName != "" || plain.YourIPAddr.IsUnspecified() {
		t.Errorf("an ordinary client's offer: %v", plain)
	}
	// The provisioning service heard of the network boots only: the
	// ROM's DISCOVER and iPXE's (the requests made here from the offers
	// carry no PXE class).
	a := macA.String()
	want := []string{a + " uefi/uefi <nil>", a + " ipxe/ <nil>"}
	if strings.Join(heard, "\n") != strings.Join(want, "\n") {
		t.Errorf("OnBoot heard:\n%s\nwant:\n%s", strings.Join(heard, "\n"), strings.Join(want, "\n"))
	}
}

func TestProxyDHCP(t *testing.T) {
	h := newTestHandler(t, true)
	offer, err := h.Handle(discover(t, macA, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))))
	if err != nil || offer == nil || !offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "undionly.kpxe" {
		t.Fatalf("proxy offer to a BIOS ROM: %v %v", offer, err)
	}
	if r, _ := h.Handle(discover(t, macB)); r != nil {
		t.Errorf("proxy mode answered an ordinary client: %v", r)
	}
}

// FuzzHandle feeds the handler whatever arrives on the wire: it must
// never panic, whatever the bytes.
func FuzzHandle(f *testing.F) {
	d, _ := dhcpv4.NewDiscovery(macA, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")))
	f.Add(d.ToBytes())
	r, _ := dhcpv4.New(dhcpv4.WithHwAddr(macB), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.0.2.10"))))
	f.Add(r.ToBytes())
	f.Add([]byte{1, 1, 6, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, proxy := range []bool{false, true} {
			h := newTestHandler(t, proxy)
			req, err := dhcpv4.FromBytes(b)
			if err != nil {
				continue
			}
			_, _ = h.Handle(req)
		}
	})
}

// TestLeasesJournal: the journal replays leases and releases, survives a
// torn last line (a crash in an append), refuses a damaged middle, and is
// compacted as it grows.
func TestLeasesJournal(t *testing.T) {
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	file := filepath.Join(t.TempDir(), "leases.json")
	l := newTestLeases(t, &now, file)
	a, b := macA.String(), macB.String()
	ipA, _ := l.Offer(a, netip.Addr{})
	ipB, _ := l.Offer(b, netip.Addr{})
	for i := 0; i < 200; i++ { // renewals: the journal grows, then is compacted
		if _, err := l.Ack(a, ipA, time.Hour, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Ack(b, ipB, time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(a, ipA); err != nil {
		t.Fatal(err)
	}
	l.Close()
	raw, _ := os.ReadFile(file)
	if n := strings.Count(string(raw), "\n"); n > 100 {
		t.Errorf("journal of %d lines for one lease: not compacted", n)
	}
	torn := append(raw, []byte(`{"mac":"52:54:00:00:00:0a","ip":"192.0`)...)
	if err := os.WriteFile(file, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	l2 := newTestLeases(t, &now, file)
	if _, ok := l2.Lease(a); ok {
		t.Error("a released lease came back")
	}
	if le, ok := l2.Lease(b); !ok || le.IP != ipB {
		t.Errorf("lease after reload: %+v %v", le, ok)
	}
	l2.Close()
	if err := os.WriteFile(file, []byte("garbage\n"+string(raw)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLeases(netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.12"), nil, file, nil); err == nil {
		t.Error("a journal damaged in the middle was taken")
	}
}

// TestBootClientOnFullRange: a PXE client that finds no address left gets
// no answer, and the provisioning service hears why (its sequence log
// says so); an unknown architecture is heard of too.
func TestBootClientOnFullRange(t *testing.T) {
	h := newTestHandler(t, false)
	var heard []error
	h.cfg.OnBoot = func(mac string, b Boot, err error) { heard = append(heard, err) }
	for i := 1; i <= 3; i++ {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0, 1, byte(i)}
		if offer, err := h.Handle(discover(t, mac)); err != nil || offer == nil {
			t.Fatalf("client %d: %v %v", i, offer, err)
		}
	}
	pxe := discover(t, macA, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
	if offer, err := h.Handle(pxe); offer != nil || !errors.Is(err, ErrExhausted) {
		t.Fatalf("a full range answered %v, %v", offer, err)
	}
	arm := discover(t, macB, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00011:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_ARM64)))
	_, _ = h.Handle(arm)
	if len(heard) != 2 || !errors.Is(heard[0], ErrExhausted) || heard[1] == nil || !strings.Contains(heard[1].Error(), "architecture") {
		t.Errorf("OnBoot heard %v: want the exhausted range, then the unknown architecture", heard)
	}
}
