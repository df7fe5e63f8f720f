package frontdoor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemhci/tandem/initramfs/statusapi"
)

type fakeStatus struct {
	node statusapi.Node
	err  error
}

func (f fakeStatus) Node(context.Context) (statusapi.Node, error) { return f.node, f.err }

// serve runs a front door on a free loopback port and returns its URL.
func serve(t *testing.T, st NodeStatus, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, err := New(Config{Listen: addr, StateDir: dir, Status: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "https://" + addr
}

func client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
}

func TestHealth(t *testing.T) {
	node := statusapi.Node{Name: "node-a", Version: "v9", Board: "qemu-2node", Services: []statusapi.Service{
		{Name: "frontdoor", State: statusapi.StateRunning, Critical: true, Restarts: 2},
		{Name: "console-shell", State: statusapi.StateBackoff},
	}}
	url := serve(t, fakeStatus{node: node}, t.TempDir())
	resp, err := client().Get(url + "/api/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || h.Node != "node-a" || h.Version != "v9" || !h.Healthy || len(h.Services) != 2 || h.Services[0].Restarts != 2 {
		t.Errorf("status %d, health %+v", resp.StatusCode, h)
	}
}

func TestHealthWhenACriticalServiceIsDown(t *testing.T) {
	node := statusapi.Node{Services: []statusapi.Service{{Name: "db", State: statusapi.StateBackoff, Critical: true}}}
	url := serve(t, fakeStatus{node: node}, t.TempDir())
	resp, err := client().Get(url + "/api/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h Health
	json.NewDecoder(resp.Body).Decode(&h)
	if h.Healthy {
		t.Error("healthy with a critical service in backoff")
	}
}

func TestSupervisorUnreachableIs503(t *testing.T) {
	url := serve(t, fakeStatus{err: errors.New("dial unix: no such file")}, t.TempDir())
	resp, err := client().Get(url + "/api/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d", resp.StatusCode)
	}
	resp, err = client().Get(url + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: status %d", resp.StatusCode)
	}
}

func TestCertificateSurvivesRestartsAndDamage(t *testing.T) {
	dir := t.TempDir()
	fingerprint := func() []byte {
		url := serve(t, fakeStatus{}, dir)
		conn, err := tls.Dial("tcp", url[len("https://"):], &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	first := fingerprint()
	if string(fingerprint()) != string(first) {
		t.Error("a restart made a new certificate")
	}
	os.WriteFile(filepath.Join(dir, "key.pem"), []byte("garbage"), 0o600)
	if string(fingerprint()) == string(first) {
		t.Error("a damaged key was used")
	}
}
