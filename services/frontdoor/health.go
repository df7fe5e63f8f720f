package frontdoor

import (
	"context"
	"net/http"
	"time"

	"github.com/tandemhci/tandem/initramfs/statusapi"
)

// NodeStatus is where node health comes from: the supervisor's status API.
type NodeStatus interface {
	Node(ctx context.Context) (statusapi.Node, error)
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

// HealthHandler answers GET /api/v1/health, without authentication, from
// the supervisor's view of the node.
func HealthHandler(st NodeStatus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		n, err := st.Node(ctx)
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, "supervisor_unreachable", err.Error())
			return
		}
		WriteJSON(w, http.StatusOK, HealthOf(n))
	})
}

// HealthOf summarises a node's status for the health endpoint.
func HealthOf(n statusapi.Node) Health {
	h := Health{
		Node: n.Name, Version: n.Version, Board: n.Board, UptimeSeconds: n.UptimeSeconds,
		Healthy: true, Problems: n.Problems, Services: []ServiceHealth{},
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
	return h
}
