package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
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

// upgrade asks a member's front door to switch the connection to proto.
func upgrade(ctx context.Context, d *memberconn.Dialer, address raft.ServerAddress, proto string) (net.Conn, error) {
	id, addrs, err := ParseAddress(address)
	if err != nil {
		return nil, err
	}
	// The witness and nodes both answer raft; which role the peer has is
	// read from its certificate, the ID must match.
	return d.Upgrade(ctx, id, addrs, proto, "/raft", nil)
}

// streamLayer is raft's network: connections are HTTP Upgrades through
// the members' front doors, so raft uses the one port like everything
// else.
type streamLayer struct {
	d        *memberconn.Dialer
	self     raft.ServerAddress
	accepted chan net.Conn
	done     chan struct{}
	once     sync.Once
	// isMember says whether an identity may talk raft to this member.
	isMember func(pki.Identity) bool
}

func newStreamLayer(d *memberconn.Dialer, self raft.ServerAddress, isMember func(pki.Identity) bool) *streamLayer {
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
	return upgrade(ctx, s.d, address, frontdoor.UpgradeRaft)
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
	id, err := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
	if err != nil || !s.isMember(id) {
		frontdoor.WriteError(w, http.StatusForbidden, "not_a_member", fmt.Sprintf("%q is not a member of this cluster", r.Header.Get(frontdoor.HeaderMember)))
		return
	}
	c, err := memberconn.Accept(w, frontdoor.UpgradeRaft)
	if err != nil {
		return
	}
	select {
	case s.accepted <- c:
	case <-s.done:
		c.Close()
	}
}
