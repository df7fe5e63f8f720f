package tandemctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
)

// cli runs the real tandemctl (the tandem binary's) in the client
// namespace, as a shell user would.
type cli struct {
	t      *testing.T
	c      *clustertest.Cluster
	bin    string
	config string
	env    []string
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout: " + r.stdout + "\nstderr: " + r.stderr
}

func (x *cli) run(stdin string, args ...string) result {
	x.t.Helper()
	cmd := x.c.ClientNS.Command(append([]string{x.bin, "tandemctl", "-config", x.config}, args...)...)
	cmd.Env = append([]string{"HOME=" + filepath.Dir(x.config)}, x.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		x.t.Fatalf("tandemctl %v: %v", args, err)
	}
	return result{code, out.String(), errOut.String()}
}

// want runs the command and checks its exit code.
func (x *cli) want(code int, stdin string, args ...string) result {
	x.t.Helper()
	r := x.run(stdin, args...)
	if r.code != code {
		x.t.Fatalf("tandemctl %s: want exit %d, got %v", strings.Join(args, " "), code, r)
	}
	return r
}

// TestCLI drives tandemctl against a real cluster: login with the
// cluster's CA, the commands of every page of the console, JSON and
// tables, and the exit codes scripts rely on.
func TestCLI(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Storage: true, VMs: true, BootDir: t.TempDir(), APITimeout: 20 * time.Second})
	c.Form()
	c.WaitHealthy(30 * time.Second)
	x := &cli{t: t, c: c, bin: clustertest.Binary(t), config: filepath.Join(t.TempDir(), "tandemctl.json")}
	server := "https://" + clustertest.ClusterIP

	// Not logged in: exit 3; a wrong command line: exit 2.
	x.want(exitAuth, "", "vm", "list")
	x.want(exitUsage, "", "vm", "fly")
	x.want(exitUsage, "", "-o", "yaml", "vm", "list")

	// Login: a CA that is not the one asked for is refused; the right
	// one, confirmed, is saved with a token.
	r := x.want(exitError, "", "-s", server, "login", "-u", c.Admin, "-ca-fingerprint", strings.Repeat("ab", 32))
	if !strings.Contains(r.stderr, "refusing it") {
		t.Errorf("a wrong fingerprint: %v", r)
	}
	x.want(exitError, "n\n", "-s", server, "login", "-u", c.Admin)
	x.want(exitAuth, "y\nwrong-password\n", "-s", server, "login", "-u", c.Admin)
	r = x.want(exitOK, "y\n"+c.Password+"\n", "-s", server, "login", "-u", c.Admin)
	if !strings.Contains(r.stderr, "logged in to "+server+" as admin (admin)") {
		t.Errorf("login: %v", r)
	}
	if r := x.want(exitOK, "", "whoami"); !strings.Contains(r.stdout, "admin") || !strings.Contains(r.stdout, "via token") {
		t.Errorf("whoami: %v", r)
	}

	// The cluster.
	if r := x.want(exitOK, "", "status"); !strings.Contains(r.stdout, "cluster healthy") || !strings.Contains(r.stdout, "witness") {
		t.Errorf("status: %v", r)
	}
	if r := x.want(exitOK, "", "node", "list"); !strings.Contains(r.stdout, "node-a") || !strings.Contains(r.stdout, "node-b") {
		t.Errorf("node list: %v", r)
	}
	x.want(exitNotFound, "", "node", "maintenance", "node-z", "on")
	x.want(exitUsage, "", "node", "maintenance", "node-a", "maybe")

	// VMs and volumes.
	x.want(exitOK, "", "vm", "create", "web1", "-cpus", "2", "-memory", "256", "-disk-gib", "1", "-description", "<b>shop</b>")
	x.want(exitConflict, "", "vm", "create", "web1", "-kernel", "vmlinux")
	x.want(exitNotFound, "", "vm", "show", "nope")
	x.want(exitOK, "", "vm", "ha", "web1", "on")
	x.want(exitOK, "", "vm", "edit", "web1", "-memory", "512")
	var vm directory.VM
	r = x.want(exitOK, "", "-o", "json", "vm", "show", "web1")
	if err := json.Unmarshal([]byte(r.stdout), &vm); err != nil || !vm.HA || vm.MemoryMiB != 512 || vm.CPUs != 2 || vm.Description != "<b>shop</b>" || len(vm.Disks) != 1 {
		t.Errorf("vm show -o json: %v %+v", err, vm)
	}
	if r := x.want(exitOK, "", "vm", "list"); !strings.Contains(r.stdout, "web1") || !strings.Contains(r.stdout, "512 MiB") {
		t.Errorf("vm list: %v", r)
	}
	if r := x.want(exitOK, "", "volume", "list"); !strings.Contains(r.stdout, "web1-disk") {
		t.Errorf("volume list: %v", r)
	}
	x.want(exitConflict, "", "volume", "delete", "web1-disk") // web1 uses it

	// Users and tokens.
	x.env = []string{"TANDEM_NEW_PASSWORD=operator-pass-1"}
	x.want(exitOK, "", "user", "create", "olga", "-role", "operator")
	x.env = nil
	x.want(exitOK, "", "user", "edit", "olga", "-role", "viewer")
	if r := x.want(exitOK, "", "user", "list"); !strings.Contains(r.stdout, "olga") || !strings.Contains(r.stdout, "viewer") {
		t.Errorf("user list: %v", r)
	}
	x.want(exitAuth, "wrong\n", "token", "create", "ci")
	r = x.want(exitOK, c.Password+"\n", "-o", "json", "token", "create", "ci", "-role", "viewer", "-days", "7")
	var tok struct{ ID, Secret string }
	if err := json.Unmarshal([]byte(r.stdout), &tok); err != nil || !strings.HasPrefix(tok.Secret, "tdm_") {
		t.Fatalf("token create: %v %v", err, r)
	}
	// A viewer's token reads, and is refused a change (exit 3).
	x.env = []string{"TANDEM_TOKEN=" + tok.Secret}
	x.want(exitOK, "", "vm", "list")
	x.want(exitAuth, "", "vm", "stop", "web1")
	x.env = nil
	if r := x.want(exitOK, "", "token", "list"); !strings.Contains(r.stdout, tok.ID) || strings.Contains(r.stdout, tok.Secret) {
		t.Errorf("token list: %v", r)
	}
	x.want(exitOK, "", "token", "revoke", tok.ID)
	x.env = []string{"TANDEM_TOKEN=" + tok.Secret}
	x.want(exitAuth, "", "vm", "list")
	x.env = nil

	// Settings, audit, events, the raw API.
	if r := x.want(exitOK, "", "settings", "set", "ntp.servers=ntp1.example,ntp2.example", "time.zone=Asia/Shanghai"); !strings.Contains(r.stdout, "Asia/Shanghai") {
		t.Errorf("settings set: %v", r)
	}
	if r := x.want(exitError, "", "settings", "set", "time.zone=Mars/Olympus"); !strings.Contains(r.stderr, "set.time.zone") {
		t.Errorf("a bad setting: %v", r)
	}
	x.want(exitOK, "", "settings", "unset", "ntp.servers")
	if r := x.want(exitOK, "", "audit", "-limit", "1000"); !strings.Contains(r.stdout, "user.create") || !strings.Contains(r.stdout, "olga") {
		t.Errorf("audit: %v", r)
	}
	if r := x.want(exitOK, "", "events", "-n", "1"); !strings.Contains(r.stdout, `"kind":"hello"`) {
		t.Errorf("events: %v", r)
	}
	if r := x.want(exitOK, "", "api", "GET", "/api/v1/openapi.json"); !strings.Contains(r.stdout, `"openapi": "3.1.0"`) {
		t.Errorf("api: %.300v", r)
	}
	x.want(exitUsage, "", "api", "POST", "/api/v1/vms", "{not json")

	x.want(exitOK, "", "vm", "delete", "web1", "-disks")
	x.want(exitNotFound, "", "vm", "show", "web1")

	// Logout revokes the token: it no longer works, even given by hand.
	var cfg config
	data, err := os.ReadFile(x.config)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(x.config); fi.Mode().Perm() != 0o600 {
		t.Errorf("the configuration (a token) is readable by others: %v", fi.Mode())
	}
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.Token == "" {
		t.Fatalf("saved configuration: %v %s", err, data)
	}
	x.want(exitOK, "", "logout")
	x.want(exitAuth, "", "vm", "list")
	x.env = []string{"TANDEM_TOKEN=" + cfg.Token}
	x.want(exitAuth, "", "vm", "list")
}
