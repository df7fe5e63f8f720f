package vmm

import (
	"maps"
	"net/http"
	"time"

	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/metrics"
)

// Stats are a node's samples, for the console's charts.
type Stats struct {
	Node     string           `json:"node"`
	NodeName string           `json:"node_name"`
	Samples  []metrics.Sample `json:"samples"`
}

// newSampler samples this node and the VMs it runs (not FT secondaries:
// their QEMU mirrors the primary's, and its QMP is busy with COLO).
func (m *Manager) newSampler() *metrics.Sampler {
	return metrics.New(metrics.Config{
		Logger: m.log,
		Identity: func() (string, string) {
			m.mu.Lock()
			self := m.view.Self
			m.mu.Unlock()
			if self == "" {
				return "", ""
			}
			return self, m.memberName(self)
		},
		VMs: func() []metrics.VM {
			m.mu.Lock()
			running := maps.Clone(m.vms)
			m.mu.Unlock()
			var out []metrics.VM
			for name, in := range running {
				if in.isSecondary() || in.pid == 0 {
					continue
				}
				in.mu.Lock()
				def := in.def
				in.mu.Unlock()
				v := metrics.VM{Name: name, PID: in.pid, CPUs: def.CPUs, BlockStats: in.blockStats}
				for i := range def.NICs {
					v.Taps = append(v.Taps, tapName(name, i))
				}
				out = append(out, v)
			}
			return out
		},
	})
}

// blockStats sums what the VM's disks read and wrote.
func (in *instance) blockStats() (read, written uint64, err error) {
	stats, err := in.raw.QueryBlockstats(nil)
	if err != nil {
		return 0, 0, err
	}
	for _, s := range stats {
		read += uint64(s.Stats.RdBytes)
		written += uint64(s.Stats.WrBytes)
	}
	return read, written, nil
}

// handleStats answers this node's samples since ?since= (RFC 3339;
// default: all kept, the last 10 minutes).
func (m *Manager) handleStats(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			frontdoor.WriteJSON(w, http.StatusBadRequest, frontdoor.ErrorBody{Error: frontdoor.ErrorDetail{Code: "invalid", Message: "since: want an RFC 3339 time", Field: "since"}})
			return
		}
		since = t
	}
	id, name := m.sampler.Identity()
	frontdoor.WriteJSON(w, http.StatusOK, Stats{Node: id, NodeName: name, Samples: m.sampler.Since(since)})
}

// handleMetrics answers this node's newest sample in Prometheus's text
// format.
func (m *Manager) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_ = m.sampler.WriteMetrics(w)
}
