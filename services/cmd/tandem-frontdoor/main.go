// Command tandem-frontdoor serves the node's one TCP port.
package main

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

func main() {
	listen := flag.String("listen", ":443", "address to listen on")
	state := flag.String("state", "/data/frontdoor", "directory for the TLS key and certificate")
	socket := flag.String("supervisor", statusapi.Socket, "the supervisor's status API socket")
	flag.Parse()

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
		os.Exit(1)
	}
}
