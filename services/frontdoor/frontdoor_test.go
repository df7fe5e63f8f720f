package frontdoor

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/initramfs/statusapi"
	"github.com/tandemhci/tandem/services/pki"
)

type fakeStatus struct {
	node statusapi.Node
	err  error
}

func (f fakeStatus) Node(context.Context) (statusapi.Node, error) { return f.node, f.err }

// member makes a cluster CA and a member's files in a temporary directory.
func member(t *testing.T, id pki.Identity) (pki.Files, *pki.CA) {
	t.Helper()
	ca, err := pki.NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	files := pki.Files{Dir: t.TempDir()}
	key, csr, _ := pki.NewKeyAndCSR(id, id.ID)
	cert, err := ca.Sign(csr, id, id.ID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := files.Save(ca.PEM, cert, key, ca.Key); err != nil {
		t.Fatal(err)
	}
	return files, ca
}

// serve runs a front door with the routes on a free loopback port.
func serve(t *testing.T, files pki.Files, routes []Route) string {
	t.Helper()
	src, err := NewTLSSource(files, t.TempDir(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{TLS: src, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func get(t *testing.T, cfg *tls.Config, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// echo answers with the identity header it was given.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "member=%q path=%s", r.Header.Get(HeaderMember), r.URL.Path)
})

func TestRoutingAndIdentity(t *testing.T) {
	self := pki.Identity{Role: pki.RoleNode, ID: "n-a"}
	files, ca := member(t, self)
	addr := serve(t, files, []Route{
		{Name: "raft", Upgrade: UpgradeRaft, Member: true, Backend: echo},
		{Name: "members", Prefix: "/internal/", Member: true, Backend: echo},
		{Name: "api", Prefix: "/api/", Backend: echo},
	})
	url := "https://" + addr

	anon := &tls.Config{InsecureSkipVerify: true}
	if code, body := get(t, anon, url+"/api/x", map[string]string{HeaderMember: "node/n-evil"}); code != 200 || !strings.Contains(body, `member=""`) {
		t.Errorf("anonymous API call: %d %s (a spoofed identity header must be dropped)", code, body)
	}
	if code, body := get(t, anon, url+"/internal/x", nil); code != 403 || !strings.Contains(body, "not_a_member") {
		t.Errorf("anonymous member route: %d %s", code, body)
	}
	if code, _ := get(t, anon, url+"/nowhere", nil); code != 404 {
		t.Errorf("unknown path: %d", code)
	}

	// A peer with this cluster's certificate is a member.
	peer := pki.Identity{Role: pki.RoleNode, ID: "n-b"}
	peerFiles := pki.Files{Dir: t.TempDir()}
	key, csr, _ := pki.NewKeyAndCSR(peer, "b")
	cert, _ := ca.Sign(csr, peer, "b", nil, nil)
	peerFiles.Save(ca.PEM, cert, key, nil)
	cfg, err := pki.NewLive(peerFiles).ClientTLS(&self)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, cfg, url+"/internal/x", nil); code != 200 || !strings.Contains(body, `member="node/n-b"`) {
		t.Errorf("member route: %d %s", code, body)
	}
	// … and may not claim to be another member.
	if code, body := get(t, cfg, url+"/internal/x", map[string]string{HeaderClaim: "node/n-a"}); code != 403 || !strings.Contains(body, "identity_mismatch") {
		t.Errorf("false claim: %d %s", code, body)
	}

	// A certificate from another cluster is not a member's.
	foreignFiles, _ := member(t, peer)
	fcfg, _ := pki.NewLive(foreignFiles).ClientTLS(nil)
	fcfg.VerifyConnection = nil // the client trusts anyone; the server must not
	if code, _ := get(t, fcfg, url+"/internal/x", nil); code != 403 {
		t.Errorf("foreign certificate: %d", code)
	}
}

func TestUpgradeThroughUnixBackend(t *testing.T) {
	files, _ := member(t, pki.Identity{Role: pki.RoleNode, ID: "n-a"})
	// A backend on a Unix socket that takes over upgraded connections and
	// echoes lines.
	sock := filepath.Join(t.TempDir(), "b.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", r.Header.Get("Upgrade"))
		rw.Flush()
		line, _ := rw.ReadString('\n')
		fmt.Fprintf(rw, "echo %s", line)
		rw.Flush()
	})}
	go backend.Serve(ln)
	defer backend.Close()

	addr := serve(t, files, []Route{{Name: "repl", Upgrade: UpgradeReplication, Backend: UnixBackend(sock, slog.Default())}})
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", UpgradeReplication)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprintf(conn, "hello\n")
	got, _ := br.ReadString('\n')
	if got != "echo hello\n" {
		t.Errorf("stream answered %q", got)
	}
}

