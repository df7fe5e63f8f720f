package storage_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/nstest"
	"github.com/tandemhci/tandem/services/replica"
	"github.com/tandemhci/tandem/services/storage"
)

// These tests run the real thing: the cluster agent, front door and
// storage service of node-a and node-b and the witness, each in its own
// network namespace, with qemu-io and qemu-img as the NBD clients.

const (
	volSize   = 1 << 30
	writeSize = 64 << 10
)

type volumeEnv struct {
	t  *testing.T
	c  *clustertest.Cluster
	id string
}

func newVolumeEnv(t *testing.T) *volumeEnv {
	for _, tool := range []string{"qemu-io", "qemu-img", "stdbuf"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (make deps)", tool)
		}
	}
	c := clustertest.New(t, clustertest.Options{Storage: true, APITimeout: 30 * time.Second})
	c.Form()
	c.WaitHealthy(30 * time.Second)
	e := &volumeEnv{t: t, c: c}
	var v directory.Volume
	if _, err := c.DoRetry(context.Background(), c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/volumes",
		map[string]any{"name": "disk", "size_bytes": volSize, "node": "node-a"}, &v); err != nil {
		t.Fatal(err)
	}
	e.id = v.ID
	e.waitStatus(c.A, "node-a primary, peer connected, in sync", func(s storage.VolumeStatus) bool {
		return s.Replica.Role == "primary" && s.Replica.Peer == "connected" && s.Replica.OutOfSyncBytes == 0
	})
	return e
}

// do calls the API from the client namespace as the admin, with no time
// limit (verify and images take a while), and returns the status and body.
func (e *volumeEnv) do(method, host, path string, body io.Reader, length ...int64) (int, []byte) {
	e.t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: e.c.ClientNS.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, err := http.NewRequest(method, "https://"+host+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(length) > 0 {
		req.ContentLength = length[0]
	}
	req.SetBasicAuth(e.c.Admin, e.c.Password)
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// status is the volume's status as m's storage service reports it.
func (e *volumeEnv) status(m *clustertest.Member) (storage.VolumeStatus, error) {
	var list []storage.VolumeStatus
	if _, err := e.c.Do(context.Background(), e.c.ClientNS, "GET", m.IP, "/api/v1/storage/volumes", nil, &list); err != nil {
		return storage.VolumeStatus{}, err
	}
	for _, s := range list {
		if s.Name == "disk" {
			return s, nil
		}
	}
	return storage.VolumeStatus{}, fmt.Errorf("%s has no copy of disk", m.Name)
}

func (e *volumeEnv) waitStatus(m *clustertest.Member, what string, cond func(storage.VolumeStatus) bool) storage.VolumeStatus {
	e.t.Helper()
	var last storage.VolumeStatus
	var lastErr error
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		last, lastErr = e.status(m)
		if lastErr == nil && cond(last) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("%s: waited for %s: last status %+v, error %v\n%s", m.Name, what, last, lastErr, tailLog(m))
	return last
}

func tailLog(m *clustertest.Member) string {
	l := m.Log()
	if len(l) > 6000 {
		l = l[len(l)-6000:]
	}
	return l
}

func (e *volumeEnv) dataFile(m *clustertest.Member) string {
	return filepath.Join(m.Dir, "volumes", e.id+".data")
}

func (e *volumeEnv) nbdURL(m *clustertest.Member) string {
	return "nbd+unix:///disk?socket=" + m.NBDSocket()
}

// promote makes m the volume's primary through the API.
func (e *volumeEnv) promote(m *clustertest.Member, force bool) {
	e.t.Helper()
	if _, err := e.c.DoRetry(context.Background(), e.c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/volumes/disk/primary",
		map[string]any{"node": m.Name, "force": force}, nil); err != nil {
		e.t.Fatal(err)
	}
}

// ackedWrite is a write qemu-io reported done.
type ackedWrite struct {
	off     int64
	pattern byte
}

var wroteRE = regexp.MustCompile(`^wrote (\d+)/(\d+) bytes at offset (\d+)`)

// verifyingWriter runs qemu-io in m's namespace writing n 64 KiB blocks
// with a pattern each, one after the other, and records every write
// qemu-io reports acknowledged, as it reports it (line-buffered, so a
// power cut loses none of the record).
type verifyingWriter struct {
	mu      sync.Mutex
	acked   []ackedWrite
	pending map[int64]byte // offset → pattern of every write issued
	done    chan error
	cmd     *exec.Cmd
}

func pattern(i int) byte { return byte(i%250) + 1 }

func offsetOf(i int) int64 { return int64(i%4096) * writeSize * 3 % volSize }

func startWriter(t *testing.T, m *clustertest.Member, url string, first, n int) *verifyingWriter {
	args := []string{"stdbuf", "-oL", "qemu-io", "-f", "raw"}
	w := &verifyingWriter{pending: map[int64]byte{}, done: make(chan error, 1)}
	for i := first; i < first+n; i++ {
		args = append(args, "-c", fmt.Sprintf("write -P %d %d %d", pattern(i), offsetOf(i), writeSize))
		w.pending[offsetOf(i)] = pattern(i)
	}
	args = append(args, url)
	w.cmd = m.NS.Command(args...)
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w.cmd.Stderr = w.cmd.Stdout
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if mm := wroteRE.FindStringSubmatch(sc.Text()); mm != nil {
				off, _ := strconv.ParseInt(mm[3], 10, 64)
				w.mu.Lock()
				w.acked = append(w.acked, ackedWrite{off: off, pattern: w.pending[off]})
				w.mu.Unlock()
			}
		}
		w.done <- w.cmd.Wait()
	}()
	return w
}

