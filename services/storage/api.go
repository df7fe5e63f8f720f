package storage

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tandemhci/tandem/services/apidoc"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/metrics"
	"github.com/tandemhci/tandem/services/replica"
)

// headerVolume names the volume a replication stream is for.
const headerVolume = "X-Tandem-Volume"

// Handler serves the storage API and the peer's replication streams.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	apidoc.Register(mux, s.routes(), s.cfg.Cluster.Guard)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), replica.UpgradeProtocol) {
			s.serveReplication(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// APIRoutes describes the storage service's endpoints, for the API's
// document: the same list Handler serves, without handlers.
func APIRoutes() []apidoc.Route {
	routes := (&Service{}).routes()
	for i := range routes {
		routes[i].Handler = nil
	}
	return routes
}

// routes is every endpoint of the storage service. Those about one
// volume run on the node holding its primary copy (onPrimary forwards).
func (s *Service) routes() []apidoc.Route {
	viewer, operator := apidoc.Viewer, apidoc.Operator
	format := []apidoc.Param{{Name: "format", Description: "raw or qcow2"}}
	node := []apidoc.Param{{Name: "node", Description: "the node (name or member ID) to ask, if not this one"}}
	return []apidoc.Route{
		{Method: "GET", Path: "/api/v1/storage/volumes", Access: viewer, Summary: "A node's copies (this one's, or ?node='s), their sync state and resync progress", Query: node, Response: []VolumeStatus{}, Handler: s.onNamedNode(s.handleList)},
		{Method: "GET", Path: "/api/v1/storage/volumes/{name}", Access: viewer, Summary: "A volume's primary copy", Response: VolumeStatus{}, Handler: s.onPrimary(s.handleStatus)},
		{Method: "POST", Path: "/api/v1/storage/volumes/{name}/verify", Access: operator, Summary: "Compare both copies block by block", Response: replica.VerifyReport{}, Handler: s.onPrimary(s.handleVerify)},
		{Method: "PUT", Path: "/api/v1/storage/volumes/{name}/image", Access: operator, Summary: "Write a disk image (raw or qcow2 body) into a volume", Query: format, Handler: s.onPrimary(s.handleImport), Status: http.StatusOK},
		{Method: "GET", Path: "/api/v1/storage/volumes/{name}/image", Access: operator, Summary: "Read a volume as a disk image", Query: format, Handler: s.onPrimary(s.handleExport), Status: http.StatusOK},
		{Method: "GET", Path: "/api/v1/storage/metrics", Access: viewer, Summary: "This node's copies in Prometheus's text format", Handler: s.handleMetrics, Status: http.StatusOK},
		{Method: "GET", Path: "/api/v1/storage/disks", Access: viewer, Summary: "A node's disks (this one's, or ?node='s): health and latency", Query: node, Response: DisksReport{}, Handler: s.onNamedNode(s.handleDisks)},
	}
}

// serveReplication takes a primary's stream for this node's copy.
func (s *Service) serveReplication(w http.ResponseWriter, r *http.Request) {
	id, err := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
	s.mu.Lock()
	view := s.view
	s.mu.Unlock()
	peer, _ := peerOf(view)
	if err != nil || id.ID != peer.ID {
		frontdoor.WriteError(w, http.StatusForbidden, "not_the_peer", "replication streams come from the other node of the cluster only")
		return
	}
	name := r.Header.Get(headerVolume)
	c := s.copyOf(name)
	if c == nil {
		frontdoor.WriteError(w, http.StatusNotFound, "no_such_volume", fmt.Sprintf("this node has no copy of volume %q (yet)", name))
		return
	}
	conn, err := memberconn.Accept(w, replica.UpgradeProtocol)
	if err != nil {
		s.log.Warn("replication stream", "volume", name, "err", err)
		return
	}
	c.mu.Lock()
	rv := c.rv
	c.mu.Unlock()
	if err := rv.Serve(r.Context(), conn); err != nil && r.Context().Err() == nil {
		var refused *replica.RefusedError
		if errors.As(err, &refused) {
			c.noteSplitBrain(refused, peer.Name)
		}
		s.log.Info("replication stream from the primary ended", "volume", name, "err", err)
	}
}

// onNamedNode runs the handler on the node ?node= names (default: this
// one), forwarding the request there.
func (s *Service) onNamedNode(next http.HandlerFunc) http.HandlerFunc {
	return s.cfg.Dialer.OnNamed(func() (string, []memberconn.Peer) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.view.Self, s.view.Peers()
	}, next)
}

