package web_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/nstest"
	"github.com/tandemhci/tandem/web"
)

// TestBenchAPI is make bench-api (it runs only with TANDEM_BENCH=api): a
// real cluster in namespaces, the test guest running, and from the client
// host:
//   - the API's latency at 100 concurrent clients (each with its own API
//     token and connection), on reads (VM list, cluster status, the VM
//     manager's list, each node's stats) and on writes (a label each:
//     one raft commit per request), TANDEM_BENCH_SECONDS (default 20) each;
//   - the console's first load in Debian's chromium: the bytes on the wire
//     (gzip) and the time until the login form, then until the dashboard
//     shows the nodes, with an empty cache;
//   - keystroke-to-echo on the serial console websocket.
//
// Its last line is api_read_p99_ms=… api_write_p99_ms=… console_first_load_kb=…
func TestBenchAPI(t *testing.T) {
	if os.Getenv("TANDEM_BENCH") != "api" {
		t.Skip("run with make bench-api (TANDEM_BENCH=api)")
	}
	seconds := 20
	if v, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	const clients = 100
	node, chromium := browserTools(t)
	root, _ := filepath.Abs("..")
	c := clustertest.New(t, clustertest.Options{Storage: true, VMs: true, BootDir: clustertest.TestGuest(t), QEMU: clustertest.TandemQEMU(t), APITimeout: 60 * time.Second})
	c.Form()
	c.WaitHealthy(30 * time.Second)
	ctx := context.Background()

	// The test guest, for the console's websocket and for the VM
	// manager's list to hold a VM.
	must := func(method, path string, in, out any) {
		t.Helper()
		if _, err := c.DoRetry(ctx, c.ClientNS, method, clustertest.ClusterIP, path, in, out); err != nil {
			t.Fatal(err)
		}
	}
	must("POST", "/api/v1/volumes", map[string]any{"name": "bench-disk", "size_bytes": 16 << 20, "node": c.A.Name}, nil)
	must("POST", "/api/v1/vms", map[string]any{
		"name": "bench", "cpus": 1, "memory_mib": 128, "disks": []map[string]any{{"volume": "bench-disk"}},
		"nics": []map[string]any{{"network": "lan"}}, "start": true, "node": c.A.Name,
		"boot": map[string]any{"kernel": "vmlinux", "initrd": "initrd.gz", "cmdline": "quiet cryptomgr.notests tandem.ip=" + clustertest.Subnet + "200/24"},
	}, nil)

	// One API token per client, as automation would use.
	tokens := make([]string, clients)
	for i := range tokens {
		var tok cluster.APITokenView
		must("POST", "/api/v1/tokens", map[string]any{"name": fmt.Sprintf("bench-%d", i), "role": "operator"}, &tok)
		tokens[i] = tok.Secret
	}
	var h cluster.Health
	must("GET", "/api/v1/cluster/health", nil, &h)
	reads := []string{"/api/v1/vms", "/api/v1/cluster/status", "/api/v1/vmm/vms", "/api/v1/volumes"}
	for _, m := range h.Members {
		if m.Role == "node" {
			reads = append(reads, "/api/v1/vmm/stats?node="+m.ID+"&since="+time.Now().Format(time.RFC3339))
		}
	}
	nstest.WaitFor(t, 120*time.Second, "the guest's serial prompt", func() bool {
		return strings.Contains(serialLog(t, c, tokens[0]), "testguest# ")
	})

	read := load(t, c, tokens, time.Duration(seconds)*time.Second, func(i, n int) (string, string, []byte) {
		return "GET", reads[(i+n)%len(reads)], nil
	})
	write := load(t, c, tokens, time.Duration(seconds)*time.Second, func(i, n int) (string, string, []byte) {
		return "PUT", fmt.Sprintf("/api/v1/labels/bench-%d", i), []byte(fmt.Sprintf(`{"value":"%d"}`, n))
	})
	t.Logf("API at %d concurrent clients, %d s each, through the cluster IP (the leader):", clients, seconds)
	t.Logf("  reads  (%s): %s", strings.Join(reads[:4], ", ")+", stats", read)
	read.logByPath(t)
	t.Logf("  writes (PUT /api/v1/labels/…, a raft commit each): %s", write)

	echo := keystrokes(t, c, tokens[0], 50)
	t.Logf("serial console keystroke to echo over the websocket (Go client, 50 keys): median %.1f ms, p95 %.1f ms", echo.pct(50), echo.pct(95))

	staticKB, err := web.FirstLoadBytes()
	if err != nil {
		t.Fatal(err)
	}
	browser := firstLoad(t, c, node, chromium, root)
	t.Logf("console first load in chromium, empty cache: %.1f KB on the wire (%d requests); login form after %.0f ms; dashboard with the nodes after login %.0f ms",
		browser["FIRST_LOAD_BYTES"]/1024, int(browser["FIRST_LOAD_REQUESTS"]), browser["LOGIN_READY_MS"], browser["DASHBOARD_READY_MS"])
	t.Logf("console first load by the import graph (web.FirstLoadBytes, gzip): %.1f KB", float64(staticKB)/1024)
	fmt.Printf("api_read_p99_ms=%.1f api_write_p99_ms=%.1f console_first_load_kb=%.1f\n", read.pct(99), write.pct(99), browser["FIRST_LOAD_BYTES"]/1024)
}

