package tandeminit

import (
	"strconv"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/initramfs/settings"
	"github.com/tandemhci/tandem/initramfs/supervisor"
)

// bin is where the image links Tandem's commands to its one binary.
const bin = "/usr/bin/"

// serviceTable is the node's one declared table of services.
func serviceTable(s *settings.Settings, b *board.Board) []supervisor.Service {
	table := []supervisor.Service{
		{
			// The only port the node exposes: web console, API, and later
			// raft, replication and join.
			Name:     "frontdoor",
			Path:     bin + "tandem-frontdoor",
			Args:     []string{"-listen", ":" + strconv.Itoa(s.Int(settings.KeyFrontdoorPort)), "-state", dataDir + "/frontdoor"},
			Critical: true,
		},
	}
	if s.On(settings.KeyConsoleShell) && b.Console.Device != "" {
		table = append(table, supervisor.Service{
			// A shell on the serial console for whoever stands at the box;
			// supervisorctl shows and steers the services from it.
			Name: "console-shell",
			Path: "/bin/sh",
			TTY:  "/dev/" + b.Console.Device,
		})
	}
	return table
}
