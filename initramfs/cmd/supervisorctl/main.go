// Package supervisorctl is the supervisorctl command: it shows and steers the node's supervisor from a
// shell on the node (the serial console, the recovery shell):
//
//	supervisorctl [status]              services, states, restarts; node facts and problems
//	supervisorctl log SERVICE [LINES]   a service's last output lines
//	supervisorctl start|stop|restart SERVICE
//	supervisorctl reboot|poweroff       clean: services stopped in reverse order
//	supervisorctl -json status          the same as JSON, for scripts
package supervisorctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// Main runs supervisorctl with the arguments after the command name.
func Main(args []string) int {
	fs := flag.NewFlagSet("supervisorctl", flag.ContinueOnError)
	socket := fs.String("socket", statusapi.Socket, "the supervisor's status API socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, statusapi.NewClient(*socket), os.Stdout, *asJSON, fs.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "supervisorctl:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, c *statusapi.Client, out io.Writer, asJSON bool, args []string) error {
	cmd := "status"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "status":
		n, err := c.Node(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(out).Encode(n)
		}
		printStatus(out, n)
		return nil
	case "log":
		if len(args) < 1 {
			return fmt.Errorf("usage: log SERVICE [LINES]")
		}
		lines := 50
		if len(args) > 1 {
			v, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("lines %q: %w", args[1], err)
			}
			lines = v
		}
		ll, err := c.ServiceLog(ctx, args[0], lines)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(out).Encode(ll)
		}
		for _, l := range ll {
			fmt.Fprintf(out, "%s %s\n", l.Time.Format("15:04:05.000"), l.Text)
		}
		return nil
	case statusapi.ActionStart, statusapi.ActionStop, statusapi.ActionRestart:
		if len(args) != 1 {
			return fmt.Errorf("usage: %s SERVICE", cmd)
		}
		return c.Control(ctx, args[0], cmd)
	case statusapi.PowerReboot, statusapi.PowerPoweroff:
		return c.Power(ctx, cmd)
	}
	return fmt.Errorf("unknown command %q (want status, log, start, stop, restart, reboot or poweroff)", cmd)
}

func printStatus(out io.Writer, n statusapi.Node) {
	fmt.Fprintf(out, "node %s  board %s  version %s  slot %s  up %s\n", n.Name, n.Board, n.Version, orDash(n.Slot),
		(time.Duration(n.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(out, "data partition mounted: %v  watchdog: %s\n", n.DataMounted, n.Watchdog)
	for _, i := range n.Interfaces {
		fmt.Fprintf(out, "  %-12s %-8s %-6s %s %s\n", i.Role, i.Name, i.Mode, i.MAC, strings.Join(i.Addresses, " "))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tSTATE\tPID\tRESTARTS\tSINCE\tLAST EXIT / ERROR")
	for _, s := range n.Services {
		last := s.LastExit
		if s.LastError != "" {
			last = s.LastError
		}
		pid := "-"
		if s.PID > 0 {
			pid = strconv.Itoa(s.PID)
		}
		name := s.Name
		if s.Critical {
			name += "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", name, s.State, pid, s.Restarts, s.Since.Format("15:04:05"), last)
	}
	tw.Flush()
	for _, p := range n.Problems {
		fmt.Fprintf(out, "problem: %s\n", p)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
