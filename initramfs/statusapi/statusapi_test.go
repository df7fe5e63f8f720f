package statusapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeNode is an in-memory Source: the API's own logic is tested here;
// the supervisor behind the real one is tested in its package.
type fakeNode struct {
	mu      sync.Mutex
	actions []string
}

func (f *fakeNode) Node() Node {
	return Node{Name: "node-a", Version: "v1", Services: []Service{{Name: "frontdoor", State: StateRunning, PID: 42}}}
}

func (f *fakeNode) ServiceLog(name string, n int) ([]LogLine, error) {
	if name != "frontdoor" {
		return nil, fmt.Errorf("no service %q", name)
	}
	return []LogLine{{Text: fmt.Sprintf("%d lines asked", n)}}, nil
}

func (f *fakeNode) Control(_ context.Context, service, action string) error {
	if action == "explode" {
		return errors.New(`unknown action "explode"`)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, service+" "+action)
	return nil
}

func (f *fakeNode) Power(action string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, "power "+action)
	return nil
}

// serve runs a server over src until the test ends and returns a client
// once the server answers.
func serve(t *testing.T, src Source) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- (&Server{Socket: sock, Source: src, Logger: slog.Default()}).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	c := NewClient(sock)
	for i := 0; ; i++ {
		_, err := c.Node(ctx)
		if err == nil {
			return c
		}
		if i == 100 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClientAgainstServer(t *testing.T) {
	src := &fakeNode{}
	c := serve(t, src)
	ctx := context.Background()
	n, err := c.Node(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(src.Node(), n); d != "" {
		t.Errorf("node (-want +got):\n%s", d)
	}

	lines, err := c.ServiceLog(ctx, "frontdoor", 7)
	if err != nil || len(lines) != 1 || lines[0].Text != "7 lines asked" {
		t.Errorf("log: %v %v", lines, err)
	}
	if _, err := c.ServiceLog(ctx, "nope", 1); err == nil || !strings.Contains(err.Error(), `no service "nope"`) {
		t.Errorf("log of unknown service: %v", err)
	}
	if err := c.Control(ctx, "frontdoor", ActionRestart); err != nil {
		t.Error(err)
	}
	if err := c.Control(ctx, "frontdoor", "explode"); err == nil || !strings.Contains(err.Error(), "explode") {
		t.Errorf("bad action: %v", err)
	}
	if err := c.Power(ctx, PowerReboot); err != nil {
		t.Error(err)
	}
	if d := cmp.Diff([]string{"frontdoor restart", "power reboot"}, src.actions); d != "" {
		t.Errorf("actions (-want +got):\n%s", d)
	}
}

func TestBadLinesParameter(t *testing.T) {
	c := serve(t, &fakeNode{})
	err := c.do(context.Background(), "GET", "/v1/services/frontdoor/log?lines=-3", nil)
	if err == nil || !strings.Contains(err.Error(), "want a number of lines") {
		t.Errorf("lines=-3: %v", err)
	}
}
