// Package installercmd is the tandem-installer command: the installer a
// machine runs when it booted the image over the network in installer
// mode (tandem.mode=install), started by tandem-init.
package installercmd

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/disklayout"
	"github.com/tandemhci/tandem/initramfs/installer"
	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// Main runs the installer with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-installer", flag.ContinueOnError)
	prov := fs.String("provision", "", "host:port of the provisioning node's front door")
	ca := fs.String("ca", "", "the cluster CA's SHA-256 fingerprint")
	mac := fs.String("mac", "", "the MAC of the NIC the machine booted from")
	boardFile := fs.String("board", board.ImagePath, "the board file")
	bootDir := fs.String("boot-dir", disklayout.BootDir, "GRUB for both firmware types")
	work := fs.String("work", "/tmp/installer", "where downloads go (RAM)")
	versionFile := fs.String("version-file", "/etc/tandem/version", "the image's version")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b, err := board.Load(*boardFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	version, _ := os.ReadFile(*versionFile)
	sup := statusapi.NewClient(statusapi.Socket)
	in, err := installer.New(installer.Config{
		Provision: *prov, CAFingerprint: *ca, MAC: *mac, Board: b, BootDir: *bootDir, WorkDir: *work,
		Version: strings.TrimSpace(string(version)), Mke2fs: "/usr/sbin/mke2fs",
		// Through the supervisor: the services stop and the disks sync first.
		Reboot: func() error { return sup.Power(context.Background(), statusapi.PowerReboot) },
		Logger: log,
	})
	if err == nil {
		err = in.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
