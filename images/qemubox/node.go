package qemubox

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/services/frontdoor"
)

// URL is the node's front door as seen from the host.
func (n *Node) URL() string { return fmt.Sprintf("https://127.0.0.1:%d", n.HTTPSPort) }

// Health asks the node's front door for /api/v1/health. The front door's
// certificate is self-signed until the cluster CA exists, so it is not
// verified here.
func (n *Node) Health(ctx context.Context) (frontdoor.Health, error) {
	var h frontdoor.Health
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/api/v1/health", nil)
	if err != nil {
		return h, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("health: %s", resp.Status)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// WaitHealthy polls the health endpoint until every service is running.
func (n *Node) WaitHealthy(ctx context.Context, timeout time.Duration) (frontdoor.Health, error) {
	return n.WaitHealth(ctx, timeout, func(h frontdoor.Health) bool {
		for _, s := range h.Services {
			if s.State != "running" {
				return false
			}
		}
		return len(h.Services) > 0
	})
}

// WaitHealth polls the health endpoint until cond holds.
func (n *Node) WaitHealth(ctx context.Context, timeout time.Duration, cond func(frontdoor.Health) bool) (frontdoor.Health, error) {
	deadline := time.Now().Add(timeout)
	var last frontdoor.Health
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			return last, fmt.Errorf("node %s: QEMU exited: %v", n.Name, n.Err())
		case <-ctx.Done():
			return last, ctx.Err()
		default:
		}
		h, err := n.Health(ctx)
		if err == nil {
			last = h
			if cond(h) {
				return h, nil
			}
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	return last, fmt.Errorf("node %s: health condition not met after %v (last answer %+v, last error %v)", n.Name, timeout, last, lastErr)
}

// ConsoleOutput returns everything the serial console has printed.
func (n *Node) ConsoleOutput() string {
	b, _ := os.ReadFile(n.ConsoleLog)
	return string(b)
}

// WaitConsole waits until the console output after offset matches re and
// returns the match and the offset just past it.
func (n *Node) WaitConsole(re *regexp.Regexp, offset int, timeout time.Duration) (string, int, error) {
	deadline := time.Now().Add(timeout)
	for {
		out := n.ConsoleOutput()
		if offset < len(out) {
			if loc := re.FindStringIndex(out[offset:]); loc != nil {
				return out[offset+loc[0] : offset+loc[1]], offset + loc[1], nil
			}
		}
		if time.Now().After(deadline) {
			return "", offset, fmt.Errorf("node %s: console did not show %q within %v", n.Name, re, timeout)
		}
		select {
		case <-n.exited:
			return "", offset, fmt.Errorf("node %s: QEMU exited while waiting for %q: %v", n.Name, re, n.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Console types on a node's serial console, where the recovery shell
// runs; what the shell prints lands in the node's console log.
type Console struct {
	n   *Node
	seq atomic.Int64
}

// Console returns the node's console.
func (n *Node) Console() *Console { return &Console{n: n} }

// Send types a line on the console without waiting for anything (for a
// command after which the shell does not answer, like a reboot).
func (c *Console) Send(line string) error {
	c.n.typing.Lock()
	defer c.n.typing.Unlock()
	_, err := c.n.console.Write([]byte(line + "\r"))
	return err
}

// Run types a shell command on the console and returns what the shell
// printed before an end marker. The marker is written so that its typed
// form differs from its printed form: the echo of the typed line never
// matches.
func (c *Console) Run(cmd string, timeout time.Duration) (string, error) {
	id := c.seq.Add(1)
	start := len(c.n.ConsoleOutput())
	marker := fmt.Sprintf("==END%d==", id)
	if err := c.Send(fmt.Sprintf("%s; echo ==\"\"END%d\"\"==", cmd, id)); err != nil {
		return "", err
	}
	_, end, err := c.n.WaitConsole(regexp.MustCompile(regexp.QuoteMeta(marker)), start, timeout)
	if err != nil {
		return "", err
	}
	out := c.n.ConsoleOutput()[start : end-len(marker)]
	// Drop the echo of the typed line.
	if i := strings.Index(out, "END"+fmt.Sprint(id)); i >= 0 {
		if nl := strings.IndexByte(out[i:], '\n'); nl >= 0 {
			out = out[i+nl+1:]
		}
	}
	return out, nil
}

// JSONLine returns the first line of out that is a JSON object.
func JSONLine(out string) []byte {
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "{") {
			return []byte(l)
		}
	}
	return nil
}