// onPrimary runs the handler where the volume is primary: a request that
// reached the other node is forwarded there, once.
func (s *Service) onPrimary(next func(http.ResponseWriter, *http.Request, *copyState)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		c := s.copyOf(name)
		if c == nil {
			frontdoor.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no volume %q on this node", name))
			return
		}
		c.mu.Lock()
		def, peer, rv := c.def, c.peer, c.rv
		c.mu.Unlock()
		if role, _ := rv.Role(); role == replica.Primary {
			next(w, r, c)
			return
		}
		if def.Primary != peer.ID || peer.ID == "" {
			frontdoor.WriteError(w, http.StatusConflict, "no_primary", fmt.Sprintf("volume %s is not primary on this node and its primary is not known here", name))
			return
		}
		s.cfg.Dialer.Forward(w, r, peer.ID, peer.Name, peer.Addresses)
	}
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) {
	out := []VolumeStatus{}
	for _, n := range s.names() {
		if c := s.copyOf(n); c != nil {
			out = append(out, c.status())
		}
	}
	frontdoor.WriteJSON(w, http.StatusOK, out)
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request, c *copyState) {
	frontdoor.WriteJSON(w, http.StatusOK, c.status())
}

func (s *Service) handleVerify(w http.ResponseWriter, r *http.Request, c *copyState) {
	c.mu.Lock()
	rv := c.rv
	c.mu.Unlock()
	rep, err := rv.Verify(r.Context())
	if err != nil {
		frontdoor.WriteError(w, http.StatusConflict, "verify_failed", err.Error())
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, rep)
}

func (s *Service) handleDisks(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, s.disks.report(r.Context(), s.latencies()))
}

// handleMetrics answers this node's copies in Prometheus's text format:
// replication state, resync progress, checksum errors and latency.
func (s *Service) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var t metrics.Text
	var copies []VolumeStatus
	for _, n := range s.names() {
		if c := s.copyOf(n); c != nil {
			copies = append(copies, c.status())
		}
	}
	s.mu.Lock()
	self := s.view.Self
	for _, m := range s.view.Members {
		if m.ID == self {
			self = m.Name
		}
	}
	s.mu.Unlock()
	family := func(name, typ, help string, get func(VolumeStatus) float64) {
		t.Family(name, typ, help)
		for _, c := range copies {
			t.Value(name, get(c), "volume", c.Name, "node", self, "role", c.Replica.Role)
		}
	}
	family("tandem_replica_peer_connected", "gauge", "1 when the copy is joined to its peer.", func(c VolumeStatus) float64 { return metrics.Bool(c.Replica.Peer == "connected") })
	family("tandem_replica_in_sync_ratio", "gauge", "Share of the copy in step with the peer (0 to 1).", func(c VolumeStatus) float64 { return c.Replica.InSyncPercent / 100 })
	family("tandem_replica_out_of_sync_bytes", "gauge", "Bytes the peer's copy is behind by.", func(c VolumeStatus) float64 { return float64(c.Replica.OutOfSyncBytes) })
	family("tandem_replica_resync_bytes_per_second", "gauge", "Resync speed.", func(c VolumeStatus) float64 { return float64(c.Replica.ResyncRate) })
	family("tandem_replica_checksum_errors_total", "counter", "Blocks whose checksum did not match.", func(c VolumeStatus) float64 { return float64(c.Replica.ChecksumErrors) })
	family("tandem_replica_write_p99_seconds", "gauge", "99th percentile of acknowledged writes' latency.", func(c VolumeStatus) float64 { return float64(c.Replica.Writes.P99us) / 1e6 })
	family("tandem_replica_read_p99_seconds", "gauge", "99th percentile of reads' latency.", func(c VolumeStatus) float64 { return float64(c.Replica.Reads.P99us) / 1e6 })
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, t.String())
}