func (w *verifyingWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *verifyingWriter) waitAcked(t *testing.T, n int) {
	nstest.WaitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged writes", n), func() bool { return w.count() >= n })
}

// expected is what each written offset must hold: the last acknowledged
// write there. The write in flight when the primary died may or may not
// have landed: its offset may hold either pattern.
func (w *verifyingWriter) expected() (map[int64]byte, map[int64]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	want := map[int64]byte{}
	for _, a := range w.acked {
		want[a.off] = a.pattern
	}
	return want, w.pending
}

// readVolume reads the whole volume through m's NBD export with qemu-img.
func readVolume(t *testing.T, m *clustertest.Member, url string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "read.raw")
	if b, err := m.NS.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", url, out).CombinedOutput(); err != nil {
		t.Fatalf("read the volume on %s: %v\n%s", m.Name, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkAcked(t *testing.T, data []byte, w *verifyingWriter, inFlight int) {
	t.Helper()
	want, _ := w.expected()
	bad := 0
	for off, p := range want {
		blk := data[off : off+writeSize]
		if !bytes.Equal(blk, bytes.Repeat([]byte{p}, writeSize)) {
			bad++
			if bad < 5 {
				t.Errorf("acknowledged write at %d (pattern %d) is not on the new primary: found %d…", off, p, blk[0])
			}
		}
	}
	if bad > inFlight {
		t.Fatalf("%d of %d acknowledged writes lost", bad, len(want))
	}
}

// TestPrimaryDiesMidStream: kill -9 of the primary's storage service, then
// a power cut of the whole primary, each while qemu-io writes: the other
// node's copy holds every acknowledged write and serves it.
func TestPrimaryDiesMidStream(t *testing.T) {
	e := newVolumeEnv(t)
	c := e.c

	// 1. kill -9 node-a's storage service mid-stream.
	w := startWriter(t, c.A, e.nbdURL(c.A), 0, 4000)
	w.waitAcked(t, 300)
	c.A.KillProcess("tandem-storage")
	<-w.done
	n := w.count()
	if n >= 4000 {
		t.Fatal("every write finished before the kill: the test proved nothing")
	}
	t.Logf("storage service on node-a killed after %d acknowledged writes", n)
	e.promote(c.B, false)
	e.waitStatus(c.B, "node-b primary", func(s storage.VolumeStatus) bool { return s.Replica.Role == "primary" })
	checkAcked(t, readVolume(t, c.B, e.nbdURL(c.B)), w, 0)

	// node-a's service comes back as the secondary and catches up.
	c.A.StartStorage()
	e.waitStatus(c.B, "node-a back in sync", func(s storage.VolumeStatus) bool {
		return s.Replica.Peer == "connected" && s.Replica.OutOfSyncBytes == 0
	})

	// 2. Power cut of node-b (now the primary) mid-stream.
	w = startWriter(t, c.B, e.nbdURL(c.B), 4000, 4000)
	w.waitAcked(t, 300)
	c.B.PowerOff()
	n = w.count()
	t.Logf("node-b powered off after %d acknowledged writes", n)
	e.promote(c.A, false)
	e.waitStatus(c.A, "node-a primary alone", func(s storage.VolumeStatus) bool { return s.Replica.Role == "primary" })
	checkAcked(t, readVolume(t, c.A, e.nbdURL(c.A)), w, 0)

	// node-b comes back: it is the secondary now, and after the resync
	// both copies are the same bytes.
	c.B.PowerOn()
	e.waitStatus(c.A, "node-b back in sync", func(s storage.VolumeStatus) bool {
		return s.Replica.Peer == "connected" && s.Replica.OutOfSyncBytes == 0
	})
	st := e.waitStatus(c.B, "node-b secondary", func(s storage.VolumeStatus) bool { return s.Replica.Role == "secondary" })
	t.Logf("node-b: %+v", st.Replica)
	sameCopies(t, e)
}

// sameCopies compares the two backing files byte for byte, once the
// primary has flushed.
func sameCopies(t *testing.T, e *volumeEnv) {
	t.Helper()
	for _, m := range []*clustertest.Member{e.c.A, e.c.B} {
		m.NS.Command("sync").Run()
	}
	a, err := os.ReadFile(e.dataFile(e.c.A))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(e.dataFile(e.c.B))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("copies of %d and %d bytes", len(a), len(b))
	}
	for i := 0; i < len(a); i += replica.BlockSize {
		if !bytes.Equal(a[i:i+replica.BlockSize], b[i:i+replica.BlockSize]) {
			t.Fatalf("the copies differ in the block at %d", i)
		}
	}
}

