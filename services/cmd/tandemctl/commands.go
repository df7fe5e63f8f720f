package tandemctl

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
)

// command is one tandemctl command.
type command struct {
	name, args, help string
	run              func(e *env, args []string) error
}

func commandTable() []command {
	return []command{
		{"login", "[-u USER] [-ca-fingerprint HEX]", "log in (saves the server, its CA and an API token)", (*env).login},
		{"logout", "", "revoke this CLI's token and forget it", (*env).logout},
		{"whoami", "", "the user and role this CLI acts as", (*env).whoami},
		{"status", "", "the cluster's health: members, leader, quorum", (*env).status},
		{"node list", "", "the nodes: inventory, maintenance, services", (*env).nodeList},
		{"node maintenance", "NODE on|off [-return]", "put a node into maintenance (its VMs move away) or take it out", (*env).nodeMaintenance},
		{"vm list", "", "the VMs: state, node, HA, FT", (*env).vmList},
		{"vm show", "VM", "a VM's definition and how it runs", (*env).vmShow},
		{"vm create", "VM [-cpus N] [-memory MiB] [-disk-gib N] [-start] ...", "create a VM (and its disk volume)", (*env).vmCreate},
		{"vm edit", "VM [-cpus N] [-memory MiB] [-description TEXT]", "change a VM", (*env).vmEdit},
		{"vm delete", "VM [-disks]", "delete a VM (and, with -disks, its volumes)", (*env).vmDelete},
		{"vm start", "VM [-node NODE]", "start a VM", (*env).vmStart},
		{"vm stop", "VM [-force]", "stop a VM (ACPI shutdown; -force: power off)", (*env).vmStop},
		{"vm reboot", "VM", "reboot a VM (applies pending changes)", vmAction("reboot")},
		{"vm reset", "VM", "hard-reset a VM", vmAction("reset")},
		{"vm migrate", "VM [NODE]", "live-migrate a VM (default: to the other node)", (*env).vmMigrate},
		{"vm ft", "VM on|off", "switch fault tolerance (COLO) on or off", vmToggle("ft")},
		{"vm ha", "VM on|off", "switch HA restart on or off", vmToggle("ha")},
		{"vm history", "VM", "a VM's events", (*env).vmHistory},
		{"vm console", "VM", "the VM's serial console (leave with Ctrl-])", (*env).vmConsole},
		{"volume list", "", "the volumes: size, primary, copies, sync", (*env).volumeList},
		{"volume show", "VOLUME", "a volume", getOne("/api/v1/volumes/")},
		{"volume create", "VOLUME -size-gib N [-node NODE] [-clone-from VOLUME]", "create a volume", (*env).volumeCreate},
		{"volume delete", "VOLUME", "delete a volume no VM uses", deleteOne("/api/v1/volumes/")},
		{"volume verify", "VOLUME", "compare both copies block by block", (*env).volumeVerify},
		{"user list", "", "users and roles (admin)", (*env).userList},
		{"user create", "USER -role admin|operator|viewer", "create a user; the password is read from the input or $TANDEM_NEW_PASSWORD", (*env).userCreate},
		{"user edit", "USER [-role ROLE] [-disable|-enable] [-password]", "change a user", (*env).userEdit},
		{"user delete", "USER", "delete a user", deleteOne("/api/v1/users/")},
		{"passwd", "", "change your own password", (*env).passwd},
		{"token list", "", "your API tokens (an admin: everyone's)", (*env).tokenList},
		{"token create", "NAME [-role ROLE] [-days N]", "create an API token with your password (the secret is printed once)", (*env).tokenCreate},
		{"token revoke", "ID", "revoke an API token", deleteOne("/api/v1/tokens/")},
		{"audit", "[-since INDEX] [-limit N]", "the audit log (admin)", (*env).audit},
		{"activity", "[-limit N]", "recent changes, newest first", (*env).activity},
		{"settings", "", "the cluster's settings (admin)", (*env).settings},
		{"settings set", "KEY=VALUE ...", "set settings (cluster.ip, ntp.servers, dns.servers, time.zone, cluster.name)", (*env).settingsSet},
		{"settings unset", "KEY ...", "unset settings", (*env).settingsUnset},
		{"events", "[-n N]", "follow the cluster's changes and samples (JSON lines)", (*env).events},
		{"api", "METHOD PATH [JSON]", "call any endpoint (see /api/v1/openapi.json)", (*env).api},
	}
}

