// Package metrics samples what a node and its VMs use (CPU, memory,
// network, disk I/O) every few seconds, from the kernel's /proc and /sys
// and from each VM's QEMU, and keeps the last minutes of samples: the
// console's live charts and Prometheus's /metrics read them.
package metrics

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// VM is a running VM, as the sampler needs to know it.
type VM struct {
	Name string
	PID  int
	CPUs int      // its vCPUs: its CPU use is a share of them
	Taps []string // its NICs' taps
	// BlockStats returns the bytes its disks read and wrote since QEMU
	// started (QMP query-blockstats).
	BlockStats func() (read, written uint64, err error)
}

// Config is the sampler's configuration.
type Config struct {
	// Identity names the node (member ID and name) in its samples; it
	// may be unknown ("") until the node is in a cluster.
	Identity  func() (id, name string)
	Proc, Sys string        // default /proc and /sys
	Interval  time.Duration // default 2 s
	Keep      int           // samples kept; default 300 (10 minutes at 2 s)
	VMs       func() []VM   // the VMs running now
	Logger    *slog.Logger
}

// Sample is what a node and its VMs used over one interval. Rates are
// per second.
type Sample struct {
	Node          string     `json:"node"`
	NodeName      string     `json:"node_name"`
	Time          time.Time  `json:"time"`
	CPUPct        float64    `json:"cpu_pct"`
	MemUsedBytes  uint64     `json:"mem_used_bytes"`
	MemTotalBytes uint64     `json:"mem_total_bytes"`
	NetRxBps      float64    `json:"net_rx_bps"`
	NetTxBps      float64    `json:"net_tx_bps"`
	DiskReadBps   float64    `json:"disk_read_bps"`
	DiskWriteBps  float64    `json:"disk_write_bps"`
	VMs           []VMSample `json:"vms"`
}

// VMSample is what one VM used over the interval. Its network is seen
// from the guest: Rx is what the guest received.
type VMSample struct {
	Name         string  `json:"name"`
	CPUPct       float64 `json:"cpu_pct"` // of its vCPUs
	MemBytes     uint64  `json:"mem_bytes"`
	NetRxBps     float64 `json:"net_rx_bps"`
	NetTxBps     float64 `json:"net_tx_bps"`
	DiskReadBps  float64 `json:"disk_read_bps"`
	DiskWriteBps float64 `json:"disk_write_bps"`
}

// counters are cumulative readings; a sample is the difference of two.
type counters struct {
	at                  time.Time
	cpuTotal, cpuIdle   uint64 // jiffies
	netRx, netTx        uint64
	diskRead, diskWrite uint64 // bytes
	memUsed, memTotal   uint64
	vms                 map[string]vmCounters
}

type vmCounters struct {
	pid                 int
	cpus                int
	ticks               uint64 // utime+stime
	rss                 uint64
	netRx, netTx        uint64 // as the guest sees them
	diskRead, diskWrite uint64
}

// Sampler samples every Interval and keeps the last Keep samples.
type Sampler struct {
	cfg  Config
	log  *slog.Logger
	mu   sync.Mutex
	ring []Sample
	prev *counters
}

// New returns a sampler.
func New(cfg Config) *Sampler {
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Sys == "" {
		cfg.Sys = "/sys"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 300
	}
	if cfg.VMs == nil {
		cfg.VMs = func() []VM { return nil }
	}
	if cfg.Identity == nil {
		cfg.Identity = func() (string, string) { return "", "" }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sampler{cfg: cfg, log: cfg.Logger}
}

// Run samples until ctx ends.
func (s *Sampler) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	s.Sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.Sample(now)
		}
	}
}

// Sample reads the counters now and, from the second reading on, keeps
// the sample of the interval since the last.
func (s *Sampler) Sample(now time.Time) {
	c, err := s.read(now)
	if err != nil {
		s.log.Warn("metrics: reading the node's counters", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prev != nil {
		s.ring = append(s.ring, s.cfg.sample(s.prev, c))
		if len(s.ring) > s.cfg.Keep {
			s.ring = slices.Clone(s.ring[len(s.ring)-s.cfg.Keep:])
		}
	}
	s.prev = c
}

// Identity is the node the samples are of.
func (s *Sampler) Identity() (id, name string) { return s.cfg.Identity() }

// Since returns the kept samples taken after t, oldest first.
func (s *Sampler) Since(t time.Time) []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.ring, t, func(x Sample, t time.Time) int {
		if x.Time.After(t) {
			return 1
		}
		return -1
	})
	return slices.Clone(s.ring[i:])
}

