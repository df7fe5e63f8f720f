package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// memberClients keeps one HTTP client per member, so calls to the leader
// reuse their TLS connections.
type memberClients struct {
	mu      sync.Mutex
	clients map[raft.ServerAddress]*http.Client
}

// client returns an HTTP client whose every connection goes to the member
// at address (whatever host the URL names), verified by its certificate.
func (a *Agent) client(address raft.ServerAddress) (*http.Client, error) {
	id, addrs, err := ParseAddress(address)
	if err != nil {
		return nil, err
	}
	a.clients.mu.Lock()
	defer a.clients.mu.Unlock()
	if a.clients.clients == nil {
		a.clients.clients = map[raft.ServerAddress]*http.Client{}
	}
	if c, ok := a.clients.clients[address]; ok {
		return c, nil
	}
	var role string
	if m, ok := a.Directory().Member(id); ok {
		role = m.Role
	}
	c := &http.Client{Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var expect *pki.Identity
			if role != "" {
				expect = &pki.Identity{Role: role, ID: id}
			}
			conn, err := a.dial.DialTLS(ctx, addrs, expect)
			if err != nil {
				return nil, err
			}
			if peer, err := pki.IdentityOf(conn.ConnectionState().PeerCertificates[0]); err != nil || peer.ID != id {
				conn.Close()
				return nil, fmt.Errorf("%s answered as %v, not member %s", conn.RemoteAddr(), peer, id)
			}
			return conn, nil
		},
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     30 * time.Second,
	}}
	a.clients.clients[address] = c
	return c, nil
}

// memberCall calls another member's API over member TLS.
func (a *Agent) memberCall(ctx context.Context, m directory.Member, method, path string, in, out any) error {
	c, err := a.client(FormatAddress(m.ID, m.Addresses))
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+m.ID+path, body)
	if err != nil {
		return err
	}
	req.Header.Set(frontdoor.HeaderClaim, a.id.String())
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, apiMessage(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// errNoLeader means no leader is known: an election is under way, or
// this member is cut off from a quorum.
var errNoLeader = errors.New("no leader: an election is under way or this member cannot reach a quorum")

// forward sends an API request on to the leader and copies its answer
// back, so any member answers any request. A request that was already
// forwarded once is not forwarded again.
func (a *Agent) forward(w http.ResponseWriter, r *http.Request) {
	rf := a.r()
	if rf == nil {
		apiError(w, ErrNotInCluster)
		return
	}
	if by := r.Header.Get(frontdoor.HeaderForwardedBy); by != "" {
		w.Header().Set("Retry-After", "1")
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "leader_moved", "leadership moved while the request was forwarded by "+by+"; retry")
		return
	}
	addr, id := rf.LeaderWithID()
	if addr == "" || string(id) == a.id.ID {
		w.Header().Set("Retry-After", "1")
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "no_leader", errNoLeader.Error())
		return
	}
	c, err := a.client(addr)
	if err != nil {
		apiError(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		frontdoor.WriteError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "https://"+string(id)+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		apiError(w, err)
		return
	}
	for _, h := range []string{"Authorization", "Cookie", HeaderCSRF, "Content-Type", "Accept", "User-Agent", "Sec-Fetch-Mode", "Idempotency-Key"} {
		if v := r.Header.Values(h); len(v) > 0 {
			out.Header[h] = v
		}
	}
	out.Header.Set(frontdoor.HeaderClient, clientAddr(r))
	out.Header.Set(frontdoor.HeaderForwardedBy, a.id.ID)
	out.Header.Set(frontdoor.HeaderClaim, a.id.String())
	resp, err := c.Do(out)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "leader_unreachable", fmt.Sprintf("the leader (%s) did not answer: %v", id, err))
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if strings.EqualFold(k, "Content-Length") {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("X-Tandem-Served-By", string(id))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// updateSelf records this member's addresses and inventory, through the
// leader.
func (a *Agent) updateSelf(ctx context.Context, upd directory.MemberUpdatePayload) error {
	r := a.r()
	if r == nil {
		return ErrNotInCluster
	}
	if r.State() == raft.Leader {
		_, err := a.propose(directory.TypeMemberUpdate, "member:"+a.cfg.Name, "", upd)
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return a.callLeader(cctx, http.MethodPost, "/api/v1/cluster/members/self", upd, nil)
}

// callLeader calls the leader's member API.
func (a *Agent) callLeader(ctx context.Context, method, path string, in, out any) error {
	r := a.r()
	if r == nil {
		return ErrNotInCluster
	}
	addr, id := r.LeaderWithID()
	if addr == "" {
		return errNoLeader
	}
	_, addrs, err := ParseAddress(addr)
	if err != nil {
		return err
	}
	return a.memberCall(ctx, directory.Member{ID: string(id), Addresses: addrs}, method, path, in, out)
}