// flags parses a command's options; positional arguments may come
// before or after them.
func (e *env) flags(name string, args []string, define func(*flag.FlagSet), positional int) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.err)
	if define != nil {
		define(fs)
	}
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, usageError(fmt.Sprintf("%s: %v", name, err))
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	if positional >= 0 && len(pos) != positional {
		return nil, usageError(fmt.Sprintf("%s: want %d argument(s), got %d", name, positional, len(pos)))
	}
	return pos, nil
}

// show prints v as JSON with -o json, else with table.
func (e *env) show(v any, table func(w *tabwriter.Writer)) error {
	if e.json {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func row(w *tabwriter.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
		if s[i] == "" {
			s[i] = "-"
		}
	}
	fmt.Fprintln(w, strings.Join(s, "\t"))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (e *env) login(args []string) error {
	var user, fingerprint string
	if _, err := e.flags("login", args, func(fs *flag.FlagSet) {
		fs.StringVar(&user, "u", "admin", "user name")
		fs.StringVar(&fingerprint, "ca-fingerprint", "", "the cluster CA's SHA-256 fingerprint (hex), to trust without asking")
	}, 0); err != nil {
		return err
	}
	if err := e.readConfig(); err != nil {
		return err
	}
	server := e.serverAddr()
	if server == "" {
		return usageError("login: which cluster? -s https://HOST")
	}
	caPEM, fp, err := fetchCA(e.ctx, server)
	if err != nil {
		return err
	}
	switch {
	case fingerprint != "":
		if !strings.EqualFold(strings.ReplaceAll(fingerprint, ":", ""), fp) {
			return fmt.Errorf("the cluster's CA has fingerprint %s, not %s: refusing it", fp, fingerprint)
		}
	case e.cfg.CA == caPEM:
	case e.insecure:
	default:
		fmt.Fprintf(e.err, "The cluster's CA has SHA-256 fingerprint\n  %s\n", fp)
		ans, err := e.readLine("Trust it? [y/N] ")
		if err != nil || !strings.EqualFold(strings.TrimSpace(ans), "y") {
			return fmt.Errorf("the cluster's CA was not trusted")
		}
	}
	pass := e.getenv("TANDEM_PASSWORD")
	if pass == "" {
		if pass, err = e.readPassword(fmt.Sprintf("Password of %s: ", user)); err != nil {
			return err
		}
	}
	c, err := newClient(server, caPEM, false)
	if err != nil {
		return err
	}
	c.user, c.pass = user, pass
	host, _ := os.Hostname()
	var tok cluster.APITokenView
	if err := c.do(e.ctx, "POST", "/api/v1/tokens", cluster.APITokenRequest{Name: "tandemctl on " + host, TTLDays: 90}, &tok); err != nil {
		return err
	}
	e.cfg = config{Server: c.server, CA: caPEM, Token: tok.Secret, User: user}
	if err := e.save(); err != nil {
		return err
	}
	fmt.Fprintf(e.err, "logged in to %s as %s (%s); token %s expires %s\n", c.server, user, tok.Role, tok.ID, tok.Expires.Format("2006-01-02"))
	return nil
}

func (e *env) logout(args []string) error {
	if e.c.token != "" {
		id, _, _ := strings.Cut(strings.TrimPrefix(e.c.token, cluster.APITokenPrefix), "_")
		if err := e.c.do(e.ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(id), nil, nil); err != nil && exitCode(err) != exitAuth && exitCode(err) != exitNotFound {
			return err
		}
	}
	e.cfg.Token = ""
	return e.save()
}

func (e *env) whoami(args []string) error {
	var s cluster.SessionInfo
	if err := e.c.do(e.ctx, "GET", "/api/v1/session", nil, &s); err != nil {
		return err
	}
	return e.show(s, func(w *tabwriter.Writer) { row(w, s.User, s.Role, "via "+s.Via) })
}

func (e *env) status(args []string) error {
	var h cluster.Health
	if err := e.c.do(e.ctx, "GET", "/api/v1/cluster/health", nil, &h); err != nil {
		return err
	}
	return e.show(h, func(w *tabwriter.Writer) {
		state := "healthy"
		if !h.Healthy {
			state = "degraded: " + strings.Join(h.Degraded, "; ")
		}
		fmt.Fprintf(w, "cluster %s, term %d, commit %d\n\n", state, h.Term, h.CommitIndex)
		row(w, "MEMBER", "ROLE", "VOTER", "LEADER", "REACHABLE", "RTT")
		for _, m := range h.Members {
			rtt := ""
			if m.RTTMillis > 0 {
				rtt = fmt.Sprintf("%.1f ms", m.RTTMillis)
			}
			row(w, m.Name, m.Role, m.Suffrage, m.Leader, m.Reachable, rtt)
		}
	})
}

// nodeView is a node as node list shows it.
type nodeView struct {
	directory.Member
	Health *struct {
		Healthy  bool `json:"healthy"`
		Services []struct {
			Name     string `json:"name"`
			State    string `json:"state"`
			Restarts int    `json:"restarts"`
		} `json:"services"`
	} `json:"health,omitempty"`
}

func (e *env) nodeList(args []string) error {
	var st cluster.Status
	if err := e.c.do(e.ctx, "GET", "/api/v1/cluster/status", nil, &st); err != nil {
		return err
	}
	var h cluster.Health
	if err := e.c.do(e.ctx, "GET", "/api/v1/cluster/health", nil, &h); err != nil {
		return err
	}
	return e.show(h.Members, func(w *tabwriter.Writer) {
		row(w, "NODE", "ROLE", "ADDRESS", "LEADER", "REACHABLE")
		addr := map[string]string{}
		for _, s := range st.Servers {
			addr[s.ID] = s.Address
		}
		for _, m := range h.Members {
			a := addr[m.ID]
			if i := strings.Index(a, "@"); i >= 0 {
				a = a[i+1:]
			}
			row(w, m.Name, m.Role, a, m.Leader, m.Reachable)
		}
	})
}

// nodeID finds a node's member ID by its name or ID.
func (e *env) nodeID(name string) (string, error) {
	var h cluster.Health
	if err := e.c.do(e.ctx, "GET", "/api/v1/cluster/health", nil, &h); err != nil {
		return "", err
	}
	for _, m := range h.Members {
		if m.ID == name || m.Name == name {
			return m.ID, nil
		}
	}
	return "", &apiError{Status: 404, Code: "not_found", Message: "no node " + name}
}

func (e *env) nodeMaintenance(args []string) error {
	var back bool
	pos, err := e.flags("node maintenance", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&back, "return", false, "when leaving: move back the VMs that left for it")
	}, 2)
	if err != nil {
		return err
	}
	on, err := parseOnOff(pos[1])
	if err != nil {
		return err
	}
	id, err := e.nodeID(pos[0])
	if err != nil {
		return err
	}
	var m directory.Member
	if err := e.c.do(e.ctx, "POST", "/api/v1/cluster/members/"+url.PathEscape(id)+"/maintenance", cluster.MaintenanceRequest{On: on, Return: back}, &m); err != nil {
		return err
	}
	return e.show(m, func(w *tabwriter.Writer) { row(w, m.Name, "maintenance "+onOff(m.Maintenance)) })
}

