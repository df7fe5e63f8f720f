// Command tandem is the image's one Go binary of Tandem's own: every
// Tandem command in the image (tandem-init, tandem-frontdoor,
// supervisorctl, …) is a link to it, and it runs the command its name
// says, or the one its first argument names ("tandem supervisorctl").
//
// One binary keeps the initramfs small. It is built as a normal module
// build rather than in u-root's busybox, which compiles in GOPATH mode and
// so with Go 1.20's GODEBUG defaults (old ServeMux patterns, TLS 1.0
// server, asynchronous timer channels).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/initramfs/cmd/supervisorctl"
	tandeminit "github.com/tandemhci/tandem/initramfs/cmd/tandem-init"
	installercmd "github.com/tandemhci/tandem/initramfs/cmd/tandem-installer"
	clustercmd "github.com/tandemhci/tandem/services/cmd/tandem-cluster"
	frontdoorcmd "github.com/tandemhci/tandem/services/cmd/tandem-frontdoor"
	provisioncmd "github.com/tandemhci/tandem/services/cmd/tandem-provision"
	storagecmd "github.com/tandemhci/tandem/services/cmd/tandem-storage"
	vmmcmd "github.com/tandemhci/tandem/services/cmd/tandem-vmm"
	witnesscmd "github.com/tandemhci/tandem/services/cmd/tandem-witness"
	"github.com/tandemhci/tandem/services/cmd/tandemctl"
)

// commands maps each command name to its entry point.
func commands() map[string]func(args []string) int {
	return map[string]func(args []string) int{
		"tandem-init":      tandeminit.Main,
		"tandem-frontdoor": frontdoorcmd.Main,
		"tandem-cluster":   clustercmd.Main,
		"tandem-witness":   witnesscmd.Main,
		"tandem-storage":   storagecmd.Main,
		"tandem-vmm":       vmmcmd.Main,
		"tandem-provision": provisioncmd.Main,
		"tandem-installer": installercmd.Main,
		"supervisorctl":    supervisorctl.Main,
		"tandemctl":        tandemctl.Main,
	}
}

// aliases are other names a command is started by: u-root's init starts
// /bin/uinit, a link to tandem-init.
func aliases() map[string]string {
	return map[string]string{"uinit": "tandem-init"}
}

func main() {
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	slices.Sort(names)
	// The image builder asks for the names to make a link for each.
	if len(os.Args) == 2 && os.Args[1] == "-commands" {
		fmt.Println(strings.Join(names, "\n"))
		return
	}
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if real, ok := aliases()[name]; ok {
		name = real
	}
	if _, ok := cmds[name]; !ok && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	run, ok := cmds[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "tandem: unknown command %q; commands: %s\n", name, strings.Join(names, ", "))
		os.Exit(2)
	}
	os.Exit(run(args))
}
