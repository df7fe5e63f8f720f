// Package memberconn connects cluster members to each other through their
// front doors: member TLS both ways, then an HTTP Upgrade to the protocol
// a service speaks (raft, replication). Both ends live here, so every
// service that streams between members does it the same way over the one
// port.
package memberconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// Dialer connects to members' front doors as Self.
type Dialer struct {
	Self pki.Identity
	Live *pki.Live
	// PerAddress bounds each attempt when more addresses remain, so a
	// dead interconnect costs little before the management network is
	// tried.
	PerAddress time.Duration

	// transports keep, per member and addresses, the connections Forward
	// made, so that a forwarded request does not pay for a TLS handshake.
	mu         sync.Mutex
	transports map[string]*http.Transport
}

// DialTLS connects to the first of addrs that answers, verifying that the
// peer is a member of the cluster (and expect, when given).
func (d *Dialer) DialTLS(ctx context.Context, addrs []string, expect *pki.Identity) (*tls.Conn, error) {
	cfg, err := d.Live.ClientTLS(expect)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i, addr := range addrs {
		actx := ctx
		if i < len(addrs)-1 && d.PerAddress > 0 {
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, d.PerAddress)
			defer cancel()
		}
		td := &tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 5 * time.Second}, Config: cfg}
		conn, err := td.DialContext(actx, "tcp", addr)
		if err == nil {
			return conn.(*tls.Conn), nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// DialMember connects to member id at addrs and checks that the one
// answering is that member, whatever its role.
func (d *Dialer) DialMember(ctx context.Context, id string, addrs []string) (*tls.Conn, error) {
	conn, err := d.DialTLS(ctx, addrs, nil)
	if err != nil {
		return nil, err
	}
	peer, err := pki.IdentityOf(conn.ConnectionState().PeerCertificates[0])
	if err != nil || peer.ID != id {
		conn.Close()
		return nil, fmt.Errorf("%s answered as %v, not member %s", conn.RemoteAddr(), peer, id)
	}
	return conn, nil
}

// Upgrade connects to member id and asks its front door to switch the
// connection to proto; path and header say what the stream is for.
func (d *Dialer) Upgrade(ctx context.Context, id string, addrs []string, proto, path string, header http.Header) (net.Conn, error) {
	conn, err := d.DialMember(ctx, id, addrs)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n",
		path, id, proto, frontdoor.HeaderClaim, d.Self)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade to %s at %s: %w", proto, id, err)
	}
	up, err := ReadUpgrade(conn, proto)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade to %s at %s: %w", proto, id, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return up, nil
}

// ReadUpgrade reads the peer's answer to an Upgrade request: only 101
// Switching Protocols to the protocol asked for will do. Bytes the peer
// sent after the answer stay readable on the returned connection.
func ReadUpgrade(conn net.Conn, proto string) (net.Conn, error) {
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, errors.New(resp.Status)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), proto) {
		return nil, fmt.Errorf("switched to %q, not %q", resp.Header.Get("Upgrade"), proto)
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

// Accept takes over an Upgrade request the front door passed on and
// answers 101 Switching Protocols to proto. The caller has checked who
// asked (IdentityFromHeader).
func Accept(w http.ResponseWriter, proto string) (net.Conn, error) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "hijack", err.Error())
		return nil, fmt.Errorf("take over the %s stream: %w", proto, err)
	}
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", proto)
	if err := rw.Flush(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("answer the %s upgrade: %w", proto, err)
	}
	if rw.Reader.Buffered() > 0 {
		return &bufferedConn{Conn: conn, r: rw.Reader}, nil
	}
	return conn, nil
}

// bufferedConn reads what a reader had already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// IdentityFromHeader reads the member identity the front door verified
// and passed on in its X-Tandem-Member header.
func IdentityFromHeader(h string) (pki.Identity, error) {
	role, id, ok := strings.Cut(h, "/")
	if !ok || (role != pki.RoleNode && role != pki.RoleWitness) || pki.CheckID(id) != nil {
		return pki.Identity{}, fmt.Errorf("no member identity")
	}
	return pki.Identity{Role: role, ID: id}, nil
}

// Forward proxies a request to member id's front door as this member,
// once: the request is marked forwarded, and a request that already was
// is answered 503 instead (the target moved meanwhile). A service uses it
// for a request that reached the wrong node.
func (d *Dialer) Forward(w http.ResponseWriter, r *http.Request, id, name string, addrs []string) {
	if by := r.Header.Get(frontdoor.HeaderForwardedBy); by != "" {
		w.Header().Set("Retry-After", "1")
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "moving", "what this request is for is moving between nodes; retry")
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: id})
			pr.Out.Header.Del("X-Forwarded-For")
			pr.Out.Header.Set(frontdoor.HeaderClaim, d.Self.String())
			pr.Out.Header.Set(frontdoor.HeaderForwardedBy, d.Self.ID)
			if c := r.Header.Get("X-Forwarded-For"); c != "" {
				pr.Out.Header.Set(frontdoor.HeaderClient, c)
			}
		},
		Transport:     d.transport(id, addrs),
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			frontdoor.WriteError(w, http.StatusBadGateway, "node_unreachable", fmt.Sprintf("node %s did not answer: %v", name, err))
		},
	}
	w.Header().Set("X-Tandem-Served-By", id)
	rp.ServeHTTP(w, r)
}

// transport returns the HTTP transport to member id at addrs, made once.
func (d *Dialer) transport(id string, addrs []string) *http.Transport {
	key := id + "@" + strings.Join(addrs, ",")
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.transports[key]; ok {
		return t
	}
	if d.transports == nil {
		d.transports = map[string]*http.Transport{}
	}
	t := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialMember(ctx, id, addrs)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	d.transports[key] = t
	return t
}

// Peer is a member a request may be forwarded to.
type Peer struct {
	ID, Name  string
	Addresses []string
}

// OnNamed runs next on the member the request's ?node= names (a name or
// member ID; default: this one), forwarding the request there, once.
// members tells this member's ID and every member.
func (d *Dialer) OnNamed(members func() (self string, all []Peer), next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		asked := r.URL.Query().Get("node")
		self, all := members()
		if asked == "" || asked == self {
			next(w, r)
			return
		}
		for _, m := range all {
			if m.ID != asked && m.Name != asked {
				continue
			}
			if m.ID == self {
				next(w, r)
			} else {
				d.Forward(w, r, m.ID, m.Name, m.Addresses)
			}
			return
		}
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no node %q", asked))
	}
}
