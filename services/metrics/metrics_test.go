package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeHost writes the /proc and /sys files the sampler reads.
type fakeHost struct {
	t         *testing.T
	proc, sys string
}

func newFakeHost(t *testing.T) *fakeHost {
	d := t.TempDir()
	h := &fakeHost{t: t, proc: filepath.Join(d, "proc"), sys: filepath.Join(d, "sys")}
	for _, dir := range []string{"block/vda/device", "block/loop0", "class/net/eth0/statistics", "class/net/br0/bridge", "class/net/br0/statistics", "class/net/tap-web-0/statistics", "class/net/lo/statistics"} {
		h.mkdir(filepath.Join(h.sys, dir))
	}
	h.write(h.sys, "class/net/tap-web-0/tun_flags", "0x1002")
	return h
}

func (h *fakeHost) mkdir(p string) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		h.t.Fatal(err)
	}
}

func (h *fakeHost) write(root, name, content string) {
	p := filepath.Join(root, name)
	h.mkdir(filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// set writes one reading: CPU jiffies (busy, idle), memory, interface
// and disk counters, and the VM's process.
func (h *fakeHost) set(busy, idle uint64, availKiB int, eth, br, tapRx, tapTx, lo uint64, vdaSectors, loopSectors, vmTicks uint64) {
	h.write(h.proc, "stat", fmt.Sprintf("cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 1 2 3 4\n", busy, idle))
	h.write(h.proc, "meminfo", fmt.Sprintf("MemTotal:       1048576 kB\nMemFree:        1 kB\nMemAvailable:   %d kB\n", availKiB))
	for name, v := range map[string]uint64{"eth0": eth, "br0": br, "lo": lo} {
		h.write(h.sys, "class/net/"+name+"/statistics/rx_bytes", fmt.Sprint(v))
		h.write(h.sys, "class/net/"+name+"/statistics/tx_bytes", fmt.Sprint(2*v))
	}
	h.write(h.sys, "class/net/tap-web-0/statistics/rx_bytes", fmt.Sprint(tapRx))
	h.write(h.sys, "class/net/tap-web-0/statistics/tx_bytes", fmt.Sprint(tapTx))
	h.write(h.proc, "diskstats", fmt.Sprintf(" 253 0 vda 1 0 %d 0 2 0 %d 0 0 0 0\n   7 0 loop0 1 0 %d 0 2 0 %d 0 0 0 0\n", vdaSectors, vdaSectors/2, loopSectors, loopSectors))
	// comm with a space and a parenthesis, as QEMU's may be.
	stat := fmt.Sprintf("4242 (qemu (web)) S 1 1 1 0 -1 0 0 0 0 0 %d %d 0 0 20 0 3 0 100 1000 2560 0 0", vmTicks, vmTicks)
	h.write(h.proc, "4242/stat", stat)
}

func TestSample(t *testing.T) {
	h := newFakeHost(t)
	var disk uint64
	s := New(Config{Identity: func() (string, string) { return "n-a", "node-a" }, Proc: h.proc, Sys: h.sys, Keep: 2, VMs: func() []VM {
		return []VM{{Name: "web", PID: 4242, CPUs: 2, Taps: []string{"tap-web-0"},
			BlockStats: func() (uint64, uint64, error) { return disk, 2 * disk, nil }}}
	}})
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	h.set(1000, 1000, 524288, 100, 999, 10, 20, 5, 1000, 50, 100)
	s.Sample(t0)
	if _, ok := s.Latest(); ok {
		t.Fatal("a sample from one reading")
	}
	// Two seconds on: 300 of 400 jiffies busy, 10 MiB more written, …
	h.set(1300, 1100, 262144, 2100, 5000, 4010, 1020, 900, 21480, 5000, 300)
	disk = 4000
	s.Sample(t0.Add(2 * time.Second))
	got, _ := s.Latest()
	want := Sample{
		Node: "n-a", NodeName: "node-a", Time: t0.Add(2 * time.Second),
		CPUPct: 75, MemUsedBytes: 768 << 20, MemTotalBytes: 1 << 30,
		NetRxBps: 1000, NetTxBps: 2000, // eth0 only: not the bridge, the tap or lo
		DiskReadBps: 20480 * 512 / 2, DiskWriteBps: 10240 * 512 / 2, // vda, not loop0
		VMs: []VMSample{{Name: "web", CPUPct: 200.0 * 2 / 2 / 2, MemBytes: 2560 * uint64(os.Getpagesize()),
			NetRxBps: 500, NetTxBps: 2000, DiskReadBps: 2000, DiskWriteBps: 4000}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error(diff)
	}
	// A QEMU restarted (another PID) starts its rates afresh.
	h.set(1400, 1200, 262144, 2100, 5000, 0, 0, 900, 21480, 5000, 1)
	h.write(h.proc, "4243/stat", "4243 (qemu) S 1 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 3 0 100 1000 10 0 0")
	s.cfg.VMs = func() []VM { return []VM{{Name: "web", PID: 4243, CPUs: 2}} }
	s.Sample(t0.Add(4 * time.Second))
	got, _ = s.Latest()
	if got.VMs[0].CPUPct != 0 || got.VMs[0].NetRxBps != 0 {
		t.Errorf("a new QEMU's first sample: %+v", got.VMs[0])
	}
	if n := len(s.Since(time.Time{})); n != 2 {
		t.Errorf("%d samples kept, want Keep=2", n)
	}
	if n := len(s.Since(t0.Add(3 * time.Second))); n != 1 {
		t.Errorf("%d samples since t0+3s, want 1", n)
	}
	var b strings.Builder
	if err := s.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`tandem_node_cpu_percent{node="node-a"} 50`, `tandem_vm_memory_bytes{node="node-a",vm="web"}`, "# TYPE tandem_vm_cpu_percent gauge"} {
		if !strings.Contains(b.String(), line) {
			t.Errorf("metrics lack %q:\n%s", line, b.String())
		}
	}
}

func TestReadersRefuseGarbage(t *testing.T) {
	h := newFakeHost(t)
	h.write(h.proc, "stat", "intr 1 2 3\n")
	h.write(h.proc, "meminfo", "nothing\n")
	h.write(h.proc, "1/stat", "1 (init")
	if _, _, err := readCPU(filepath.Join(h.proc, "stat")); err == nil {
		t.Error("a stat without a cpu line")
	}
	if _, _, err := readMemory(filepath.Join(h.proc, "meminfo")); err == nil {
		t.Error("a meminfo without MemTotal")
	}
	if _, _, err := readProcess(filepath.Join(h.proc, "1")); err == nil {
		t.Error("a truncated process stat")
	}
	s := New(Config{Proc: h.proc, Sys: h.sys})
	s.Sample(time.Now())
	s.Sample(time.Now())
	if _, ok := s.Latest(); ok {
		t.Error("a sample from unreadable counters")
	}
}
