package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/apidoc"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// LocalClient is how a service on the node talks to its cluster agent,
// over the agent's Unix socket.
type LocalClient struct {
	c *http.Client
	// seen remembers, for whoamiTTL, the requests Whoami let through:
	// a console's page asks a node's services many times a second, and
	// each answer would otherwise cost a call to the agent.
	mu   sync.Mutex
	seen map[[32]byte]seenPrincipal
}

type seenPrincipal struct {
	p     Principal
	until time.Time
}

// whoamiTTL bounds how long a logout, a revoked token or a disabled user
// may still reach a node's services: as long as a page takes to notice.
const whoamiTTL = 2 * time.Second

// NewLocalClient returns a client of the agent listening on socket.
func NewLocalClient(socket string) *LocalClient {
	return &LocalClient{c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 4,
	}}}
}

func (l *LocalClient) do(ctx context.Context, method, path string, header http.Header, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://cluster"+path, body)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := l.c.Do(req)
	if err != nil {
		return fmt.Errorf("cluster agent: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("cluster agent: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusForbidden && path == "/local/v1/whoami":
		var body frontdoor.ErrorBody
		_ = json.Unmarshal(b, &body)
		retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return &AuthError{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message, RetryAfter: retry}
	case resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("cluster agent: %s: %w", apiMessage(b), directory.ErrRefused)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("cluster agent: %s %s: %s: %s", method, path, resp.Status, apiMessage(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// View returns the node's view of the directory once it has applied past
// after, or after wait.
func (l *LocalClient) View(ctx context.Context, after uint64, wait time.Duration) (LocalView, error) {
	var v LocalView
	sent := time.Now()
	err := l.do(ctx, http.MethodGet, "/local/v1/view?after="+strconv.FormatUint(after, 10)+"&wait="+strconv.Itoa(int(wait/time.Second)), nil, nil, &v)
	// The agent answered no earlier than sent+Waited: the contact it
	// reports was no later than that minus its age.
	v.QuorumAt = sent.Add(v.Waited - v.QuorumAge)
	return v, err
}

// Follow long-polls the node's view until ctx ends and hands each one to
// fn: on every change, and at least every wait. A failed read is logged
// and tried again a second later.
func (l *LocalClient) Follow(ctx context.Context, wait time.Duration, log *slog.Logger, fn func(LocalView)) {
	var after uint64
	for ctx.Err() == nil {
		view, err := l.View(ctx, after, wait)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("cannot read the directory from the cluster agent", "err", err)
				t := time.NewTimer(time.Second)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
			continue
		}
		after = view.Index
		fn(view)
	}
}

// PXE records, as this node (the provisioning network's server), a PXE
// boot it answered or refused.
func (l *LocalClient) PXE(ctx context.Context, p PXEReport) error {
	return l.do(ctx, http.MethodPost, "/local/v1/machines/pxe", nil, p, nil)
}

// VolumeCloned records, as this node (the clone's primary), that the
// clone's data is in.
func (l *LocalClient) VolumeCloned(ctx context.Context, p directory.VolumeClonedPayload) error {
	return l.do(ctx, http.MethodPost, "/local/v1/volumes/cloned", nil, p, nil)
}

// VolumeCopy records, as this node (the volume's primary), the state of
// the peer's copy. It returns once the cluster committed it.
func (l *LocalClient) VolumeCopy(ctx context.Context, p directory.VolumeCopyPayload) error {
	return l.do(ctx, http.MethodPost, "/local/v1/volumes/copy", nil, p, nil)
}

// Headers of a whoami call: the request's own, which the socket would
// otherwise lose.
const (
	whoamiMethod = "X-Tandem-Whoami-Method"
	whoamiHost   = "X-Tandem-Whoami-Host"
	whoamiClient = "X-Tandem-Whoami-Client"
	whoamiMember = "X-Tandem-Whoami-Member"
)

// Whoami authenticates a request a service on this node got, as the
// agent would authenticate it: credentials, CSRF token and origin.
func (l *LocalClient) Whoami(ctx context.Context, r *http.Request) (Principal, error) {
	h := http.Header{}
	for _, k := range []string{"Authorization", "Cookie", HeaderCSRF, "Origin", "Upgrade", "Sec-Fetch-Mode"} {
		if v := r.Header.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	h.Set(whoamiMethod, r.Method)
	h.Set(whoamiHost, r.Host)
	h.Set(whoamiClient, clientAddr(r))
	if m := r.Header.Get(frontdoor.HeaderMember); m != "" {
		h.Set(whoamiMember, m)
	}
	key := whoamiKey(h)
	l.mu.Lock()
	seen, ok := l.seen[key]
	l.mu.Unlock()
	if ok && time.Now().Before(seen.until) {
		return seen.p, nil
	}
	var p Principal
	if err := l.do(ctx, http.MethodGet, "/local/v1/whoami", h, nil, &p); err != nil {
		return p, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil || len(l.seen) > 10000 {
		l.seen = map[[32]byte]seenPrincipal{}
	}
	l.seen[key] = seenPrincipal{p: p, until: time.Now().Add(whoamiTTL)}
	return p, nil
}

// whoamiKey is a digest of everything Whoami's answer depends on.
func whoamiKey(h http.Header) [32]byte {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	d := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(d, "%s\x00%q\x00", k, h[k])
	}
	var sum [32]byte
	d.Sum(sum[:0])
	return sum
}

// PrimaryHere moves a volume's primary role to this node and returns once
// the cluster committed it.
func (l *LocalClient) PrimaryHere(ctx context.Context, p PrimaryHere) error {
	return l.do(ctx, http.MethodPost, "/local/v1/volumes/primary-here", nil, p, nil)
}

// RequireUser wraps a handler of a node service that keeps no users of
// its own: the request's credentials are checked by the cluster agent,
// and the user must hold at least role.
func (l *LocalClient) RequireUser(role directory.Role, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := l.Whoami(r.Context(), r)
		var refused *AuthError
		if errors.As(err, &refused) {
			refused.Write(w, r)
			return
		}
		if err != nil {
			w.Header().Set("Retry-After", "1")
			frontdoor.WriteError(w, http.StatusServiceUnavailable, "cluster_unavailable", err.Error())
			return
		}
		if !p.Role.AtLeast(role) {
			frontdoor.WriteError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("needs the %s role, you are %s", role, p.Role))
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), servicePrincipalKey, p)))
	}
}