// TestResyncCopiesOnlyWhatChanged: node-b is cut off while 1% of the
// 1 GiB volume changes on node-a; when it returns, about 1% is copied,
// and the copies are equal.
func TestResyncCopiesOnlyWhatChanged(t *testing.T) {
	e := newVolumeEnv(t)
	c := e.c
	// Something written while both are up, so "equal" means something.
	w := startWriter(t, c.A, e.nbdURL(c.A), 0, 200)
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	before := e.waitStatus(c.A, "in sync", func(s storage.VolumeStatus) bool { return s.Replica.OutOfSyncBytes == 0 })

	c.B.LinksDown()
	// 1% of the volume: 164 writes of 64 KiB at distinct offsets.
	const changes = volSize / 100 / writeSize
	w = startWriter(t, c.A, e.nbdURL(c.A), 10000, changes)
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	if w.count() != changes {
		t.Fatalf("%d of %d writes acknowledged with node-b away (node-a has quorum with the witness)", w.count(), changes)
	}
	alone := e.waitStatus(c.A, "peer outdated", func(s storage.VolumeStatus) bool { return s.Replica.Peer == "outdated" })
	t.Logf("alone: %d bytes out of sync", alone.Replica.OutOfSyncBytes)
	c.B.LinksUp()
	after := e.waitStatus(c.A, "resynced", func(s storage.VolumeStatus) bool {
		return s.Replica.Peer == "connected" && s.Replica.OutOfSyncBytes == 0 && s.Replica.ResyncedBytes > before.Replica.ResyncedBytes
	})
	copied := after.Replica.ResyncedBytes - before.Replica.ResyncedBytes
	ratio := float64(copied) / volSize
	t.Logf("resync copied %d bytes, %.2f%% of the volume", copied, 100*ratio)
	if ratio > 0.015 || copied < changes*writeSize {
		t.Errorf("resync copied %d bytes for %d changed", copied, changes*writeSize)
	}
	sameCopies(t, e)
	var v directory.Volume
	if _, err := c.DoRetry(context.Background(), c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/volumes/disk", nil, &v); err != nil {
		t.Fatal(err)
	}
	if v.Copies[nodeID(t, c, c.B)] != directory.CopyUpToDate {
		t.Errorf("after the resync the directory says node-b's copy is %q", v.Copies[nodeID(t, c, c.B)])
	}
}

