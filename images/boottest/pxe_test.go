package boottest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/qemubox"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
)

// The provisioning network the tests' plan serves.
const (
	provAddress = "192.168.77.1/24"
	provHost    = "192.168.77.1"
)

// TestPXEInstall installs a new machine with an empty disk from a running
// node, under SeaBIOS and under OVMF: DHCP, iPXE, the installer in RAM,
// discovered with its hardware, left alone (not one byte written to its
// disk) until an admin approves it through the API, then installed,
// rebooted from its own disk (the firmware tries the disk first, and
// the network second), and joined to the cluster.
//
// bios-proxy does it on a site that has its own DHCP server on that
// network (dnsmasq, handing out addresses): Tandem answers in proxyDHCP
// mode, with boot information only. bios-allowlist-link-drop is on the
// plan's allowlist, so no admin approves it, and has its cables pulled
// for 8 s as soon as its disk step is done: the installer waits and
// carries on. small-disk has a disk smaller than the image: the
// sequence log says so, the disk stays untouched, and a retry fails the
// same way.
func TestPXEInstall(t *testing.T) {
	for _, tc := range []pxeCase{
		{name: "bios", firmware: "bios", boot: qemubox.PXE},
		{name: "uefi", firmware: "uefi", boot: qemubox.PXEUEFI},
		{name: "bios-proxy", firmware: "bios", boot: qemubox.PXE, proxy: true},
		{name: "bios-allowlist-link-drop", firmware: "bios", boot: qemubox.PXE, allowlist: true, dropLink: true},
		{name: "small-disk", firmware: "bios", boot: qemubox.PXE, diskGiB: 1, wantFail: "smaller than the image"},
	} {
		t.Run(tc.name, func(t *testing.T) { pxeInstall(t, tc) })
	}
}

type pxeCase struct {
	name, firmware string
	boot           qemubox.Boot
	proxy          bool   // beside the site's DHCP server
	diskGiB        int    // default 4
	allowlist      bool   // approved by the plan's allowlist, not an admin
	dropLink       bool   // cables out for a while mid-install
	wantFail       string // the install fails with this
}