func parseOnOff(s string) (bool, error) {
	switch s {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, usageError(fmt.Sprintf("%q: want on or off", s))
}

func (e *env) vmList(args []string) error {
	var vms []directory.VM
	if err := e.c.do(e.ctx, "GET", "/api/v1/vms", nil, &vms); err != nil {
		return err
	}
	names := map[string]string{}
	var h cluster.Health
	if e.c.do(e.ctx, "GET", "/api/v1/cluster/health", nil, &h) == nil {
		for _, m := range h.Members {
			names[m.ID] = m.Name
		}
	}
	return e.show(vms, func(w *tabwriter.Writer) {
		row(w, "NAME", "RUNNING", "NODE", "CPUS", "MEMORY", "HA", "FT")
		for _, vm := range vms {
			ft := onOff(vm.FT)
			if vm.FTState != "" {
				ft = vm.FTState
			}
			node := names[vm.Node]
			if node == "" {
				node = vm.Node
			}
			row(w, vm.Name, vm.Running, node, vm.CPUs, fmt.Sprintf("%d MiB", vm.MemoryMiB), onOff(vm.HA), ft)
		}
	})
}

// vmDetail is a VM's definition with how it runs.
type vmDetail struct {
	directory.VM
	Runtime json.RawMessage `json:"runtime,omitempty"`
}

func (e *env) vmShow(args []string) error {
	pos, err := e.flags("vm show", args, nil, 1)
	if err != nil {
		return err
	}
	var d vmDetail
	if err := e.c.do(e.ctx, "GET", "/api/v1/vms/"+url.PathEscape(pos[0]), nil, &d.VM); err != nil {
		return err
	}
	var rt map[string]any
	if d.VM.Running && e.c.do(e.ctx, "GET", "/api/v1/vmm/vms/"+url.PathEscape(pos[0]), nil, &d.Runtime) == nil {
		_ = json.Unmarshal(d.Runtime, &rt)
	}
	return e.show(d, func(w *tabwriter.Writer) {
		vm := d.VM
		row(w, "name", vm.Name)
		row(w, "description", vm.Description)
		row(w, "running", vm.Running)
		row(w, "node", vm.Node)
		row(w, "state", rt["state"])
		row(w, "cpus", vm.CPUs)
		row(w, "memory", fmt.Sprintf("%d MiB", vm.MemoryMiB))
		for i, disk := range vm.Disks {
			row(w, fmt.Sprintf("disk %d", i), disk.Volume)
		}
		for i, nic := range vm.NICs {
			row(w, fmt.Sprintf("nic %d", i), nic.Network+" "+nic.MAC)
		}
		row(w, "ha", onOff(vm.HA))
		row(w, "ft", onOff(vm.FT))
		if vm.FTState != "" {
			row(w, "ft state", vm.FTState)
			row(w, "ft secondary", vm.FTSecondary)
			row(w, "ft reason", vm.FTReason)
		}
		row(w, "generation", vm.Generation)
	})
}

func (e *env) vmCreate(args []string) error {
	req := cluster.VMRequest{CPUs: 1, MemoryMiB: 512}
	var diskGiB int
	var network, kernel, initrd, cmdline string
	pos, err := e.flags("vm create", args, func(fs *flag.FlagSet) {
		fs.IntVar(&req.CPUs, "cpus", 1, "vCPUs")
		fs.IntVar(&req.MemoryMiB, "memory", 512, "memory, MiB")
		fs.IntVar(&diskGiB, "disk-gib", 0, "a new disk volume <VM>-disk of this size (0: none)")
		fs.StringVar(&network, "network", "lan", "the NIC's network (empty: no NIC)")
		fs.StringVar(&req.Description, "description", "", "free text")
		fs.StringVar(&req.Node, "node", "", "the node to run on (default: where it fits)")
		fs.BoolVar(&req.Start, "start", false, "start it")
		fs.BoolVar(&req.HA, "ha", false, "restart it on the other node when its node fails")
		fs.BoolVar(&req.FT, "ft", false, "fault tolerance (COLO): switch on once it runs")
		fs.StringVar(&kernel, "kernel", "", "boot this kernel (a file of the nodes' boot folder) instead of the disk")
		fs.StringVar(&initrd, "initrd", "", "its initrd")
		fs.StringVar(&cmdline, "cmdline", "", "its command line")
	}, 1)
	if err != nil {
		return err
	}
	req.Name = pos[0]
	if diskGiB > 0 {
		vol := cluster.VolumeRequest{Name: req.Name + "-disk", SizeBytes: int64(diskGiB) << 30, Node: req.Node}
		if err := e.c.do(e.ctx, "POST", "/api/v1/volumes", vol, nil); err != nil {
			return fmt.Errorf("the VM's disk: %w", err)
		}
		req.Disks = []directory.VMDisk{{Volume: vol.Name}}
	}
	if network != "" {
		req.NICs = []directory.VMNIC{{Network: network}}
	}
	if kernel != "" {
		req.Boot = &directory.VMBoot{Kernel: kernel, Initrd: initrd, Cmdline: cmdline}
	}
	var vm directory.VM
	if err := e.c.do(e.ctx, "POST", "/api/v1/vms", req, &vm); err != nil {
		return err
	}
	return e.show(vm, func(w *tabwriter.Writer) { row(w, "created", vm.Name) })
}

// editVM reads a VM, changes it and writes it back at the generation
// read, so a concurrent change is refused (exit code 5), not lost.
func (e *env) editVM(name string, change func(*cluster.VMRequest)) (directory.VM, error) {
	var vm directory.VM
	if err := e.c.do(e.ctx, "GET", "/api/v1/vms/"+url.PathEscape(name), nil, &vm); err != nil {
		return vm, err
	}
	req := cluster.VMRequest{Name: vm.Name, Description: vm.Description, CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB, Disks: vm.Disks, NICs: vm.NICs,
		Boot: vm.Boot, HA: vm.HA, FT: vm.FT, Priority: vm.Priority, ExpectedGeneration: vm.Generation}
	change(&req)
	var out directory.VM
	err := e.c.do(e.ctx, "PUT", "/api/v1/vms/"+url.PathEscape(name), req, &out)
	return out, err
}

func (e *env) vmEdit(args []string) error {
	var cpus, mem int
	desc := "\x00"
	pos, err := e.flags("vm edit", args, func(fs *flag.FlagSet) {
		fs.IntVar(&cpus, "cpus", 0, "vCPUs")
		fs.IntVar(&mem, "memory", 0, "memory, MiB")
		fs.StringVar(&desc, "description", "\x00", "free text")
	}, 1)
	if err != nil {
		return err
	}
	vm, err := e.editVM(pos[0], func(r *cluster.VMRequest) {
		if cpus > 0 {
			r.CPUs = cpus
		}
		if mem > 0 {
			r.MemoryMiB = mem
		}
		if desc != "\x00" {
			r.Description = desc
		}
	})
	if err != nil {
		return err
	}
	return e.show(vm, func(w *tabwriter.Writer) { row(w, vm.Name, "generation", vm.Generation) })
}

func vmToggle(what string) func(e *env, args []string) error {
	return func(e *env, args []string) error {
		pos, err := e.flags("vm "+what, args, nil, 2)
		if err != nil {
			return err
		}
		on, err := parseOnOff(pos[1])
		if err != nil {
			return err
		}
		vm, err := e.editVM(pos[0], func(r *cluster.VMRequest) {
			if what == "ft" {
				r.FT = on
			} else {
				r.HA = on
			}
		})
		if err != nil {
			return err
		}
		return e.show(vm, func(w *tabwriter.Writer) { row(w, vm.Name, what, pos[1]) })
	}
}

func (e *env) vmDelete(args []string) error {
	var disks bool
	pos, err := e.flags("vm delete", args, func(fs *flag.FlagSet) { fs.BoolVar(&disks, "disks", false, "delete its volumes too") }, 1)
	if err != nil {
		return err
	}
	var vm directory.VM
	if err := e.c.do(e.ctx, "GET", "/api/v1/vms/"+url.PathEscape(pos[0]), nil, &vm); err != nil {
		return err
	}
	if err := e.c.do(e.ctx, "DELETE", "/api/v1/vms/"+url.PathEscape(pos[0]), nil, nil); err != nil {
		return err
	}
	if disks {
		for _, d := range vm.Disks {
			if err := e.c.do(e.ctx, "DELETE", "/api/v1/volumes/"+url.PathEscape(d.Volume), nil, nil); err != nil {
				return fmt.Errorf("volume %s: %w", d.Volume, err)
			}
		}
	}
	return nil
}

func (e *env) vmStart(args []string) error {
	var req cluster.StartRequest
	pos, err := e.flags("vm start", args, func(fs *flag.FlagSet) { fs.StringVar(&req.Node, "node", "", "the node to start it on") }, 1)
	if err != nil {
		return err
	}
	var vm directory.VM
	if err := e.c.do(e.ctx, "POST", "/api/v1/vms/"+url.PathEscape(pos[0])+"/start", req, &vm); err != nil {
		return err
	}
	return e.show(vm, func(w *tabwriter.Writer) { row(w, vm.Name, "starting on", vm.Node) })
}

func (e *env) vmStop(args []string) error {
	var req cluster.StopRequest
	pos, err := e.flags("vm stop", args, func(fs *flag.FlagSet) { fs.BoolVar(&req.Force, "force", false, "power off at once") }, 1)
	if err != nil {
		return err
	}
	var vm directory.VM
	if err := e.c.do(e.ctx, "POST", "/api/v1/vms/"+url.PathEscape(pos[0])+"/stop", req, &vm); err != nil {
		return err
	}
	return e.show(vm, func(w *tabwriter.Writer) { row(w, vm.Name, "stopping") })
}

func vmAction(action string) func(e *env, args []string) error {
	return func(e *env, args []string) error {
		pos, err := e.flags("vm "+action, args, nil, 1)
		if err != nil {
			return err
		}
		var out json.RawMessage
		if err := e.c.do(e.ctx, "POST", "/api/v1/vmm/vms/"+url.PathEscape(pos[0])+"/"+action, nil, &out); err != nil {
			return err
		}
		if e.json && len(out) > 0 {
			_, err := fmt.Fprintln(e.out, string(out))
			return err
		}
		return e.show(out, func(w *tabwriter.Writer) { row(w, pos[0], action) })
	}
}

func (e *env) vmMigrate(args []string) error {
	pos, err := e.flags("vm migrate", args, nil, -1)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usageError("vm migrate VM [NODE]")
	}
	var req cluster.MigrateRequest
	if len(pos) == 2 {
		req.Node = pos[1]
	}
	var vm directory.VM
	if err := e.c.do(e.ctx, "POST", "/api/v1/vms/"+url.PathEscape(pos[0])+"/migrate", req, &vm); err != nil {
		return err
	}
	return e.show(vm, func(w *tabwriter.Writer) { row(w, vm.Name, "migrating to", vm.MigrateTo) })
}

