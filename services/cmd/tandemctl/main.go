// Package tandemctl is the tandemctl command: Tandem's REST API from a
// shell, for people and scripts. Every action of the web console is a
// command; -o json prints the API's own JSON, tables otherwise; the exit
// code says what went wrong (see client.go).
//
//	tandemctl login -s https://192.0.2.100 -u admin
//	tandemctl vm list
//	tandemctl vm ft web1 on
//	tandemctl -o json vm show web1 | jq .ft_state
package tandemctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// config is what login saves: where the cluster is, the CA that proves
// it, and the API token this CLI acts with.
type config struct {
	Server string `json:"server"`
	CA     string `json:"ca_pem"`
	Token  string `json:"token"`
	User   string `json:"user"`
}

// env is one run of the command: its streams, options and client.
type env struct {
	ctx        context.Context
	in         io.Reader
	out, err   io.Writer
	json       bool
	configPath string
	cfg        config
	c          *client
	server     string
	insecure   bool
	getenv     func(string) string
	lines      *bufio.Reader // of in, made on first use
}

// Main runs tandemctl with the arguments after its name and returns the
// exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Stdin, os.Stdout, os.Stderr, os.Getenv, args)
}

func run(ctx context.Context, in io.Reader, out, errOut io.Writer, getenv func(string) string, args []string) int {
	e := &env{ctx: ctx, in: in, out: out, err: errOut, getenv: getenv}
	fs := flag.NewFlagSet("tandemctl", flag.ContinueOnError)
	fs.SetOutput(errOut)
	output := fs.String("o", "table", "output: table or json")
	fs.StringVar(&e.server, "s", "", "the cluster's address, https://HOST[:PORT] (default: the one logged in to; $TANDEM_SERVER)")
	fs.StringVar(&e.configPath, "config", "", "where login keeps the server, CA and token (default ~/.config/tandem/tandemctl.json; $TANDEM_CONFIG)")
	fs.BoolVar(&e.insecure, "insecure", false, "do not check the server's certificate (first contact only)")
	fs.Usage = func() { usage(errOut, fs) }
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	switch *output {
	case "json":
		e.json = true
	case "table":
	default:
		fmt.Fprintf(errOut, "tandemctl: -o %s: want table or json\n", *output)
		return exitUsage
	}
	if fs.NArg() == 0 {
		usage(errOut, fs)
		return exitUsage
	}
	err := e.dispatch(fs.Args())
	if err != nil {
		fmt.Fprintf(errOut, "tandemctl: %v\n", err)
	}
	return exitCode(err)
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `tandemctl: Tandem's API from a shell.

usage: tandemctl [-s https://HOST] [-o table|json] COMMAND ...

commands:
`)
	for _, c := range commandTable() {
		fmt.Fprintf(w, "  %-44s %s\n", c.name+" "+c.args, c.help)
	}
	fmt.Fprint(w, `
options:
`)
	fs.PrintDefaults()
	fmt.Fprint(w, `
exit codes: 0 done, 1 failed, 2 wrong command line, 3 not logged in or not allowed,
4 not found, 5 conflict (exists, changed meanwhile, refused by the cluster's state),
6 the cluster did not answer or cannot now.
`)
}

// load reads the saved configuration and makes the client: the token
// from $TANDEM_TOKEN or the saved one.
func (e *env) load() error {
	if err := e.readConfig(); err != nil {
		return err
	}
	server := e.serverAddr()
	if server == "" {
		return errNotLoggedIn
	}
	c, err := newClient(server, e.cfg.CA, e.insecure)
	if err != nil {
		return err
	}
	c.token = e.getenv("TANDEM_TOKEN")
	if c.token == "" {
		c.token = e.cfg.Token
	}
	e.c = c
	return nil
}

// serverAddr is the cluster to talk to: -s, else $TANDEM_SERVER, else
// the one logged in to.
func (e *env) serverAddr() string {
	for _, s := range []string{e.server, e.getenv("TANDEM_SERVER"), e.cfg.Server} {
		if s != "" {
			return s
		}
	}
	return ""
}

// readConfig reads what login saved, if anything.
func (e *env) readConfig() error {
	if e.configPath == "" {
		e.configPath = e.getenv("TANDEM_CONFIG")
	}
	if e.configPath == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return fmt.Errorf("no place for the configuration (set TANDEM_CONFIG): %w", err)
		}
		e.configPath = filepath.Join(dir, "tandem", "tandemctl.json")
	}
	b, err := os.ReadFile(e.configPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := json.Unmarshal(b, &e.cfg); err != nil {
			return fmt.Errorf("%s: %w", e.configPath, err)
		}
	}
	return nil
}

func (e *env) save() error {
	if err := os.MkdirAll(filepath.Dir(e.configPath), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(e.cfg, "", "  ")
	tmp := e.configPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, e.configPath)
}

// readLine reads one line of the input (a password, a confirmation).
func (e *env) readLine(prompt string) (string, error) {
	fmt.Fprint(e.err, prompt)
	if e.lines == nil {
		e.lines = bufio.NewReader(e.in)
	}
	line, err := e.lines.ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("%sno input", prompt)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// dispatch runs the command the arguments name: the longest name in the
// table that they start with.
func (e *env) dispatch(args []string) error {
	var best *command
	for _, c := range commandTable() {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name && (best == nil || len(words) > len(strings.Fields(best.name))) {
			c := c
			best = &c
		}
	}
	if best == nil {
		return usageError(fmt.Sprintf("unknown command %q (tandemctl -h lists them)", strings.Join(args, " ")))
	}
	rest := args[len(strings.Fields(best.name)):]
	if best.name != "login" {
		if err := e.load(); err != nil {
			return err
		}
		if e.c.token == "" && best.name != "logout" {
			return errNotLoggedIn
		}
	}
	return best.run(e, rest)
}
