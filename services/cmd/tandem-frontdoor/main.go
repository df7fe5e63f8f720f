// Package frontdoorcmd is the tandem-frontdoor command: it serves the
// node's one TCP port.
package frontdoorcmd

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// Main runs the front door with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("tandem-frontdoor", flag.ContinueOnError)
	listen := fs.String("listen", ":443", "address to listen on")
	state := fs.String("state", "/data/frontdoor", "directory for the TLS key and certificate")
	socket := fs.String("supervisor", statusapi.Socket, "the supervisor's status API socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	fd, err := frontdoor.New(frontdoor.Config{
		Listen: *listen, StateDir: *state, Status: statusapi.NewClient(*socket), Logger: log,
	})
	if err == nil {
		err = fd.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