func nodeID(t *testing.T, c *clustertest.Cluster, m *clustertest.Member) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir, "cluster", "member-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestBitFlipsAreRepaired: flipped bits in the primary's backing file
// are caught on read and repaired from the peer; in the secondary's, by
// verify. The client never reads the bad data.
func TestBitFlipsAreRepaired(t *testing.T) {
	e := newVolumeEnv(t)
	c := e.c
	w := startWriter(t, c.A, e.nbdURL(c.A), 0, 64)
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	want, _ := w.expected()
	flip := func(m *clustertest.Member, off int64) {
		f, err := os.OpenFile(e.dataFile(m), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		f.ReadAt(b, off)
		b[0] ^= 0x40
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	flip(c.A, offsetOf(3)+100)
	flip(c.B, offsetOf(7)+5000)
	// The client reads every written block with its pattern checked.
	for off, p := range want {
		out, err := c.A.NS.Command("qemu-io", "-f", "raw", "-c", fmt.Sprintf("read -P %d %d %d", p, off, writeSize), e.nbdURL(c.A)).CombinedOutput()
		if err != nil || strings.Contains(string(out), "Pattern verification failed") || strings.Contains(string(out), "failed") {
			t.Fatalf("read at %d: %v\n%s", off, err, out)
		}
	}
	st, _ := e.status(c.A)
	if st.Replica.ChecksumErrors < 1 || st.Replica.Repaired < 1 {
		t.Errorf("the primary's bad block was not caught and repaired: %+v", st.Replica)
	}
	// Asked of node-b: forwarded to the primary.
	code, body := e.do("POST", c.B.IP, "/api/v1/storage/volumes/disk/verify", nil)
	var rep replica.VerifyReport
	if err := json.Unmarshal(body, &rep); code != 200 || err != nil {
		t.Fatalf("verify: %d %s", code, body)
	}
	t.Logf("verify: %+v", rep)
	if rep.PeerRepaired < 1 {
		t.Errorf("verify repaired nothing: %+v", rep)
	}
	sameCopies(t, e)
}

// TestNoQuorumNoWrites: the primary cut off from the cluster accepts no
// write; the other node, promoted, carries on; when the old primary
// returns it follows the new one and takes its data.
func TestNoQuorumNoWrites(t *testing.T) {
	e := newVolumeEnv(t)
	c := e.c
	c.A.LinksDown()
	w := startWriter(t, c.A, e.nbdURL(c.A), 0, 3)
	if err := <-w.done; err != nil {
		t.Logf("qemu-io on the isolated primary: %v", err)
	}
	if n := w.count(); n != 0 {
		t.Fatalf("the isolated primary acknowledged %d writes without quorum", n)
	}
	e.promote(c.B, false)
	e.waitStatus(c.B, "node-b primary", func(s storage.VolumeStatus) bool { return s.Replica.Role == "primary" })
	w = startWriter(t, c.B, e.nbdURL(c.B), 100, 16)
	if err := <-w.done; err != nil || w.count() != 16 {
		t.Fatalf("node-b with quorum: %d writes, %v", w.count(), err)
	}
	c.A.LinksUp()
	e.waitStatus(c.A, "node-a secondary", func(s storage.VolumeStatus) bool { return s.Replica.Role == "secondary" })
	e.waitStatus(c.B, "node-a in sync", func(s storage.VolumeStatus) bool {
		return s.Replica.Peer == "connected" && s.Replica.OutOfSyncBytes == 0
	})
	checkAcked(t, readVolume(t, c.B, e.nbdURL(c.B)), w, 0)
	sameCopies(t, e)
}

// TestImagesInAndOut: a qcow2 image uploaded through the API lands on
// both copies; exporting gives it back; bad uploads are refused clearly.
func TestImagesInAndOut(t *testing.T) {
	e := newVolumeEnv(t)
	c := e.c
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	content := bytes.Repeat([]byte("tandem image "), 300000)
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "src.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, q).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	do := e.do
	f, _ := os.Open(q)
	// Sent to node-b: forwarded to the primary.
	code, body := do("PUT", c.B.IP, "/api/v1/storage/volumes/disk/image?format=qcow2", f)
	f.Close()
	if code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	got := readVolume(t, c.A, e.nbdURL(c.A))
	if !bytes.Equal(got[:len(content)], content) {
		t.Fatal("the imported image is not on the volume")
	}
	e.waitStatus(c.A, "in sync", func(s storage.VolumeStatus) bool { return s.Replica.OutOfSyncBytes == 0 })
	sameCopies(t, e)

	code, body = do("GET", c.A.IP, "/api/v1/storage/volumes/disk/image?format=qcow2", nil)
	if code != 200 {
		t.Fatalf("export: %d %s", code, body[:min(len(body), 300)])
	}
	out := filepath.Join(dir, "out.qcow2")
	os.WriteFile(out, body, 0o644)
	back := filepath.Join(dir, "back.raw")
	if o, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", out, back).CombinedOutput(); err != nil {
		t.Fatalf("the export is not a qcow2 stock qemu-img reads: %v\n%s", err, o)
	}
	bb, _ := os.ReadFile(back)
	if len(bb) != volSize || !bytes.Equal(bb[:len(content)], content) {
		t.Fatalf("export of %d bytes does not hold the image", len(bb))
	}

	for name, tc := range map[string]struct {
		path string
		body []byte
		code int
	}{
		"no format":        {"/api/v1/storage/volumes/disk/image", []byte("x"), 400},
		"not a qcow2":      {"/api/v1/storage/volumes/disk/image?format=qcow2", []byte("plain bytes, no qcow2 header"), 400},
		"no such volume":   {"/api/v1/storage/volumes/nope/image?format=raw", []byte("x"), 404},
		"larger than disk": {"/api/v1/storage/volumes/disk/image?format=raw", nil, 413},
	} {
		var code int
		var body []byte
		if tc.body == nil {
			// Announced larger than any image of the volume: refused
			// before a byte is stored.
			code, body = do("PUT", c.A.IP, tc.path, io.LimitReader(zeroReader{}, 2*volSize+65<<20), 2*volSize+65<<20)
		} else {
			code, body = do("PUT", c.A.IP, tc.path, bytes.NewReader(tc.body))
		}
		var eb struct {
			Error struct{ Message string } `json:"error"`
		}
		json.Unmarshal(body, &eb)
		if code != tc.code || eb.Error.Message == "" {
			t.Errorf("%s: %d %s, want %d with a message", name, code, body, tc.code)
		}
	}
	// The volume still serves, unchanged.
	got = readVolume(t, c.A, e.nbdURL(c.A))
	if !bytes.Equal(got[:len(content)], content) {
		t.Error("a refused upload changed the volume")
	}

	// A clone of the volume (a template's disk for a new VM): made where
	// the source is primary, its data copied in and replicated.
	ctx := context.Background()
	for name, tc := range map[string]struct {
		body map[string]any
		code int
	}{
		"no such source":     {map[string]any{"name": "c1", "clone_from": "nope"}, 404},
		"where it is not":    {map[string]any{"name": "c1", "clone_from": "disk", "node": "node-b"}, 400},
		"smaller than it is": {map[string]any{"name": "c1", "clone_from": "disk", "size_bytes": volSize / 2}, 400},
	} {
		if code, err := c.Do(ctx, c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/volumes", tc.body, nil); code != tc.code {
			t.Errorf("clone %s: %d %v, want %d", name, code, err, tc.code)
		}
	}
	var clone directory.Volume
	if _, err := c.DoRetry(ctx, c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/volumes", map[string]any{"name": "copy", "clone_from": "disk"}, &clone); err != nil {
		t.Fatal(err)
	}
	if clone.SizeBytes != volSize || clone.Primary != nodeID(t, c, c.A) || !clone.Copying() {
		t.Errorf("clone as created: %+v", clone)
	}
	nstest.WaitFor(t, 2*time.Minute, "the clone copied", func() bool {
		_, err := c.Do(ctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/volumes/copy", nil, &clone)
		return err == nil && !clone.Copying()
	})
	cloned := readVolume(t, c.A, "nbd+unix:///copy?socket="+c.A.NBDSocket())
	if !bytes.Equal(cloned, got) {
		t.Error("the clone does not hold the source's data")
	}
	copyOf := func(m *clustertest.Member) []byte {
		m.NS.Command("sync").Run()
		b, err := os.ReadFile(filepath.Join(m.Dir, "volumes", clone.ID+".data"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	nstest.WaitFor(t, time.Minute, "both copies of the clone equal", func() bool {
		return bytes.Equal(copyOf(c.A), copyOf(c.B))
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
