// Package provisioncmd is the tandem-provision command: the provisioning
// network's server (DHCP, TFTP, router advertisement and the HTTP boot
// files), active on the node the provisioning plan names.
package provisioncmd

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tandemhci/tandem/images/disklayout"
	"github.com/tandemhci/tandem/initramfs/datadisk"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/pki"
	"github.com/tandemhci/tandem/services/provision"
)

// Main runs the provisioning server with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-provision", flag.ContinueOnError)
	iface := fs.String("interface", "prov0", "the provisioning port")
	data := fs.String("data", "/data/provision", "leases and the installer's files")
	socket := fs.String("socket", "/run/tandem/provision.sock", "where the front door passes /boot/ on")
	clusterSocket := fs.String("cluster", "/run/tandem/cluster.sock", "the cluster agent's socket")
	tlsDir := fs.String("member-tls", "/data/cluster/tls", "the cluster CA, written by the cluster agent")
	loaders := fs.String("loaders", "/usr/lib/ipxe", "directory of the iPXE loaders ("+provision.LoaderBIOS+", "+provision.LoaderUEFI+")")
	installer := fs.String("installer", "", "directory with the installer's vmlinuz, initramfs.cpio.zst and version (default: the running system slot on the system disk)")
	slot := fs.String("slot", "a", "the running system slot (a or b), whose kernel and initramfs the installer is")
	port := fs.Int("port", 443, "the front door's port")
	console := fs.String("console", "console=tty0 console=ttyS0,115200", "kernel arguments for the installer's consoles")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	fill := func(dir string) error { return copyDir(*installer, dir) }
	if *installer == "" {
		part := disklayout.NameSlotA
		if *slot == "b" {
			part = disklayout.NameSlotB
		}
		fill = func(dir string) error {
			_, disk, err := datadisk.FindPartition("/sys/class/block", part)
			if err != nil {
				return fmt.Errorf("the running system slot: %w", err)
			}
			return disklayout.ExtractSlot("/dev/"+disk, part, dir)
		}
	}
	svc, err := provision.New(provision.Config{
		Cluster: cluster.NewLocalClient(*clusterSocket), Interface: *iface, DataDir: *data, Socket: *socket,
		Loaders: os.DirFS(*loaders), Installer: fill, CACert: pki.Files{Dir: *tlsDir}.CACert(),
		Port: *port, Console: strings.Fields(*console), Logger: log,
	})
	if err == nil {
		err = svc.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// copyDir copies the installer's files from a directory (a test's or a
// PXE-booted node's).
func copyDir(from, to string) error {
	for _, name := range []string{provision.FileKernel, provision.FileInitramfs, "version"} {
		b, err := os.ReadFile(from + "/" + name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to+"/"+name, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
