// Package frontdoor is the one TCP port a Tandem member exposes. It ends
// TLS, works out who a peer is from its client certificate, and routes
// every request by HTTP Upgrade protocol or path prefix, first match
// wins, to a backend: a handler in the same process (the witness) or a
// service's Unix socket (on a node). The routes are wired in one place,
// the command that runs the front door.
//
// Backends trust two headers only the front door sets: HeaderMember, the
// verified identity of a peer member, and X-Forwarded-For. Whatever a
// client sends in them is dropped.
package frontdoor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
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
	Member  bool
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
func (s *Server) Handler() http.Handler {
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
			if !rt.matches(r) {
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

// Serve serves on a listener until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.cfg.TLS.ServerConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	s.log.Info("front door listening", "addr", ln.Addr().String())
	if err := srv.Serve(tls.NewListener(ln, srv.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("frontdoor: %w", err)
	}
	return nil
}

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