// servicePrincipalKey holds, for a service on this node, the user
// RequireUser let through.
const servicePrincipalKey ctxKey = 2

// Actor names who asked for a request RequireUser let through, and from
// where, for a service's history: "admin from 192.0.2.7".
func Actor(r *http.Request) string {
	p, _ := r.Context().Value(servicePrincipalKey).(Principal)
	user := p.User
	if user == "" {
		user = "someone"
	}
	return user + " from " + clientAddr(r)
}

// VMStopped records that a VM's guest powered itself off here.
func (l *LocalClient) VMStopped(ctx context.Context, p VMStopped) error {
	return l.do(ctx, http.MethodPost, "/local/v1/vms/stopped", nil, p, nil)
}

// VMFT records a change of a VM's fault tolerance, as this node: the
// start of a pairing, its protection reached, or a failover. It returns
// once the cluster committed it; a change for a pairing that moved on
// is refused (directory.ErrConflict in the message).
func (l *LocalClient) VMFT(ctx context.Context, p directory.VMFTPayload) error {
	return l.do(ctx, http.MethodPost, "/local/v1/vms/ft", nil, p, nil)
}

// VMMoved records the end of a live migration this node sent.
func (l *LocalClient) VMMoved(ctx context.Context, p VMMoved) error {
	return l.do(ctx, http.MethodPost, "/local/v1/vms/moved", nil, p, nil)
}

// Guard wraps a route of a node service in the check its Access asks
// for: a user of that role, through the cluster agent.
func (l *LocalClient) Guard(r apidoc.Route) http.HandlerFunc {
	if role, ok := userRole(r.Access); ok {
		return l.RequireUser(role, r.Handler)
	}
	if r.Access == apidoc.Public {
		return r.Handler
	}
	// Members and local callers have their own ways in (Upgrade
	// streams), not a service's routes.
	return func(w http.ResponseWriter, _ *http.Request) {
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint")
	}
}

// userRole is the user role an access level asks for, if it is one.
func userRole(a apidoc.Access) (directory.Role, bool) {
	switch a {
	case apidoc.Viewer:
		return directory.RoleViewer, true
	case apidoc.Operator:
		return directory.RoleOperator, true
	case apidoc.Admin:
		return directory.RoleAdmin, true
	}
	return "", false
}