// Latest returns the newest sample.
func (s *Sampler) Latest() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == 0 {
		return Sample{}, false
	}
	return s.ring[len(s.ring)-1], true
}

func (cfg Config) sample(a, b *counters) Sample {
	dt := b.at.Sub(a.at).Seconds()
	rate := func(x, y uint64) float64 {
		if y < x || dt <= 0 { // a counter reset (a device gone, a QEMU restarted)
			return 0
		}
		return float64(y-x) / dt
	}
	id, name := cfg.Identity()
	s := Sample{
		Node: id, NodeName: name, Time: b.at.UTC(),
		MemUsedBytes: b.memUsed, MemTotalBytes: b.memTotal,
		NetRxBps: rate(a.netRx, b.netRx), NetTxBps: rate(a.netTx, b.netTx),
		DiskReadBps: rate(a.diskRead, b.diskRead), DiskWriteBps: rate(a.diskWrite, b.diskWrite),
		VMs: []VMSample{},
	}
	if total := b.cpuTotal - a.cpuTotal; b.cpuTotal > a.cpuTotal {
		busy := total - min(total, b.cpuIdle-a.cpuIdle)
		s.CPUPct = 100 * float64(busy) / float64(total)
	}
	names := make([]string, 0, len(b.vms))
	for n := range b.vms {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		v := b.vms[n]
		vs := VMSample{Name: n, MemBytes: v.rss}
		if p, ok := a.vms[n]; ok && p.pid == v.pid {
			// Clock ticks are 1/100 s on Linux.
			if v.ticks >= p.ticks && dt > 0 {
				vs.CPUPct = 100 * float64(v.ticks-p.ticks) / 100 / dt / float64(max(v.cpus, 1))
			}
			vs.NetRxBps, vs.NetTxBps = rate(p.netRx, v.netRx), rate(p.netTx, v.netTx)
			vs.DiskReadBps, vs.DiskWriteBps = rate(p.diskRead, v.diskRead), rate(p.diskWrite, v.diskWrite)
		}
		s.VMs = append(s.VMs, vs)
	}
	return s
}

// read takes every counter.
func (s *Sampler) read(now time.Time) (*counters, error) {
	c := &counters{at: now, vms: map[string]vmCounters{}}
	var err error
	if c.cpuTotal, c.cpuIdle, err = readCPU(filepath.Join(s.cfg.Proc, "stat")); err != nil {
		return nil, err
	}
	if c.memUsed, c.memTotal, err = readMemory(filepath.Join(s.cfg.Proc, "meminfo")); err != nil {
		return nil, err
	}
	c.netRx, c.netTx = s.nodeNetwork()
	c.diskRead, c.diskWrite = s.nodeDisks()
	for _, vm := range s.cfg.VMs() {
		v := vmCounters{pid: vm.PID, cpus: vm.CPUs}
		v.ticks, v.rss, err = readProcess(filepath.Join(s.cfg.Proc, strconv.Itoa(vm.PID)))
		if err != nil {
			continue // it just exited
		}
		for _, tap := range vm.Taps {
			// The tap's receive is the guest's send.
			tx, _ := readUint(filepath.Join(s.cfg.Sys, "class/net", tap, "statistics/rx_bytes"))
			rx, _ := readUint(filepath.Join(s.cfg.Sys, "class/net", tap, "statistics/tx_bytes"))
			v.netRx += rx
			v.netTx += tx
		}
		if vm.BlockStats != nil {
			v.diskRead, v.diskWrite, err = vm.BlockStats()
			if err != nil {
				s.log.Debug("metrics: block stats", "vm", vm.Name, "err", err)
			}
		}
		c.vms[vm.Name] = v
	}
	return c, nil
}

// nodeNetwork sums the node's own interfaces: not loopback, not bridges
// (their ports are counted), not VMs' taps.
func (s *Sampler) nodeNetwork() (rx, tx uint64) {
	dir := filepath.Join(s.cfg.Sys, "class/net")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		name := e.Name()
		if name == "lo" || exists(filepath.Join(dir, name, "bridge")) || exists(filepath.Join(dir, name, "tun_flags")) {
			continue
		}
		r, err1 := readUint(filepath.Join(dir, name, "statistics/rx_bytes"))
		t, err2 := readUint(filepath.Join(dir, name, "statistics/tx_bytes"))
		if err1 == nil && err2 == nil {
			rx, tx = rx+r, tx+t
		}
	}
	return rx, tx
}