func (e *env) vmHistory(args []string) error {
	pos, err := e.flags("vm history", args, nil, 1)
	if err != nil {
		return err
	}
	var evs []struct {
		Time   time.Time `json:"time"`
		Kind   string    `json:"kind"`
		Detail string    `json:"detail"`
	}
	if err := e.c.do(e.ctx, "GET", "/api/v1/vmm/vms/"+url.PathEscape(pos[0])+"/history", nil, &evs); err != nil {
		return err
	}
	return e.show(evs, func(w *tabwriter.Writer) {
		row(w, "TIME", "EVENT", "DETAIL")
		for _, ev := range evs {
			row(w, ev.Time.Local().Format("2006-01-02 15:04:05"), ev.Kind, ev.Detail)
		}
	})
}

func (e *env) volumeList(args []string) error {
	var vols []directory.Volume
	if err := e.c.do(e.ctx, "GET", "/api/v1/volumes", nil, &vols); err != nil {
		return err
	}
	return e.show(vols, func(w *tabwriter.Writer) {
		row(w, "NAME", "SIZE", "PRIMARY", "COPIES", "DESCRIPTION")
		for _, v := range vols {
			var copies []string
			for n, c := range v.Copies {
				copies = append(copies, n+":"+string(c))
			}
			row(w, v.Name, fmt.Sprintf("%.1f GiB", float64(v.SizeBytes)/(1<<30)), v.Primary, strings.Join(copies, " "), v.Description)
		}
	})
}

