// Package frontdoor is the one TCP port a Tandem member exposes. It ends
// TLS, works out who a peer is from its client certificate, and routes
// every request by HTTP Upgrade protocol or path prefix, first match
// wins, to a backend: a handler in the same process (the witness) or a
// service's Unix socket (on a node). The routes are wired in one place,
// the command that runs the front door.
//
// The port speaks plain HTTP too, told apart from TLS by a connection's
// first byte: plain requests reach only the routes marked Plain (the boot
// files iPXE fetches, which it cannot fetch over TLS pinned to our CA);
// any other plain request is redirected to HTTPS on the same port.
//
// Backends trust two headers only the front door sets: HeaderMember, the
// verified identity of a peer member, and X-Forwarded-For. Whatever a
// client sends in them is dropped.
package frontdoor

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Upgrade protocols carried by the front door.
const (
	UpgradeRaft        = "tandem-raft/1"
	UpgradeReplication = "tandem-replication/1"
	UpgradeMigration   = "tandem-migration/1"
)

// Headers between the front door, its peers and its backends.
const (
	// HeaderMember carries the verified member identity ("node/<id>",
	// "witness/<id>") of a peer that presented a cluster certificate.
	HeaderMember = "X-Tandem-Member"
	// HeaderClaim is the identity a dialling member says it has; it must
	// match its certificate.
	HeaderClaim = "X-Tandem-Claim"
	// HeaderForwardedBy marks a request a member forwarded to the leader,
	// so it is never forwarded again.
	HeaderForwardedBy = "X-Tandem-Forwarded-By"
	// HeaderClient is the address of the client a member forwards for;
	// taken only from members.
	HeaderClient = "X-Tandem-Client"
	// HeaderRefused carries, to the auditor, why the front door refused a
	// request.
	HeaderRefused = "X-Tandem-Refused"
)

// Route sends matching requests to a backend.
type Route struct {
	Name    string
	Upgrade string // matches requests asking for this Upgrade protocol
	Prefix  string // matches request paths with this prefix
	Method  string // and, if set, only this method
	// Member restricts the route to peers with a cluster certificate.
	Member bool
	// Plain serves the route on plain HTTP as well as over TLS.
	Plain   bool
	Backend http.Handler
}

func (r Route) matches(req *http.Request) bool {
	if r.Method != "" && req.Method != r.Method {
		return false
	}
	if r.Upgrade != "" {
		return strings.EqualFold(req.Header.Get("Upgrade"), r.Upgrade)
	}
	return r.Prefix != "" && strings.HasPrefix(req.URL.Path, r.Prefix)
}

// Config is the front door's configuration.
type Config struct {
	Listen string // e.g. ":443"
	TLS    *TLSSource
	Routes []Route
	// Auditor, if set, answers the requests the front door refuses (a
	// foreign certificate, a false identity) after recording them: it gets
	// the request with HeaderRefused saying why.
	Auditor http.Handler
	Logger  *slog.Logger
}

// Server is the front door.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New checks the configuration.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TLS == nil {
		return nil, errors.New("frontdoor: no TLS source")
	}
	for i, r := range cfg.Routes {
		if r.Backend == nil || (r.Upgrade == "" && r.Prefix == "") {
			return nil, fmt.Errorf("frontdoor: route %d (%s) needs a backend and an Upgrade or a prefix", i, r.Name)
		}
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// Handler is the router: identity first, then the first matching route.
func (s *Server) Handler() http.Handler { return s.router(false) }

// PlainHandler is the router for plain HTTP: the Plain routes, and a
// redirect to HTTPS for everything else.
func (s *Server) PlainHandler() http.Handler { return s.router(true) }

func (s *Server) router(plain bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(HeaderMember)
		r.Header.Del(HeaderRefused)
		r.Header.Del("X-Forwarded-For")
		id, idErr := s.cfg.TLS.PeerIdentity(r.TLS)
		if id != "" {
			r.Header.Set(HeaderMember, id)
		} else {
			r.Header.Del(HeaderClient)
			r.Header.Del(HeaderForwardedBy)
		}
		if claim := r.Header.Get(HeaderClaim); claim != "" && claim != id {
			s.log.Warn("refused a peer claiming another member's identity", "claim", claim, "certificate", id, "err", idErr, "from", r.RemoteAddr)
			s.refuse(w, r, "identity_mismatch", fmt.Sprintf("claims to be %s but its certificate says %q", claim, id))
			return
		}
		for _, rt := range s.cfg.Routes {
			if !rt.matches(r) || (plain && !rt.Plain) {
				continue
			}
			if rt.Member && id == "" {
				msg := "this endpoint is for cluster members: present a certificate of this cluster"
				if idErr != nil {
					msg += " (" + idErr.Error() + ")"
				}
				s.refuse(w, r, "not_a_member", msg)
				return
			}
			rt.Backend.ServeHTTP(w, r)
			return
		}
		if plain {
			// Credentials never travel in the clear: the client is sent
			// to the same port with TLS.
			http.Redirect(w, r, "https://"+r.Host+r.URL.RequestURI(), http.StatusPermanentRedirect)
			return
		}
		WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
}

// refuse answers 403, through the auditor when there is one.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code, msg string) {
	if s.cfg.Auditor == nil {
		WriteError(w, http.StatusForbidden, code, msg)
		return
	}
	r.Header.Set(HeaderRefused, code+": "+msg)
	s.cfg.Auditor.ServeHTTP(w, r)
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("frontdoor: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on a listener until ctx ends: TLS, and plain HTTP for the
// Plain routes, told apart by each connection's first byte.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
	}
	secure, plain := newServer(s.Handler()), newServer(s.PlainHandler())
	secure.TLSConfig = s.cfg.TLS.ServerConfig()
	tlsConns, plainConns := newConnQueue(ln.Addr()), newConnQueue(ln.Addr())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = secure.Shutdown(shutdown)
		_ = plain.Shutdown(shutdown)
	}()
	errs := make(chan error, 3)
	go func() { errs <- secure.Serve(tls.NewListener(tlsConns, secure.TLSConfig)) }()
	go func() { errs <- plain.Serve(plainConns) }()
	go func() { errs <- s.sortConns(ctx, ln, tlsConns, plainConns) }()
	s.log.Info("front door listening", "addr", ln.Addr().String())
	err := <-errs
	cancel()
	if ctx.Err() != nil && (err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed)) {
		return nil
	}
	if err == nil {
		err = errors.New("listener closed")
	}
	return fmt.Errorf("frontdoor: %w", err)
}

// sniffTimeout bounds how long a new connection may stay silent before
// its first byte says which protocol it speaks.
const sniffTimeout = 10 * time.Second

// sortConns accepts connections and hands each, once its first byte is
// in, to the TLS server (a handshake record starts with 0x16) or the
// plain one.
func (s *Server) sortConns(ctx context.Context, ln net.Listener, tlsConns, plainConns *connQueue) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
			br := bufio.NewReaderSize(c, 1)
			first, err := br.Peek(1)
			_ = c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close()
				return
			}
			pc := &peekedConn{Conn: c, r: br}
			q := plainConns
			if first[0] == 0x16 {
				q = tlsConns
			}
			if !q.put(ctx, pc) {
				c.Close()
			}
		}()
	}
}

// peekedConn is a connection whose first bytes were read to sort it.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// connQueue is a listener fed with sorted connections.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (q *connQueue) put(ctx context.Context, c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.closed:
	case <-ctx.Done():
	}
	return false
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// ErrorBody is the API's error shape: {"error": {"code", "message", "field"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// WriteError writes an API error.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}

// WriteJSON writes a JSON answer.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
