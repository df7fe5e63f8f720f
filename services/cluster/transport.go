package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// A member's raft address names the member and where its front door
// answers, preferred first: "n-1a2b@[fe80::1%ic0]:443,10.0.0.11:443".
// Peers on the interconnect are tried there first, the management
// network second; the witness only knows the management addresses.
// Addresses identify nothing: the certificate does.

// FormatAddress builds a raft address.
func FormatAddress(id string, addrs []string) raft.ServerAddress {
	return raft.ServerAddress(id + "@" + strings.Join(addrs, ","))
}

// ParseAddress splits a raft address into the member ID and addresses.
func ParseAddress(a raft.ServerAddress) (string, []string, error) {
	id, rest, ok := strings.Cut(string(a), "@")
	if !ok || pki.CheckID(id) != nil || rest == "" {
		return "", nil, fmt.Errorf("raft address %q: want <member-id>@<host:port>[,…]", a)
	}
	addrs := strings.Split(rest, ",")
	for _, addr := range addrs {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", nil, fmt.Errorf("raft address %q: %w", a, err)
		}
	}
	return id, addrs, nil
}

// dialer connects to members' front doors.
type dialer struct {
	self pki.Identity
	live *pki.Live
	// perAddress bounds each attempt when more addresses remain, so a
	// dead interconnect costs little before the management network is
	// tried.
	perAddress time.Duration
}

// dialTLS connects to the first of addrs that answers, verifying that the
// peer is the expected member.
func (d *dialer) dialTLS(ctx context.Context, addrs []string, expect *pki.Identity) (*tls.Conn, error) {
	cfg, err := d.live.ClientTLS(expect)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i, addr := range addrs {
		actx := ctx
		if i < len(addrs)-1 && d.perAddress > 0 {
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, d.perAddress)
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

// upgrade asks a member's front door to switch the connection to proto.
func (d *dialer) upgrade(ctx context.Context, address raft.ServerAddress, proto string) (net.Conn, error) {
	id, addrs, err := ParseAddress(address)
	if err != nil {
		return nil, err
	}
	// The witness and nodes both answer raft; which role the peer has is
	// read from its certificate, the ID must match.
	conn, err := d.dialTLS(ctx, addrs, nil)
	if err != nil {
		return nil, err
	}
	peer, err := pki.IdentityOf(conn.ConnectionState().PeerCertificates[0])
	if err != nil || peer.ID != id {
		conn.Close()
		return nil, fmt.Errorf("%s answered as %v, not member %s", conn.RemoteAddr(), peer, id)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	fmt.Fprintf(conn, "GET /raft HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n",
		id, proto, frontdoor.HeaderClaim, d.self)
	up, err := readUpgrade(conn, proto)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade to %s at %s: %w", proto, id, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return up, nil
}

// readUpgrade reads the peer's answer to an Upgrade request: only 101
// Switching Protocols to the protocol asked for will do. Bytes the peer
// sent after the answer stay readable on the returned connection.
func readUpgrade(conn net.Conn, proto string) (net.Conn, error) {
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

// bufferedConn reads what the response reader had already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// streamLayer is raft's network: connections are HTTP Upgrades through
// the members' front doors, so raft uses the one port like everything
// else.
type streamLayer struct {
	d        *dialer
	self     raft.ServerAddress
	accepted chan net.Conn
	done     chan struct{}
	once     sync.Once
	// isMember says whether an identity may talk raft to this member.
	isMember func(pki.Identity) bool
}

func newStreamLayer(d *dialer, self raft.ServerAddress, isMember func(pki.Identity) bool) *streamLayer {
	return &streamLayer{d: d, self: self, accepted: make(chan net.Conn), done: make(chan struct{}), isMember: isMember}
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// Dial implements raft.StreamLayer. A dial in flight ends when the layer
// closes, so shutting raft down does not wait for unreachable peers.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return s.d.upgrade(ctx, address, frontdoor.UpgradeRaft)
}

// Accept implements net.Listener.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.accepted:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (s *streamLayer) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

// Addr implements net.Listener: raft reads its own address from it.
func (s *streamLayer) Addr() net.Addr { return raftAddr(s.self) }

type raftAddr raft.ServerAddress

func (a raftAddr) Network() string { return "tandem" }
func (a raftAddr) String() string  { return string(a) }

// ServeHTTP takes over an Upgrade request that the front door passed on
// from a verified member, and hands the connection to raft.
func (s *streamLayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := identityFromHeader(r.Header.Get(frontdoor.HeaderMember))
	if err != nil || !s.isMember(id) {
		frontdoor.WriteError(w, http.StatusForbidden, "not_a_member", fmt.Sprintf("%q is not a member of this cluster", r.Header.Get(frontdoor.HeaderMember)))
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "hijack", err.Error())
		return
	}
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", frontdoor.UpgradeRaft)
	if err := rw.Flush(); err != nil {
		conn.Close()
		return
	}
	c := net.Conn(conn)
	if rw.Reader.Buffered() > 0 {
		c = &bufferedConn{Conn: conn, r: rw.Reader}
	}
	select {
	case s.accepted <- c:
	case <-s.done:
		conn.Close()
	}
}

func identityFromHeader(h string) (pki.Identity, error) {
	role, id, ok := strings.Cut(h, "/")
	if !ok || (role != pki.RoleNode && role != pki.RoleWitness) || pki.CheckID(id) != nil {
		return pki.Identity{}, fmt.Errorf("no member identity")
	}
	return pki.Identity{Role: role, ID: id}, nil
}