// latencies are request times in milliseconds, with the errors, and
// the times by endpoint (its path without the query).
type latencies struct {
	ms     []float64
	errors int
	took   time.Duration
	byPath map[string][]float64
}

func (l *latencies) pct(p float64) float64 {
	if len(l.ms) == 0 {
		return 0
	}
	s := slices.Clone(l.ms)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func (l *latencies) String() string {
	return fmt.Sprintf("%d requests (%.0f/s), %d errors, p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		len(l.ms), float64(len(l.ms))/l.took.Seconds(), l.errors, l.pct(50), l.pct(99), l.pct(100))
}

// logByPath logs each endpoint's p50 and p99.
func (l *latencies) logByPath(t *testing.T) {
	paths := make([]string, 0, len(l.byPath))
	for p := range l.byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		one := &latencies{ms: l.byPath[p]}
		t.Logf("    %-28s p50 %.1f ms, p99 %.1f ms", p, one.pct(50), one.pct(99))
	}
}

// load runs one client per token for d, each on its own connection,
// request after request.
func load(t *testing.T, c *clustertest.Cluster, tokens []string, d time.Duration, req func(client, n int) (method, path string, body []byte)) *latencies {
	var mu sync.Mutex
	all := &latencies{byPath: map[string][]float64{}}
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
				DialContext: c.ClientNS.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxConnsPerHost: 1,
			}}
			defer hc.CloseIdleConnections()
			var mine []float64
			mineBy := map[string][]float64{}
			errs := 0
			for n := 0; time.Now().Before(deadline); n++ {
				method, path, body := req(i, n)
				r, _ := http.NewRequest(method, "https://"+clustertest.ClusterIP+path, bytes.NewReader(body))
				r.Header.Set("Authorization", "Bearer "+tok)
				if body != nil {
					r.Header.Set("Content-Type", "application/json")
				}
				sent := time.Now()
				resp, err := hc.Do(r)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode/100 != 2 {
					errs++
					continue
				}
				took := float64(time.Since(sent).Microseconds()) / 1000
				mine = append(mine, took)
				key, _, _ := strings.Cut(path, "?")
				if strings.HasPrefix(key, "/api/v1/labels/") {
					key = "/api/v1/labels/…"
				}
				mineBy[key] = append(mineBy[key], took)
			}
			mu.Lock()
			all.ms = append(all.ms, mine...)
			for k, v := range mineBy {
				all.byPath[k] = append(all.byPath[k], v...)
			}
			all.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	all.took = time.Since(start)
	return all
}

// serialLog is the end of the bench VM's serial output.
func serialLog(t *testing.T, c *clustertest.Cluster, token string) string {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: c.ClientNS.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	r, _ := http.NewRequest("GET", "https://"+clustertest.ClusterIP+"/api/v1/vmm/vms/bench/serial.log", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(r)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// keystrokes types n characters on the bench VM's serial console and
// times each one's echo.
func keystrokes(t *testing.T, c *clustertest.Cluster, token string, n int) *latencies {
	d := websocket.Dialer{NetDialContext: c.ClientNS.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial("wss://"+clustertest.ClusterIP+"/api/v1/vmm/vms/bench/console/serial", http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	got := make(chan []byte, 64)
	go func() {
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			got <- msg
		}
	}()
	drain := func() {
		for {
			select {
			case <-got:
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("\r"))
	drain()
	l := &latencies{}
	start := time.Now()
	for i := range n {
		key := byte('a' + i%26)
		sent := time.Now()
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte{key}); err != nil {
			t.Fatal(err)
		}
		for echoed := false; !echoed; {
			select {
			case msg, ok := <-got:
				if !ok {
					t.Fatal("the console closed")
				}
				echoed = bytes.IndexByte(msg, key) >= 0
			case <-time.After(5 * time.Second):
				t.Fatalf("no echo of %q", key)
			}
		}
		l.ms = append(l.ms, float64(time.Since(sent).Microseconds())/1000)
	}
	l.took = time.Since(start)
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("\r"))
	return l
}

// firstLoad runs e2e/firstload.js in the client namespace and returns
// the figures it prints (NAME=value lines).
func firstLoad(t *testing.T, c *clustertest.Cluster, node, chromium, root string) map[string]float64 {
	spki := nodeKeys(t, c)
	cmd := c.ClientNS.Command(node, filepath.Join(root, "web", "e2e", "firstload.js"))
	cmd.Dir = filepath.Join(root, "web", "e2e")
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "CHROMIUM=" + chromium,
		"TANDEM_URL=https://" + clustertest.ClusterIP, "TANDEM_HOST=" + clustertest.ClusterIP,
		"TANDEM_USER=" + c.Admin, "TANDEM_PASSWORD=" + c.Password, "TANDEM_SPKI=" + strings.Join(spki, ",")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("firstload.js: %v\n%s", err, out)
	}
	figures := map[string]float64{}
	re := regexp.MustCompile(`^([A-Z_]+)=([0-9.]+)$`)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := re.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			figures[m[1]], _ = strconv.ParseFloat(m[2], 64)
		}
	}
	if figures["FIRST_LOAD_BYTES"] == 0 {
		t.Fatalf("firstload.js printed no figures:\n%s", out)
	}
	return figures
}
