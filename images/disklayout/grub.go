package disklayout

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tandemhci/tandem/board"
)

// ESP paths. GRUB's prefix is /EFI/tandem on the ESP: both loaders (the
// EFI one and BIOS's core image) read grub.cfg and grubenv from there.
const (
	ESPLoader  = "/EFI/BOOT/BOOTX64.EFI" // the removable-media path: no NVRAM entry needed
	ESPPrefix  = "/EFI/tandem"
	ESPConfig  = ESPPrefix + "/grub.cfg"
	ESPGrubenv = ESPPrefix + "/grubenv"
)

// Where the image carries the boot loaders, so that the installer, running
// the same image, writes what the image builder wrote.
const (
	BootDir      = "/usr/lib/tandem/boot"
	BootEFI      = BootDir + "/BOOTX64.EFI" // GRUB, x86_64-efi, standalone
	BootBIOSCore = BootDir + "/core.img"    // GRUB, i386-pc, for the BIOS boot partition
	BootBIOSMBR  = BootDir + "/boot.img"    // GRUB's MBR boot code
)

// GrubModules are built into a loader for the platform ("x86_64-efi" or
// "i386-pc"), so that it needs nothing else from the disk.
func GrubModules(platform string) []string {
	common := []string{"part_gpt", "fat", "normal", "linux", "echo", "test", "configfile", "loadenv",
		"regexp", "search", "serial", "terminal", "sleep", "reboot", "halt", "cat", "ls"}
	if platform == "i386-pc" {
		return append(common, "biosdisk")
	}
	return append(common, "efi_gop", "all_video")
}

// GrubPrefix is where a loader for the platform looks for its config.
// BIOS's core image names the ESP by number on the disk it was loaded
// from; the EFI loader finds it as the partition it was loaded from.
func GrubPrefix(platform string) string {
	if platform == "i386-pc" {
		n, _ := Number(NameESP)
		return fmt.Sprintf("(,gpt%d)%s", n, ESPPrefix)
	}
	return ESPPrefix
}

// GrubConfig boots the slot named by tandem_slot in grubenv (A unless
// told otherwise), falling back to the other slot if that one does not
// load. The slots are found next to the ESP on the same disk by partition
// number, so a second Tandem disk in the machine cannot be picked by
// mistake.
func GrubConfig(b *board.Board) string {
	slotA, _ := Number(NameSlotA)
	slotB, _ := Number(NameSlotB)
	entry := func(slot string, part int) string {
		return fmt.Sprintf(`menuentry "Tandem (slot %[1]s)" {
	linux ($tandem_disk,gpt%[2]d)%[3]s console=tty0 %[4]s tandem.slot=%[5]s panic=10
	initrd ($tandem_disk,gpt%[2]d)%[6]s
}
`, strings.ToUpper(slot), part, SlotKernel, b.Console.KernelArg(), slot, SlotInitramfs)
	}
	unit := strings.TrimPrefix(b.Console.Device, "ttyS")
	return fmt.Sprintf(`# Written by Tandem (images/disklayout). Slot choice lives in grubenv (tandem_slot=a|b).
serial --unit=%s --speed=%d
terminal_input serial console
terminal_output serial console
set timeout=1
load_env --file %s
regexp --set=1:tandem_disk '^([^,]+)' "$root"
if [ "$tandem_slot" = "b" ]; then
	set default=1
	set fallback=0
else
	set default=0
	set fallback=1
fi
`, unit, b.Console.Baud, ESPGrubenv) + entry("a", slotA) + entry("b", slotB)
}

// Grubenv is GRUB's environment block: exactly 1024 bytes, padded with #.
func Grubenv(vars map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# GRUB Environment Block\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, vars[k])
	}
	if b.Len() > 1024 {
		return nil, fmt.Errorf("grubenv: %d bytes, over 1024", b.Len())
	}
	return []byte(b.String() + strings.Repeat("#", 1024-b.Len())), nil
}
