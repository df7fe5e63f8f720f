package frontdoor

import (
	"context"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// UnixBackend proxies requests, Upgrade streams included, to a service
// listening on a Unix socket. The front door's identity header and
// X-Forwarded-For go along; a service that is down answers 502.
func UnixBackend(socket string, log *slog.Logger) http.Handler {
	target := &url.URL{Scheme: "http", Host: "backend"}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// The Host the client asked for stays: a service checks the
			// Origin of a browser's request against it.
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			// Rewrite drops hop-by-hop headers but the identity header is
			// ours: carry it on.
			for _, h := range []string{HeaderMember, HeaderClient, HeaderForwardedBy, HeaderRefused} {
				if v := pr.In.Header.Get(h); v != "" {
					pr.Out.Header.Set(h, v)
				}
			}
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     time.Minute,
		},
		FlushInterval: -1, // stream answers (event streams, consoles) as they come
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("backend unavailable", "socket", socket, "path", r.URL.Path, "err", err)
			WriteError(w, http.StatusBadGateway, "service_unavailable", "the service behind this endpoint is not answering; try again shortly")
		},
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
