package replica

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/nbd"
)

// TestBenchStorage is `make bench-storage`: fio against a replicated volume
// (primary and secondary copies on this machine, replicating over TCP) and
// against qemu-nbd serving the same kind of file unreplicated, side by side;
// then resync of 1% against a full sync. TANDEM_BENCH=storage runs it;
// TANDEM_BENCH_SECONDS sets each fio run's length (default 10).
func TestBenchStorage(t *testing.T) {
	if os.Getenv("TANDEM_BENCH") != "storage" {
		t.Skip("TANDEM_BENCH=storage runs the storage benchmark")
	}
	for _, tool := range []string{"fio", "qemu-nbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	seconds, rounds := 10, 3
	if s := os.Getenv("TANDEM_BENCH_SECONDS"); s != "" {
		fmt.Sscan(s, &seconds)
	}
	if s := os.Getenv("TANDEM_BENCH_ROUNDS"); s != "" {
		fmt.Sscan(s, &rounds)
	}
	const size = 1 << 30
	dir := t.TempDir()

	// Unreplicated: qemu-nbd on a sparse raw file, its default cache mode
	// (writeback), as a VM's disk would be served without Tandem.
	plain := filepath.Join(dir, "plain.raw")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(plain, size); err != nil {
		t.Fatal(err)
	}
	plainSock := filepath.Join(dir, "plain.sock")
	qnbd := exec.Command("qemu-nbd", "-t", "-k", plainSock, "-f", "raw", "-x", "vol", "--shared=4", plain)
	qnbd.Stderr = os.Stderr
	if err := qnbd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { qnbd.Process.Kill(); qnbd.Wait() }()

	// Replicated: two copies, their stream over loopback TCP. The primary's
	// copy is on the same disk as qemu-nbd's file; the secondary's would be
	// on the peer node's own disk, so here it is on another device: tmpfs
	// (otherwise both copies' writeback throttles one disk twice as hard,
	// which no real box does). The peer's CPU work still shares this
	// machine's cores with the primary's.
	peerDir := peerDevice(t)
	a, b := newNode(t, "a", size, 7), newNodeIn(t, filepath.Join(peerDir, "b"), "b", size, 7)
	a.vol.Promote(1, false)
	s := connect(t, a, b, false)
	waitInSync(t, a, b)
	replSock := filepath.Join(dir, "repl.sock")
	serveNBD(t, replSock, a.vol)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(plainSock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-nbd did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rtt := loopbackRTT(t)

	type workload struct {
		name    string
		rw      string
		bs      string
		depth   int
		measure func(fioJob) float64
	}
	bw := func(j fioJob) float64 { return j.bytesPerSecond() }
	iops := func(j fioJob) float64 { return j.iops() }
	lat := func(j fioJob) float64 { return j.meanLatencyMicros() }
	workloads := []workload{
		{"seq1m_write", "write", "1m", 16, bw},
		{"seq1m_read", "read", "1m", 16, bw},
		{"rand4k_qd32_write", "randwrite", "4k", 32, iops},
		{"rand4k_qd1_write", "randwrite", "4k", 1, lat},
	}
	// Each workload runs `rounds` times on each side, alternating, and the
	// median of each side counts: page-cache writeback makes single runs
	// of write workloads vary by ±20%.
	results := map[string][2]float64{}
	for _, w := range workloads {
		var runs [2][]float64
		for round := 0; round < rounds; round++ {
			for i, sock := range []string{plainSock, replSock} {
				// each run starts with no dirty pages left by the one before
				syscall.Sync()
				runs[i] = append(runs[i], w.measure(runFio(t, sock, w.rw, w.bs, w.depth, seconds)))
			}
		}
		r := [2]float64{median(runs[0]), median(runs[1])}
		results[w.name] = r
		unit := map[string]string{"seq1m_write": "MiB/s", "seq1m_read": "MiB/s", "rand4k_qd32_write": "IOPS", "rand4k_qd1_write": "µs mean"}[w.name]
		scale := 1.0
		if unit == "MiB/s" {
			scale = 1.0 / (1 << 20)
		}
		t.Logf("%-18s qemu-nbd %10.1f  replicated %10.1f %s  ratio %.3f  (median of %d runs of %d s)", w.name, r[0]*scale, r[1]*scale, unit, r[1]/r[0], rounds, seconds)
	}
	t.Logf("loopback TCP round trip: %.1f µs; QD1 write latency target: ≤ %.1f µs (unreplicated + round trip + 20%%)",
		rtt, (results["rand4k_qd1_write"][0]+rtt)*1.2)
	st := a.vol.Status()
	t.Logf("replicated volume: writes p50 %d µs p99 %d µs; reads p50 %d µs p99 %d µs (histogram bucket bounds)",
		st.Writes.P50us, st.Writes.P99us, st.Reads.P50us, st.Reads.P99us)
	s.stop()

	// Resync: a full sync of the written volume to an empty copy, then
	// 1% changed while the peer is away.
	c := newNodeIn(t, filepath.Join(peerDir, "c"), "c", size, NoData)
	start := time.Now()
	s2 := connect(t, a, c, false)
	waitInSync(t, a, c)
	full := time.Since(start)
	s2.stop()
	for i := int64(0); i < size/100; i += 64 << 10 {
		off := (i * 7919) % (size - 64<<10) &^ (BlockSize - 1)
		if err := a.vol.WriteAt(make([]byte, 64<<10), off, false); err != nil {
			t.Fatal(err)
		}
	}
	dirty := a.vol.store.OutOfSyncBytes()
	start = time.Now()
	connect(t, a, c, false)
	waitInSync(t, a, c)
	partial := time.Since(start)
	t.Logf("resync: full sync of %d MiB in %.2fs; %.2f%% dirty (%d KiB) in %.3fs", size>>20, full.Seconds(),
		100*float64(dirty)/size, dirty>>10, partial.Seconds())

	// Memory: the out-of-sync bitmap is 1 bit per 4 KiB block, the
	// activity log 1 bit per 4 MiB extent; checksums (4 bytes per block)
	// stay on disk, mapped on demand.
	// Go heap per open volume: 16 more volumes open, measured after GC.
	var m0, m1 runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC() // and empty the buffer pools
	}
	runtime.ReadMemStats(&m0)
	more := make([]*node, 16)
	for i := range more {
		more[i] = newNode(t, fmt.Sprintf("m%d", i), size, 7)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perVolume := (int64(m1.HeapInuse) - int64(m0.HeapInuse)) / int64(len(more))
	runtime.KeepAlive(more)
	const tib = 1 << 40
	_, _, il, ol, cl := metaLayout(tib)
	t.Logf("memory: %.1f KiB of Go heap per open volume; per TiB of volume: out-of-sync bitmap %d MiB + activity log %d KiB (mapped), checksums %d MiB on disk (mapped on demand)",
		float64(perVolume)/1024, ol>>20, il>>10, cl>>20)

	t.Logf("seq1m_write_ratio=%.3f seq1m_read_ratio=%.3f rand4k_qd32_write_ratio=%.3f rand4k_qd1_write_latency_us=%.1f unreplicated_qd1_write_latency_us=%.1f resync_1pct_ratio=%.4f",
		results["seq1m_write"][1]/results["seq1m_write"][0],
		results["seq1m_read"][1]/results["seq1m_read"][0],
		results["rand4k_qd32_write"][1]/results["rand4k_qd32_write"][0],
		results["rand4k_qd1_write"][1], results["rand4k_qd1_write"][0],
		partial.Seconds()/full.Seconds())
}

func median(x []float64) float64 {
	y := slices.Clone(x)
	slices.Sort(y)
	return y[len(y)/2]
}

// peerDevice is a folder on another device than the test's temporary one.
func peerDevice(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "tandem-bench-peer-")
	if err != nil {
		t.Fatalf("a folder on tmpfs for the peer's copy: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, sub := range []string{"b", "c"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func serveNBD(t *testing.T, sock string, v *Volume) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := nbd.New(nbd.Config{Lookup: func(string) (nbd.Export, bool) {
		return nbd.Export{Backend: v, MinBlock: BlockSize}, true
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// loopbackRTT measures a TCP ping-pong of a small frame on loopback, in µs.
func loopbackRTT(t *testing.T) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			c.Write(buf[:32])
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	const n = 2000
	start := time.Now()
	for i := 0; i < n; i++ {
		c.Write(buf[:32])
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	return float64(time.Since(start).Microseconds()) / n
}

// fioJob is the part of fio's JSON output the benchmark reads.
type fioJob struct {
	Read  fioStats `json:"read"`
	Write fioStats `json:"write"`
}

type fioStats struct {
	BwBytes float64 `json:"bw_bytes"`
	IOPS    float64 `json:"iops"`
	ClatNs  struct {
		Mean float64 `json:"mean"`
	} `json:"clat_ns"`
	LatNs struct {
		Mean float64 `json:"mean"`
	} `json:"lat_ns"`
}

func (j fioJob) stats() fioStats {
	if j.Write.IOPS > 0 {
		return j.Write
	}
	return j.Read
}
func (j fioJob) bytesPerSecond() float64    { return j.stats().BwBytes }
func (j fioJob) iops() float64              { return j.stats().IOPS }
func (j fioJob) meanLatencyMicros() float64 { return j.stats().LatNs.Mean / 1000 }

func runFio(t *testing.T, sock, rw, bs string, depth, seconds int) fioJob {
	t.Helper()
	args := []string{"--name=bench", "--ioengine=nbd", "--uri=nbd+unix:///vol?socket=" + sock,
		"--rw=" + rw, "--bs=" + bs, fmt.Sprintf("--iodepth=%d", depth), "--size=1g",
		"--time_based", fmt.Sprintf("--runtime=%d", seconds), "--output-format=json", "--randseed=42"}
	if rw == "read" {
		args = append(args, "--ramp_time=1")
	}
	out, err := exec.Command("fio", args...).Output()
	if err != nil {
		t.Fatalf("fio %v: %v", args, err)
	}
	// the nbd engine prints a line of its own before the JSON
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var res struct {
		Jobs []fioJob `json:"jobs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Jobs) != 1 {
		t.Fatalf("fio output: %v\n%s", err, out)
	}
	return res.Jobs[0]
}
