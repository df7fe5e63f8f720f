package frontdoor

import (
	"bytes"
	"fmt"
	"net/http"
)

// MetricsPart is one service's share of a node's /metrics.
type MetricsPart struct {
	Name    string // e.g. storage
	Path    string // the service's own metrics endpoint
	Backend http.Handler
}

// MetricsHandler answers GET /metrics, Prometheus's scrape of the node:
// each service's metrics, asked with the scrape's own credentials, one
// after the other, and tandem_scrape_part_up saying which answered. A
// refusal (no credentials, a role too low) is the answer.
func MetricsHandler(parts []MetricsPart) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var out bytes.Buffer
		up := map[string]bool{}
		for _, p := range parts {
			sub := r.Clone(r.Context())
			sub.URL.Path, sub.URL.RawPath, sub.RequestURI = p.Path, "", ""
			rec := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
			p.Backend.ServeHTTP(rec, sub)
			switch {
			case rec.status == http.StatusOK:
				up[p.Name] = true
				out.Write(rec.body.Bytes())
			case rec.status == http.StatusUnauthorized || rec.status == http.StatusForbidden || rec.status == http.StatusTooManyRequests:
				for k, v := range rec.header {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.status)
				_, _ = w.Write(rec.body.Bytes())
				return
			}
		}
		out.WriteString("# HELP tandem_scrape_part_up 1 when a service answered this scrape.\n# TYPE tandem_scrape_part_up gauge\n")
		for _, p := range parts {
			v := 0
			if up[p.Name] {
				v = 1
			}
			fmt.Fprintf(&out, "tandem_scrape_part_up{part=%q} %d\n", p.Name, v)
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(out.Bytes())
	})
}

// bufferedResponse keeps a backend's answer for MetricsHandler.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) {
	return b.body.Write(p)
}
func (b *bufferedResponse) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		return
	}
	b.status = code
}
