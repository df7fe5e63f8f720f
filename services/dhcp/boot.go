package dhcp

import (
	"fmt"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// BootFiles are what network boot hands out. A PXE ROM gets an iPXE
// binary by TFTP (the one for its firmware); iPXE, which announces
// itself in the user class, gets the URL of its script.
type BootFiles struct {
	BIOS   string // TFTP file for legacy BIOS PXE, e.g. undionly.kpxe
	UEFI   string // TFTP file for x86-64 UEFI PXE, e.g. snponly.efi
	Script string // URL of the iPXE script, e.g. http://192.0.2.1/boot.ipxe
}

// Firmware kinds a boot answer is for.
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
	FirmwareIPXE = "ipxe"
)

// Boot is the boot part of an answer.
type Boot struct {
	Firmware string // bios, uefi or ipxe: who gets the answer
	File     string // the TFTP file name or the script's URL
	// Arch is the machine's firmware, bios or uefi, from its client
	// architecture (iPXE sends one too); empty if it sent none.
	Arch string
}

// ErrNotPXE is a client that did not ask to boot from the network.
var ErrNotPXE = fmt.Errorf("not a network boot client")

// bootFor decides what a client boots, from its user class (iPXE), its
// vendor class (PXEClient) and its architecture (option 93). An
// architecture other than BIOS and x86-64 UEFI is refused by name.
func bootFor(req *dhcpv4.DHCPv4, files BootFiles) (Boot, error) {
	if isIPXE(req) {
		if files.Script == "" {
			return Boot{}, fmt.Errorf("an iPXE client, but no boot script is configured")
		}
		b := Boot{Firmware: FirmwareIPXE, File: files.Script}
		for _, a := range req.ClientArch() {
			switch a {
			case iana.INTEL_X86PC:
				b.Arch = FirmwareBIOS
			case iana.EFI_X86_64, iana.EFI_BC:
				b.Arch = FirmwareUEFI
			}
		}
		return b, nil
	}
	if !strings.HasPrefix(req.ClassIdentifier(), "PXEClient") {
		return Boot{}, ErrNotPXE
	}
	archs := req.ClientArch()
	if len(archs) == 0 {
		archs = []iana.Arch{iana.INTEL_X86PC} // PXE 2.1 clients without option 93 are BIOS
	}
	for _, a := range archs {
		switch a {
		case iana.INTEL_X86PC:
			return Boot{Firmware: FirmwareBIOS, File: files.BIOS, Arch: FirmwareBIOS}, nil
		case iana.EFI_X86_64, iana.EFI_BC:
			return Boot{Firmware: FirmwareUEFI, File: files.UEFI, Arch: FirmwareUEFI}, nil
		}
	}
	return Boot{}, fmt.Errorf("client architecture %v: Tandem boots x86 BIOS (0) and x86-64 UEFI (7, 9) only", archs)
}

// isIPXE reports whether the client is iPXE: its user class (option 77)
// says "iPXE", raw (as iPXE sends it) or in RFC 3004's form.
func isIPXE(req *dhcpv4.DHCPv4) bool {
	raw := req.GetOneOption(dhcpv4.OptionUserClassInformation)
	if string(raw) == "iPXE" {
		return true
	}
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			return true
		}
	}
	return false
}
