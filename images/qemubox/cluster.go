package qemubox

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
)

// Credentials are what the box's cluster was formed with; `make run`
// keeps them in its work directory next to the disks.
type Credentials struct {
	Admin     string `json:"admin"`
	Password  string `json:"password"`
	JoinToken string `json:"join_token"`
	ClusterID string `json:"cluster_id"`
}

// APIClient talks to a front door from the host. The cluster CA is not
// checked: this is the box's own harness on localhost.
type APIClient struct {
	Base  string // https://127.0.0.1:port
	Admin string
	Pass  string
}

var insecure = &http.Client{
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	Timeout:   30 * time.Second,
}

// Do sends a JSON request and decodes a JSON answer; a non-2xx answer is
// an error carrying the status and body.
func (c APIClient) Do(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Admin != "" {
		req.SetBasicAuth(c.Admin, c.Pass)
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// Raw sends a request with a body of any kind and returns the status and
// the answer's body, whatever the status.
func (c APIClient) Raw(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return 0, nil, err
	}
	if c.Admin != "" {
		req.SetBasicAuth(c.Admin, c.Pass)
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	return resp.StatusCode, b, err
}

// API returns a client for the node's front door.
func (n *Node) API(cr Credentials) APIClient {
	return APIClient{Base: n.URL(), Admin: cr.Admin, Pass: cr.Password}
}

// ClusterAPI returns a client for the cluster IP.
func (b *Box) ClusterAPI(cr Credentials) APIClient {
	return APIClient{Base: b.ClusterURL(), Admin: cr.Admin, Pass: cr.Password}
}

var setupCodeLine = regexp.MustCompile(`Setup code: (\S+)`)

// SetupCode reads the code the node's cluster agent shows on the console
// while the node is not in a cluster, as a person at the box would.
func (n *Node) SetupCode(timeout time.Duration) (string, error) {
	m, _, err := n.WaitConsole(setupCodeLine, 0, timeout)
	if err != nil {
		return "", err
	}
	return setupCodeLine.FindStringSubmatch(m)[1], nil
}

// FormCluster does what an installer does on a new box: bootstraps the
// cluster on the first node with the cluster IP, and has the second node
// join with the token (it finds the first on the interconnect).
func (b *Box) FormCluster(ctx context.Context, admin, password string) (Credentials, error) {
	if len(b.Nodes) < 2 {
		return Credentials{}, errors.New("a cluster needs two nodes")
	}
	bn := b.Nodes[1]
	cr, err := b.Bootstrap(ctx, admin, password)
	if err != nil {
		return cr, err
	}
	code, err := bn.SetupCode(2 * time.Minute)
	if err != nil {
		return cr, err
	}
	// The join can meet a leader still settling: retry for a while.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err = bn.API(Credentials{}).Do(ctx, "POST", "/api/v1/cluster/join", cluster.JoinRequest{SetupCode: code, Token: cr.JoinToken}, nil)
		if err == nil || strings.Contains(err.Error(), cluster.ErrInCluster.Error()) {
			return cr, nil
		}
		if time.Now().After(deadline) || strings.Contains(err.Error(), "refused") {
			return cr, fmt.Errorf("%s joining: %w", bn.Name, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// Bootstrap makes a cluster of the first node alone, with the cluster IP.
func (b *Box) Bootstrap(ctx context.Context, admin, password string) (Credentials, error) {
	a := b.Nodes[0]
	code, err := a.SetupCode(2 * time.Minute)
	if err != nil {
		return Credentials{}, err
	}
	var boot cluster.BootstrapResponse
	if _, err := a.API(Credentials{}).Do(ctx, "POST", "/api/v1/cluster/bootstrap", cluster.BootstrapRequest{
		SetupCode: code, AdminName: admin, AdminPassword: password, ClusterIP: ClusterIP + lanCIDR,
	}, &boot); err != nil {
		return Credentials{}, fmt.Errorf("bootstrap on %s: %w", a.Name, err)
	}
	return Credentials{Admin: admin, Password: password, JoinToken: boot.JoinToken, ClusterID: boot.ClusterID}, nil
}

// Witness is the cluster's third vote, run on the site host as a site
// would run it on any small Linux machine.
type Witness struct {
	cmd  *exec.Cmd
	Log  string
	done chan struct{}
}

// StartWitness runs the tandem-witness binary on the site host (HostIP),
// joining with the token on its first start. Its data stays in dataDir.
func (b *Box) StartWitness(binary, dataDir, token string, extra ...string) (*Witness, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	var peers []string
	for _, n := range b.Nodes {
		peers = append(peers, n.IP+":443")
	}
	args := append([]string{binary, "-listen", HostIP + ":443", "-advertise", HostIP + ":443", "-data", dataDir,
		"-name", "witness", "-join", strings.Join(peers, ","), "-token", token}, extra...)
	w := &Witness{Log: filepath.Join(dataDir, "witness.log"), done: make(chan struct{})}
	logf, err := os.OpenFile(w.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	w.cmd = b.Command(args...)
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = w.cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("start the witness: %w", err)
	}
	go func() {
		_ = w.cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

// Stop ends the witness.
func (w *Witness) Stop() {
	stopGroup(w.cmd.Process.Pid, w.done)
}

// WaitClusterHealthy polls the cluster IP until the leader says every
// member is a reachable voter.
func (b *Box) WaitClusterHealthy(ctx context.Context, cr Credentials, timeout time.Duration) (cluster.Health, error) {
	var h cluster.Health
	var err error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = b.ClusterAPI(cr).Do(cctx, "GET", "/api/v1/cluster/health", nil, &h)
		cancel()
		if err == nil && h.Healthy {
			return h, nil
		}
		select {
		case <-ctx.Done():
			return h, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return h, fmt.Errorf("cluster not healthy after %v: %+v (last error %v)", timeout, h, err)
}