func (e *env) volumeCreate(args []string) error {
	var req cluster.VolumeRequest
	var gib float64
	pos, err := e.flags("volume create", args, func(fs *flag.FlagSet) {
		fs.Float64Var(&gib, "size-gib", 0, "size, GiB")
		fs.StringVar(&req.Node, "node", "", "the node whose copy starts as primary")
		fs.StringVar(&req.CloneFrom, "clone-from", "", "copy this volume")
		fs.StringVar(&req.Description, "description", "", "free text")
	}, 1)
	if err != nil {
		return err
	}
	req.Name, req.SizeBytes = pos[0], int64(gib*(1<<30))
	var v directory.Volume
	if err := e.c.do(e.ctx, "POST", "/api/v1/volumes", req, &v); err != nil {
		return err
	}
	return e.show(v, func(w *tabwriter.Writer) { row(w, "created", v.Name) })
}

func (e *env) volumeVerify(args []string) error {
	pos, err := e.flags("volume verify", args, nil, 1)
	if err != nil {
		return err
	}
	var rep map[string]any
	if err := e.c.do(e.ctx, "POST", "/api/v1/storage/volumes/"+url.PathEscape(pos[0])+"/verify", nil, &rep); err != nil {
		return err
	}
	return e.show(rep, func(w *tabwriter.Writer) {
		for _, k := range sortedKeys(rep) {
			row(w, k, rep[k])
		}
	})
}

