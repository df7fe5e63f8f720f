// Package frontdoor is the node's one TCP port. Today it serves the health
// endpoint over TLS with a self-signed certificate kept on the data
// partition; the cluster work turns it into the single-port router for
// the console, the API, raft, replication and join, with certificates
// from the cluster CA.
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
	"time"

	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// NodeStatus is where the health comes from: the supervisor's status API.
type NodeStatus interface {
	Node(ctx context.Context) (statusapi.Node, error)
}

// Config is the front door's configuration.
type Config struct {
	Listen   string // e.g. ":443"
	StateDir string // keeps the TLS key and certificate
	Status   NodeStatus
	Logger   *slog.Logger
}

// Server is the front door.
type Server struct {
	cfg  Config
	log  *slog.Logger
	cert tls.Certificate
}

// New loads (or creates) the TLS certificate.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Status == nil {
		return nil, errors.New("frontdoor: no node status source")
	}
	cert, err := loadOrCreateCert(cfg.StateDir, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("frontdoor: %w", err)
	}
	return &Server{cfg: cfg, log: cfg.Logger, cert: cert}, nil
}

// Handler routes the front door's requests.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/health", s.health)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{Error: errorDetail{Code: "not_found", Message: "no such endpoint: " + r.URL.Path}})
	})
	return mux
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("frontdoor: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	s.log.Info("front door listening", "addr", ln.Addr().String())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("frontdoor: %w", err)
	}
	return nil
}

// Health is the answer of GET /api/v1/health.
type Health struct {
	Node          string          `json:"node"`
	Version       string          `json:"version"`
	Board         string          `json:"board"`
	UptimeSeconds float64         `json:"uptime_seconds"`
	Healthy       bool            `json:"healthy"` // every critical service running
	Services      []ServiceHealth `json:"services"`
	Problems      []string        `json:"problems"`
}

// ServiceHealth is one supervised service in the health answer.
type ServiceHealth struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
	Critical bool   `json:"critical"`
	PID      int    `json:"pid,omitempty"`
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	n, err := s.cfg.Status.Node(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: errorDetail{Code: "supervisor_unreachable", Message: err.Error()}})
		return
	}
	h := Health{
		Node: n.Name, Version: n.Version, Board: n.Board, UptimeSeconds: n.UptimeSeconds,
		Healthy: true, Problems: n.Problems,
	}
	if h.Problems == nil {
		h.Problems = []string{}
	}
	for _, sv := range n.Services {
		h.Services = append(h.Services, ServiceHealth{Name: sv.Name, State: sv.State, Restarts: sv.Restarts, Critical: sv.Critical, PID: sv.PID})
		if sv.Critical && sv.State != statusapi.StateRunning {
			h.Healthy = false
		}
	}
	writeJSON(w, http.StatusOK, h)
}

// errorBody is the API's error shape: {"error": {"code", "message"}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
