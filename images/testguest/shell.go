package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

// serveShell offers a tiny shell on the serial port, so that the web
// console's serial terminal has a prompt to show and commands to answer.
// The kernel's line discipline echoes what is typed and hands over whole
// lines.
func serveShell(tty string, c *counter) {
	f, err := os.OpenFile(tty, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testguest: shell: %v\n", err)
		return
	}
	defer f.Close()
	start := time.Now()
	prompt := func() { fmt.Fprint(f, "testguest# ") }
	fmt.Fprint(f, "\nTandem test guest. Type help.\n")
	prompt()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(lines.Text()), " ")
		switch cmd {
		case "":
		case "help":
			fmt.Fprint(f, "help, count, uptime, echo TEXT\n")
		case "count":
			fmt.Fprintf(f, "count %d\n", c.value())
		case "uptime":
			fmt.Fprintf(f, "up %s\n", time.Since(start).Round(time.Second))
		case "echo":
			fmt.Fprintf(f, "%s\n", arg)
		default:
			fmt.Fprintf(f, "%s: unknown command (try help)\n", cmd)
		}
		prompt()
	}
}