func (e *env) userList(args []string) error {
	var users []cluster.UserView
	if err := e.c.do(e.ctx, "GET", "/api/v1/users", nil, &users); err != nil {
		return err
	}
	return e.show(users, func(w *tabwriter.Writer) {
		row(w, "USER", "ROLE", "DISABLED", "UPDATED")
		for _, u := range users {
			row(w, u.Name, u.Role, u.Disabled, u.Updated.Local().Format("2006-01-02 15:04"))
		}
	})
}

// newPassword reads a new password: $TANDEM_NEW_PASSWORD, else asked
// twice.
func (e *env) newPassword(prompt string) (string, error) {
	if p := e.getenv("TANDEM_NEW_PASSWORD"); p != "" {
		return p, nil
	}
	p, err := e.readPassword(prompt)
	if err != nil {
		return "", err
	}
	again, err := e.readPassword("Again: ")
	if err != nil {
		return "", err
	}
	if p != again {
		return "", usageError("the passwords differ")
	}
	return p, nil
}

func (e *env) userCreate(args []string) error {
	var role string
	pos, err := e.flags("user create", args, func(fs *flag.FlagSet) { fs.StringVar(&role, "role", "viewer", "admin, operator or viewer") }, 1)
	if err != nil {
		return err
	}
	pass, err := e.newPassword("Password of " + pos[0] + ": ")
	if err != nil {
		return err
	}
	var u cluster.UserView
	if err := e.c.do(e.ctx, "POST", "/api/v1/users", cluster.UserRequest{Name: pos[0], Role: directory.Role(role), Password: pass}, &u); err != nil {
		return err
	}
	return e.show(u, func(w *tabwriter.Writer) { row(w, "created", u.Name, u.Role) })
}