func pxeInstall(t *testing.T, tc pxeCase) {
	firmware, boot, proxy := tc.firmware, tc.boot, tc.proxy
	if tc.diskGiB == 0 {
		tc.diskGiB = 4
	}
	requireImage(t)
	ctx := context.Background()
	b, err := board.LoadNamed("../..", "qemu-2node")
	if err != nil {
		t.Fatal(err)
	}
	box, err := qemubox.Start(ctx, qemubox.Config{
		ImageDir: imageDir, Board: b, WorkDir: t.TempDir(),
		Nodes: []qemubox.NodeConfig{
			{Name: "node-a", FreshDisk: true},
			{Name: "node-p", Boot: boot, Deferred: true, DiskGiB: tc.diskGiB},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		box.Stop()
		for _, n := range box.Nodes {
			keepConsole(t, n)
		}
	})
	t.Cleanup(func() { showServiceLogs(t, box.Nodes[0], "provision", "cluster", "frontdoor") })
	server := box.Nodes[0]
	if _, err := server.WaitHealthy(ctx, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	creds, err := box.Bootstrap(ctx, "admin", "correct-horse-battery")
	if err != nil {
		t.Fatal(err)
	}
	api := server.API(creds)
	plan := directory.Provisioning{Enabled: true, Node: server.Name, Mode: directory.ProvisionDHCP, Address: provAddress,
		RangeStart: "192.168.77.100", RangeEnd: "192.168.77.149", LeaseSeconds: 600}
	if proxy {
		plan.Mode = directory.ProvisionProxy
		if err := box.StartProvisioningDHCP(); err != nil {
			t.Fatal(err)
		}
	}
	mac := qemubox.MAC(1, 3)
	if tc.allowlist {
		plan.AutoApprove = map[string]string{mac: "node-p"}
	}
	if _, err := api.Do(ctx, "PUT", "/api/v1/provisioning", plan, nil); err != nil {
		t.Fatal(err)
	}
	// The boot files are served on the front door's port, in plain HTTP.
	plainURL := fmt.Sprintf("http://127.0.0.1:%d/boot/ipxe", server.HTTPSPort)
	waitFor(t, 2*time.Minute, "the provisioning node serving "+plainURL, func() error {
		resp, err := http.Get(plainURL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "chain http://"+provHost) {
			return fmt.Errorf("%s: %s", resp.Status, body)
		}
		return nil
	})

	powerOn := time.Now()
	machine, err := box.StartNode(ctx, "node-p")
	if err != nil {
		t.Fatal(err)
	}
	m := waitMachine(t, ctx, api, mac, 5*time.Minute, func(m directory.Machine) bool { return m.Inventory != nil })
	t.Logf("%s: discovered %.1fs after power-on", firmware, time.Since(powerOn).Seconds())
	inv := m.Inventory
	if inv == nil || inv.Firmware != firmware || len(inv.Disks) != 1 || inv.Disks[0].SizeBytes != int64(tc.diskGiB)<<30 || inv.MemoryBytes < 1<<30 || inv.CPUs != 2 {
		t.Errorf("inventory: %+v", inv)
	}
	if m.Firmware != firmware {
		t.Errorf("the PXE answer recorded firmware %q, want %q", m.Firmware, firmware)
	}
	// The address came from the site's server in proxy mode, from ours
	// otherwise: the pools do not overlap.
	pool := [2]netip.Addr{netip.MustParseAddr(plan.RangeStart), netip.MustParseAddr(plan.RangeEnd)}
	if proxy {
		pool = [2]netip.Addr{netip.MustParseAddr(qemubox.ProvPoolLow), netip.MustParseAddr(qemubox.ProvPoolHigh)}
	}
	if a, err := netip.ParseAddr(m.Address); err != nil || a.Less(pool[0]) || pool[1].Less(a) {
		t.Errorf("installer address %q, want one of %v-%v", m.Address, pool[0], pool[1])
	}
	found := false
	for _, nic := range inv.NICs {
		found = found || nic.MAC == mac
	}
	if !found {
		t.Errorf("the boot NIC %s is not in the inventory: %+v", mac, inv.NICs)
	}

	approved := time.Now()
	if tc.allowlist {
		if m.ApprovedBy != "allowlist" {
			t.Errorf("approved by %q, want the allowlist", m.ApprovedBy)
		}
	} else {
		approved = notApprovedThenApproved(t, ctx, api, machine, mac)
	}
	if tc.wantFail != "" {
		installFails(t, ctx, api, machine, mac, tc.wantFail)
		return
	}
	dropped := false
	m = waitMachine(t, ctx, api, mac, 10*time.Minute, func(m directory.Machine) bool {
		if m.State == directory.MachineFailed {
			t.Fatalf("install failed: %s\n%s", m.Error, stepLog(m))
		}
		if tc.dropLink && !dropped && stepState(m, directory.StepDisk) == directory.StepDone {
			dropped = true
			if err := machine.LinksDown(); err != nil {
				t.Fatal(err)
			}
			t.Logf("cables out at %s", stepLog(m))
			time.Sleep(8 * time.Second)
			if err := machine.LinksUp(); err != nil {
				t.Fatal(err)
			}
		}
		return m.State == directory.MachineJoined
	})
	if tc.dropLink && !dropped {
		t.Error("the cables were never pulled")
	}
	joined := time.Since(powerOn)
	t.Logf("%s: joined %.1fs after power-on (%.1fs after approval)\n%s", firmware, joined.Seconds(), time.Since(approved).Seconds(), stepLog(m))

	h, err := machine.WaitHealthy(ctx, 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if h.Node != "node-p" {
		t.Errorf("the installed node is called %q", h.Node)
	}
	// It booted from its own disk, through GRUB (a network boot would
	// have no slot).
	if st := nodeStatus(t, machine.Console()); st.Slot != "a" || !st.DataMounted {
		t.Errorf("installed node: slot %q, data mounted %v", st.Slot, st.DataMounted)
	}
	// A voter the leader reaches (the cluster of two nodes without a
	// witness reports itself degraded: that is not this test's business).
	waitFor(t, 3*time.Minute, "node-p a reachable voter", func() error {
		var ch cluster.Health
		if _, err := box.ClusterAPI(creds).Do(ctx, "GET", "/api/v1/cluster/health", nil, &ch); err != nil {
			return err
		}
		for _, mem := range ch.Members {
			if mem.Name == "node-p" && mem.Role == "node" && mem.Suffrage == "Voter" && mem.Reachable {
				return nil
			}
		}
		return fmt.Errorf("members %+v", ch.Members)
	})
	if line := os.Getenv("TANDEM_BENCH_PXE_LINE"); line != "" {
		// scripts/bench-pxe reads the figures from here.
		writeBenchLine(t, line, firmware, joined, m)
	}
}

// notApprovedThenApproved checks that a discovered machine waits and
// writes nothing while nobody approves it, then approves it; it returns
// when.
func notApprovedThenApproved(t *testing.T, ctx context.Context, api qemubox.APIClient, machine *qemubox.Node, mac string) time.Time {
	t.Helper()
	time.Sleep(5 * time.Second)
	if m := getMachine(t, ctx, api, mac); m.State != directory.MachineDiscovered {
		t.Fatalf("unapproved machine is %s", m.State)
	}
	if off, err := firstData(machine.Disk); err != nil || off >= 0 {
		t.Fatalf("the disk of an unapproved machine was written (first data at %d, %v)", off, err)
	}
	approved := time.Now()
	if _, err := api.Do(ctx, "POST", "/api/v1/provisioning/machines/"+mac+"/approve", map[string]string{"name": "node-p"}, nil); err != nil {
		t.Fatal(err)
	}
	return approved
}

// installFails checks an install that must fail with want: the sequence
// log says so, nothing was written to the disk, and a retry fails again.
func installFails(t *testing.T, ctx context.Context, api qemubox.APIClient, machine *qemubox.Node, mac, want string) {
	t.Helper()
	failed := func(m directory.Machine) bool { return m.State == directory.MachineFailed }
	m := waitMachine(t, ctx, api, mac, 5*time.Minute, failed)
	if !strings.Contains(m.Error, want) {
		t.Errorf("failed with %q, want %q\n%s", m.Error, want, stepLog(m))
	}
	t.Logf("failed as it must:\n%s", stepLog(m))
	if off, err := firstData(machine.Disk); err != nil || off >= 0 {
		t.Errorf("a failed install wrote to the disk (first data at %d, %v)", off, err)
	}
	if _, err := api.Do(ctx, "POST", "/api/v1/provisioning/machines/"+mac+"/retry", nil, nil); err != nil {
		t.Fatal(err)
	}
	m = waitMachine(t, ctx, api, mac, 2*time.Minute, func(m directory.Machine) bool {
		return failed(m) && stepAttempts(m, directory.StepDisk) >= 2
	})
	if !strings.Contains(m.Error, want) {
		t.Errorf("the retry failed with %q, want %q", m.Error, want)
	}
}

func stepState(m directory.Machine, name string) string {
	for _, s := range m.Steps {
		if s.Name == name {
			return s.State
		}
	}
	return ""
}

func stepAttempts(m directory.Machine, name string) int {
	for _, s := range m.Steps {
		if s.Name == name {
			return s.Attempts
		}
	}
	return 0
}

func getMachine(t *testing.T, ctx context.Context, api qemubox.APIClient, mac string) directory.Machine {
	t.Helper()
	var m directory.Machine
	if _, err := api.Do(ctx, "GET", "/api/v1/provisioning/machines/"+mac, nil, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func waitMachine(t *testing.T, ctx context.Context, api qemubox.APIClient, mac string, timeout time.Duration, cond func(directory.Machine) bool) directory.Machine {
	t.Helper()
	var last directory.Machine
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var m directory.Machine
		if code, err := api.Do(ctx, "GET", "/api/v1/provisioning/machines/"+mac, nil, &m); err == nil {
			last = m
			if cond(m) {
				return m
			}
		} else if code != http.StatusNotFound {
			t.Logf("machine %s: %v", mac, err)
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("machine %s: condition not met in %v; last: %s %s\n%s", mac, timeout, last.State, last.Error, stepLog(last))
	return last
}

// stepLog is the machine's sequence as the console shows it.
func stepLog(m directory.Machine) string {
	var b strings.Builder
	for _, s := range m.Steps {
		d := ""
		if !s.Started.IsZero() && !s.Ended.IsZero() {
			d = fmt.Sprintf("%.1fs", s.Ended.Sub(s.Started).Seconds())
		}
		fmt.Fprintf(&b, "  %-9s %-8s %7s %s %s\n", s.Name, s.State, d, strings.ReplaceAll(s.Output, "\n", " | "), s.Error)
	}
	return b.String()
}

// writeBenchLine appends the install's figures to the file the bench
// script reads.
func writeBenchLine(t *testing.T, path, firmware string, total time.Duration, m directory.Machine) {
	var steps []string
	for _, s := range m.Steps {
		if !s.Started.IsZero() && !s.Ended.IsZero() {
			steps = append(steps, fmt.Sprintf("%s=%.1f", s.Name, s.Ended.Sub(s.Started).Seconds()))
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "firmware=%s pxe_install_s=%.1f %s\n", firmware, total.Seconds(), strings.Join(steps, " "))
}

// firstData is the offset of the first byte ever written to a sparse
// file, or -1 if none was.
func firstData(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return -1, nil
	}
	return off, err
}

func waitFor(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
}