func TestBackendDownIs502(t *testing.T) {
	files, _ := member(t, pki.Identity{Role: pki.RoleNode, ID: "n-a"})
	addr := serve(t, files, []Route{{Name: "api", Prefix: "/api/", Backend: UnixBackend(filepath.Join(t.TempDir(), "none.sock"), slog.Default())}})
	code, body := get(t, &tls.Config{InsecureSkipVerify: true}, "https://"+addr+"/api/x", nil)
	if code != 502 || !strings.Contains(body, "service_unavailable") {
		t.Errorf("%d %s", code, body)
	}
}

func TestHealth(t *testing.T) {
	node := statusapi.Node{Name: "node-a", Version: "v9", Board: "qemu-2node", Services: []statusapi.Service{
		{Name: "frontdoor", State: statusapi.StateRunning, Critical: true, Restarts: 2},
		{Name: "console-shell", State: statusapi.StateBackoff},
	}}
	addr := serve(t, pki.Files{Dir: t.TempDir()}, []Route{{Prefix: "/api/v1/health", Backend: HealthHandler(fakeStatus{node: node})}})
	code, body := get(t, &tls.Config{InsecureSkipVerify: true}, "https://"+addr+"/api/v1/health", nil)
	var h Health
	if err := json.Unmarshal([]byte(body), &h); err != nil || code != 200 {
		t.Fatalf("%d %s %v", code, body, err)
	}
	if h.Node != "node-a" || !h.Healthy || len(h.Services) != 2 || h.Services[0].Restarts != 2 {
		t.Errorf("health %+v", h)
	}
	down := HealthOf(statusapi.Node{Services: []statusapi.Service{{Name: "db", State: statusapi.StateBackoff, Critical: true}}})
	if down.Healthy {
		t.Error("healthy with a critical service in backoff")
	}
	addr = serve(t, pki.Files{Dir: t.TempDir()}, []Route{{Prefix: "/api/v1/health", Backend: HealthHandler(fakeStatus{err: errors.New("dial: no such file")})}})
	if code, _ := get(t, &tls.Config{InsecureSkipVerify: true}, "https://"+addr+"/api/v1/health", nil); code != 503 {
		t.Errorf("supervisor down: %d", code)
	}
}

func TestSelfSignedCertificateSurvivesRestartsAndDamage(t *testing.T) {
	dir := t.TempDir()
	a, err := loadOrCreateSelfSigned(dir, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := loadOrCreateSelfSigned(dir, slog.Default())
	if string(a.Certificate[0]) != string(b.Certificate[0]) {
		t.Error("a restart made a new certificate")
	}
	os.WriteFile(filepath.Join(dir, "self.key"), []byte("garbage"), 0o600)
	c, err := loadOrCreateSelfSigned(dir, slog.Default())
	if err != nil || string(c.Certificate[0]) == string(a.Certificate[0]) {
		t.Errorf("damaged key: %v", err)
	}
}

// TestPlainHTTPOnTheSamePort: plain HTTP reaches only the Plain routes;
// anything else is redirected to HTTPS; a silent or garbled connection
// does not stop the port serving.
func TestPlainHTTPOnTheSamePort(t *testing.T) {
	files, _ := member(t, pki.Identity{Role: pki.RoleNode, ID: "n-a"})
	addr := serve(t, files, []Route{
		{Name: "boot", Prefix: "/boot/", Plain: true, Backend: echo},
		{Name: "api", Prefix: "/api/", Backend: echo},
	})
	noRedirect := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path     string
		code     int
		body     string
		location string
	}{
		{path: "/boot/x", code: 200, body: "path=/boot/x"},
		{path: "/api/x?a=1", code: 308, location: "https://" + addr + "/api/x?a=1"},
		{path: "/", code: 308, location: "https://" + addr + "/"},
	} {
		req, _ := http.NewRequest("GET", "http://"+addr+tc.path, nil)
		req.Header.Set(HeaderMember, "node/n-evil")
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) || resp.Header.Get("Location") != tc.location {
			t.Errorf("plain GET %s: %d %q location %q; want %d %q location %q", tc.path, resp.StatusCode, b, resp.Header.Get("Location"), tc.code, tc.body, tc.location)
		}
		if tc.code == 200 && !strings.Contains(string(b), `member=""`) {
			t.Errorf("plain GET %s: a spoofed identity header reached the backend: %s", tc.path, b)
		}
	}

	// A connection that never speaks and one that sends garbage do not
	// hold the port.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	garbage, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	garbage.Write([]byte("\x00\xff\x16garbage\r\n\r\n"))
	garbage.Close()
	anon := &tls.Config{InsecureSkipVerify: true}
	if code, body := get(t, anon, "https://"+addr+"/api/x", nil); code != 200 || !strings.Contains(body, "path=/api/x") {
		t.Errorf("TLS beside plain HTTP: %d %s", code, body)
	}
	if code, _ := get(t, anon, "https://"+addr+"/boot/y", nil); code != 200 {
		t.Errorf("a Plain route over TLS: %d", code)
	}
}