func (e *env) userEdit(args []string) error {
	var role string
	var disable, enable, password bool
	pos, err := e.flags("user edit", args, func(fs *flag.FlagSet) {
		fs.StringVar(&role, "role", "", "admin, operator or viewer")
		fs.BoolVar(&disable, "disable", false, "disable the user (ends their sessions and tokens)")
		fs.BoolVar(&enable, "enable", false, "enable the user")
		fs.BoolVar(&password, "password", false, "set a new password (read like create's)")
	}, 1)
	if err != nil {
		return err
	}
	var patch cluster.UserPatch
	if role != "" {
		r := directory.Role(role)
		patch.Role = &r
	}
	if disable || enable {
		patch.Disabled = &disable
	}
	if password {
		p, err := e.newPassword("New password of " + pos[0] + ": ")
		if err != nil {
			return err
		}
		patch.Password = &p
	}
	var u cluster.UserView
	if err := e.c.do(e.ctx, "PATCH", "/api/v1/users/"+url.PathEscape(pos[0]), patch, &u); err != nil {
		return err
	}
	return e.show(u, func(w *tabwriter.Writer) { row(w, u.Name, u.Role, "disabled", u.Disabled) })
}

func (e *env) passwd(args []string) error {
	cur := e.getenv("TANDEM_PASSWORD")
	var err error
	if cur == "" {
		if cur, err = e.readPassword("Current password: "); err != nil {
			return err
		}
	}
	p, err := e.newPassword("New password: ")
	if err != nil {
		return err
	}
	return e.c.do(e.ctx, "PUT", "/api/v1/session/password", cluster.PasswordChange{Current: cur, New: p}, nil)
}

func (e *env) tokenList(args []string) error {
	var toks []cluster.APITokenView
	if err := e.c.do(e.ctx, "GET", "/api/v1/tokens", nil, &toks); err != nil {
		return err
	}
	return e.show(toks, func(w *tabwriter.Writer) {
		row(w, "ID", "NAME", "USER", "ROLE", "EXPIRES")
		for _, t := range toks {
			exp := "never"
			if !t.Expires.IsZero() {
				exp = t.Expires.Local().Format("2006-01-02")
			}
			row(w, t.ID, t.Name, t.User, t.Role, exp)
		}
	})
}

func (e *env) tokenCreate(args []string) error {
	var role string
	var days int
	pos, err := e.flags("token create", args, func(fs *flag.FlagSet) {
		fs.StringVar(&role, "role", "", "its role, at most yours (default: yours)")
		fs.IntVar(&days, "days", 0, "how long it lasts (0: until revoked)")
	}, 1)
	if err != nil {
		return err
	}
	// A token is made with the user's password, not by this CLI's own
	// token: a leaked token must not mint others.
	pass := e.getenv("TANDEM_PASSWORD")
	if pass == "" {
		if pass, err = e.readPassword(fmt.Sprintf("Password of %s: ", e.cfg.User)); err != nil {
			return err
		}
	}
	c := *e.c
	c.token, c.user, c.pass = "", e.cfg.User, pass
	var t cluster.APITokenView
	if err := c.do(e.ctx, "POST", "/api/v1/tokens", cluster.APITokenRequest{Name: pos[0], Role: directory.Role(role), TTLDays: days}, &t); err != nil {
		return err
	}
	return e.show(t, func(w *tabwriter.Writer) {
		row(w, "id", t.ID)
		row(w, "role", t.Role)
		row(w, "secret", t.Secret)
		fmt.Fprintln(w, "(the secret is shown this once)")
	})
}