// nodeDisks sums the node's disks (block devices backed by a device:
// not loop, ram, nbd or device-mapper), from /proc/diskstats.
func (s *Sampler) nodeDisks() (read, written uint64) {
	f, err := os.Open(filepath.Join(s.cfg.Proc, "diskstats"))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || !exists(filepath.Join(s.cfg.Sys, "block", fields[2], "device")) {
			continue
		}
		r, _ := strconv.ParseUint(fields[5], 10, 64)
		w, _ := strconv.ParseUint(fields[9], 10, 64)
		read, written = read+r*512, written+w*512 // sectors are 512 bytes here, whatever the disk's
	}
	return read, written
}

// readCPU reads the "cpu" line of /proc/stat: all jiffies, and the idle
// ones (idle and iowait).
func readCPU(path string) (total, idle uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("%s: no cpu line", path)
	}
	for i, f := range fields[1:] {
		if i >= 8 { // guest time is already in user time
			break
		}
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", path, err)
		}
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return total, idle, nil
}

// readMemory reads MemTotal and MemAvailable from /proc/meminfo.
func readMemory(path string) (used, total uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var avail uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemTotal":
			total = n << 10
		case "MemAvailable":
			avail = n << 10
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("%s: no MemTotal", path)
	}
	return total - min(total, avail), total, nil
}

// readProcess reads a process's CPU ticks (user and system) and resident
// memory.
func readProcess(dir string) (ticks, rss uint64, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%s/stat: no command name", dir)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 22 {
		return 0, 0, fmt.Errorf("%s/stat: %d fields", dir, len(fields))
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	pages, err3 := strconv.ParseUint(fields[21], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("%s/stat: not numbers", dir)
	}
	return utime + stime, pages * uint64(os.Getpagesize()), nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// WriteMetrics writes the newest sample in Prometheus's text format.
func (s *Sampler) WriteMetrics(w io.Writer) error {
	x, ok := s.Latest()
	if !ok {
		return nil
	}
	var t Text
	node := func(name, help string, v float64) {
		t.Family(name, "gauge", help)
		t.Value(name, v, "node", x.NodeName)
	}
	node("tandem_node_cpu_percent", "CPU busy, % of all the node's CPUs.", x.CPUPct)
	node("tandem_node_memory_used_bytes", "Memory in use (total less available).", float64(x.MemUsedBytes))
	node("tandem_node_memory_total_bytes", "Memory in all.", float64(x.MemTotalBytes))
	node("tandem_node_network_receive_bytes_per_second", "Received on the node's interfaces.", x.NetRxBps)
	node("tandem_node_network_transmit_bytes_per_second", "Sent on the node's interfaces.", x.NetTxBps)
	node("tandem_node_disk_read_bytes_per_second", "Read from the node's disks.", x.DiskReadBps)
	node("tandem_node_disk_write_bytes_per_second", "Written to the node's disks.", x.DiskWriteBps)
	vm := func(name, help string, get func(VMSample) float64) {
		t.Family(name, "gauge", help)
		for _, v := range x.VMs {
			t.Value(name, get(v), "node", x.NodeName, "vm", v.Name)
		}
	}
	vm("tandem_vm_cpu_percent", "A VM's CPU use, % of its vCPUs.", func(v VMSample) float64 { return v.CPUPct })
	vm("tandem_vm_memory_bytes", "A VM's QEMU resident memory.", func(v VMSample) float64 { return float64(v.MemBytes) })
	vm("tandem_vm_network_receive_bytes_per_second", "Received by a VM.", func(v VMSample) float64 { return v.NetRxBps })
	vm("tandem_vm_network_transmit_bytes_per_second", "Sent by a VM.", func(v VMSample) float64 { return v.NetTxBps })
	vm("tandem_vm_disk_read_bytes_per_second", "Read by a VM's disks.", func(v VMSample) float64 { return v.DiskReadBps })
	vm("tandem_vm_disk_write_bytes_per_second", "Written by a VM's disks.", func(v VMSample) float64 { return v.DiskWriteBps })
	_, err := io.WriteString(w, t.String())
	return err
}
