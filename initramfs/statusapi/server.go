package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Source is what the server reports on and acts through: the supervisor
// and the node's boot facts, behind a small interface so the API is
// tested without a node.
type Source interface {
	Node() Node
	ServiceLog(name string, lines int) ([]LogLine, error)
	Control(ctx context.Context, service, action string) error
	Power(action string) error
}

// Handler serves the API:
//
//	GET  /v1/node                        Node
//	GET  /v1/services/{name}/log?lines=N []LogLine
//	POST /v1/services/{name}/{action}    start, stop, restart
//	POST /v1/power/{action}              reboot, poweroff
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Node())
	})
	mux.HandleFunc("GET /v1/services/{name}/log", func(w http.ResponseWriter, r *http.Request) {
		n := 50
		if s := r.URL.Query().Get("lines"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 {
				writeJSON(w, http.StatusBadRequest, Error{fmt.Sprintf("lines=%q: want a number of lines, 0 for all", s)})
				return
			}
			n = v
		}
		lines, err := src.ServiceLog(r.PathValue("name"), n)
		if err != nil {
			writeJSON(w, http.StatusNotFound, Error{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, lines)
	})
	mux.HandleFunc("POST /v1/services/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		if err := src.Control(r.Context(), r.PathValue("name"), r.PathValue("action")); err != nil {
			writeJSON(w, http.StatusConflict, Error{err.Error()})
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("POST /v1/power/{action}", func(w http.ResponseWriter, r *http.Request) {
		if err := src.Power(r.PathValue("action")); err != nil {
			writeJSON(w, http.StatusConflict, Error{err.Error()})
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Server serves the API on a Unix socket until its context ends.
type Server struct {
	Socket string
	Source Source
	Logger *slog.Logger
}

// Run listens on the socket (replacing a stale one) and serves.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.Socket), 0o755); err != nil {
		return fmt.Errorf("status API: %w", err)
	}
	_ = os.Remove(s.Socket) // left by an earlier run of the supervisor
	ln, err := net.Listen("unix", s.Socket)
	if err != nil {
		return fmt.Errorf("status API: listen: %w", err)
	}
	if err := os.Chmod(s.Socket, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("status API: %w", err)
	}
	srv := &http.Server{
		Handler:           Handler(s.Source),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("status API: %w", err)
	}
	return nil
}