func (e *env) audit(args []string) error {
	var since, limit int
	if _, err := e.flags("audit", args, func(fs *flag.FlagSet) {
		fs.IntVar(&since, "since", 0, "after this raft index")
		fs.IntVar(&limit, "limit", 100, "lines")
	}, 0); err != nil {
		return err
	}
	var lines []directory.AuditEntry
	if err := e.c.do(e.ctx, "GET", fmt.Sprintf("/api/v1/audit?since=%d&limit=%d", since, limit), nil, &lines); err != nil {
		return err
	}
	return e.printAudit(lines)
}

func (e *env) activity(args []string) error {
	var limit int
	if _, err := e.flags("activity", args, func(fs *flag.FlagSet) { fs.IntVar(&limit, "limit", 20, "lines") }, 0); err != nil {
		return err
	}
	var lines []directory.AuditEntry
	if err := e.c.do(e.ctx, "GET", "/api/v1/activity?limit="+strconv.Itoa(limit), nil, &lines); err != nil {
		return err
	}
	return e.printAudit(lines)
}

func (e *env) printAudit(lines []directory.AuditEntry) error {
	return e.show(lines, func(w *tabwriter.Writer) {
		row(w, "INDEX", "TIME", "WHO", "FROM", "ACTION", "TARGET", "RESULT", "DETAIL")
		for _, l := range lines {
			row(w, l.Index, l.Time.Local().Format("2006-01-02 15:04:05"), l.Actor, l.From, l.Action, l.Target, l.Result, l.Detail)
		}
	})
}

func (e *env) settings(args []string) error {
	var s map[string]string
	if err := e.c.do(e.ctx, "GET", "/api/v1/cluster/settings", nil, &s); err != nil {
		return err
	}
	return e.printSettings(s)
}

func (e *env) printSettings(s map[string]string) error {
	return e.show(s, func(w *tabwriter.Writer) {
		for _, k := range sortedKeys(s) {
			v := s[k]
			if strings.Contains(k, "password") {
				v = "(set)"
			}
			row(w, k, v)
		}
	})
}

func (e *env) settingsSet(args []string) error {
	if len(args) == 0 {
		return usageError("settings set KEY=VALUE ...")
	}
	p := directory.SettingsPayload{Set: map[string]string{}}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return usageError(fmt.Sprintf("%q: want KEY=VALUE", a))
		}
		p.Set[k] = v
	}
	var s map[string]string
	if err := e.c.do(e.ctx, "PATCH", "/api/v1/cluster/settings", p, &s); err != nil {
		return err
	}
	return e.printSettings(s)
}

func (e *env) settingsUnset(args []string) error {
	if len(args) == 0 {
		return usageError("settings unset KEY ...")
	}
	var s map[string]string
	if err := e.c.do(e.ctx, "PATCH", "/api/v1/cluster/settings", directory.SettingsPayload{Unset: args}, &s); err != nil {
		return err
	}
	return e.printSettings(s)
}

// getOne prints one record of a collection.
func getOne(prefix string) func(e *env, args []string) error {
	return func(e *env, args []string) error {
		pos, err := e.flags("show", args, nil, 1)
		if err != nil {
			return err
		}
		var v map[string]any
		if err := e.c.do(e.ctx, "GET", prefix+url.PathEscape(pos[0]), nil, &v); err != nil {
			return err
		}
		return e.show(v, func(w *tabwriter.Writer) {
			for _, k := range sortedKeys(v) {
				b, _ := json.Marshal(v[k])
				row(w, k, strings.Trim(string(b), `"`))
			}
		})
	}
}

// deleteOne deletes one record of a collection.
func deleteOne(prefix string) func(e *env, args []string) error {
	return func(e *env, args []string) error {
		pos, err := e.flags("delete", args, nil, 1)
		if err != nil {
			return err
		}
		return e.c.do(e.ctx, "DELETE", prefix+url.PathEscape(pos[0]), nil, nil)
	}
}

func (e *env) api(args []string) error {
	if len(args) < 2 || len(args) > 3 {
		return usageError("api METHOD PATH [JSON]")
	}
	var in any
	if len(args) == 3 {
		var raw json.RawMessage
		if err := json.Unmarshal([]byte(args[2]), &raw); err != nil {
			return usageError("the body is not JSON: " + err.Error())
		}
		in = raw
	}
	var out []byte
	if err := e.c.do(e.ctx, strings.ToUpper(args[0]), args[1], in, &out); err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") == nil {
		out = pretty.Bytes()
	}
	_, err := fmt.Fprintln(e.out, strings.TrimSpace(string(out)))
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
