package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/apidoc"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/pki"
)

// maxBody bounds request bodies.
const maxBody = 64 << 10

// Handler is the agent's API: the cluster endpoints, the directory
// endpoints that need a cluster, and raft's Upgrade streams.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	apidoc.Register(mux, a.routes(), a.guard)
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := r.Header.Get(frontdoor.HeaderRefused); why != "" {
			// The front door refused it: record it, then say no.
			code, msg, _ := strings.Cut(why, ": ")
			a.recordRefusal("frontdoor."+code, r.Header.Get(frontdoor.HeaderClaim), msg, clientAddr(r))
			frontdoor.WriteError(w, http.StatusForbidden, code, msg)
			return
		}
		if strings.EqualFold(r.Header.Get("Upgrade"), frontdoor.UpgradeRaft) {
			a.mu.Lock()
			s := a.stream
			a.mu.Unlock()
			if s == nil {
				frontdoor.WriteError(w, http.StatusServiceUnavailable, "not_in_cluster", ErrNotInCluster.Error())
				return
			}
			s.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type ctxKey int

const principalKey ctxKey = 1

// user requires an authenticated user with at least the given role.
func (a *Agent) user(role directory.Role, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := a.Directory().Cluster(); !ok && a.r() != nil {
			// Restarted and not yet replayed: it knows no users yet, and
			// must not answer "wrong password".
			w.Header().Set("Retry-After", "1")
			frontdoor.WriteError(w, http.StatusServiceUnavailable, "catching_up", "this member is catching up with the cluster; retry in a moment")
			return
		}
		p, err := a.authenticate(r)
		if err != nil {
			authError(err).Write(w, r)
			return
		}
		if !p.Role.AtLeast(role) {
			frontdoor.WriteError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s: needs the %s role, you are %s", errForbidden, role, p.Role))
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
	}
}

func actor(r *http.Request) string {
	if p, ok := r.Context().Value(principalKey).(principal); ok {
		return p.User
	}
	if m := r.Header.Get(frontdoor.HeaderMember); m != "" {
		return "member:" + m
	}
	return "anonymous"
}

// member requires a verified cluster member (the front door checked its
// certificate).
func (a *Agent) member(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
		if err != nil || !a.isMember(id) {
			frontdoor.WriteError(w, http.StatusForbidden, "not_a_member", "for cluster members only")
			return
		}
		next(w, r)
	}
}

// leaderOnly runs the handler on the leader; other members forward.
func (a *Agent) leaderOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rf := a.r()
		if rf == nil {
			apiError(w, ErrNotInCluster)
			return
		}
		if rf.State() != raft.Leader {
			a.forward(w, r)
			return
		}
		if !a.leaderReady.Load() {
			w.Header().Set("Retry-After", "1")
			frontdoor.WriteError(w, http.StatusServiceUnavailable, "leader_starting", "this member just became the leader; retry in a moment")
			return
		}
		next(w, r)
	}
}

// read serves a directory read: consistent (through the leader, after a
// read-index round) unless the client asks for ?stale=1, which this
// member answers from its own copy, labelled as such.
func (a *Agent) read(next http.HandlerFunc) http.HandlerFunc {
	consistent := a.leaderOnly(func(w http.ResponseWriter, r *http.Request) {
		if err := a.readIndex(r.Context()); err != nil {
			apiError(w, err)
			return
		}
		w.Header().Set("X-Tandem-Read", "consistent")
		next(w, r)
	})
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("stale") == "1" {
			if a.r() == nil {
				apiError(w, ErrNotInCluster)
				return
			}
			w.Header().Set("X-Tandem-Read", "stale")
			w.Header().Set("X-Tandem-Applied-Index", strconv.FormatUint(a.Directory().AppliedIndex(), 10))
			next(w, r)
			return
		}
		consistent(w, r)
	}
}

// readIndex makes a read on the leader linearizable: note the commit
// index, confirm leadership with a heartbeat round, then wait until the
// directory has applied up to the noted index.
func (a *Agent) readIndex(ctx context.Context) error {
	r := a.r()
	if r == nil {
		return ErrNotInCluster
	}
	ci := r.CommitIndex()
	if err := r.VerifyLeader().Error(); err != nil {
		return err
	}
	for r.AppliedIndex() < ci {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// fieldErr is invalid input in one field.
type fieldErr struct{ field, msg string }

func (e *fieldErr) Error() string { return e.field + ": " + e.msg }

func fieldError(field, msg string) error { return &fieldErr{field, msg} }

// apiError writes err with the status it deserves.
func apiError(w http.ResponseWriter, err error) {
	var fe *fieldErr
	var dfe *directory.FieldError
	var refused *refusedError
	switch {
	case errors.As(err, &fe):
		frontdoor.WriteJSON(w, http.StatusBadRequest, frontdoor.ErrorBody{Error: frontdoor.ErrorDetail{Code: "invalid", Message: err.Error(), Field: fe.field}})
	case errors.As(err, &dfe) && errors.Is(err, directory.ErrInvalid):
		frontdoor.WriteJSON(w, http.StatusBadRequest, frontdoor.ErrorBody{Error: frontdoor.ErrorDetail{Code: "invalid", Message: err.Error(), Field: dfe.Field}})
	case errors.As(err, &refused), errors.Is(err, directory.ErrRefused), errors.Is(err, ErrBadSetupCode):
		frontdoor.WriteError(w, http.StatusForbidden, "refused", err.Error())
	case errors.Is(err, directory.ErrNotFound):
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, directory.ErrExists), errors.Is(err, directory.ErrConflict), errors.Is(err, ErrInCluster), errors.Is(err, ErrNotInCluster):
		frontdoor.WriteError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, directory.ErrInvalid):
		frontdoor.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, errNoLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, ErrCannotSignNow):
		w.Header().Set("Retry-After", "1")
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "retry", err.Error())
	default:
		frontdoor.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// decode reads a JSON body, refusing unknown fields, trailing data and
// bodies over the limit.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			frontdoor.WriteError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body over %d bytes", maxBody))
			return false
		}
		frontdoor.WriteError(w, http.StatusBadRequest, "bad_json", "request body: "+err.Error())
		return false
	}
	return true
}

func (a *Agent) handleBeacon(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, a.beacon())
}

func (a *Agent) handleCA(w http.ResponseWriter, r *http.Request) {
	_, ca, err := a.live.Current()
	if err != nil || ca == nil {
		frontdoor.WriteError(w, http.StatusNotFound, "not_in_cluster", ErrNotInCluster.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(ca.PEM)
}

func (a *Agent) handleBootstrap(w http.ResponseWriter, r *http.Request) {
	var req BootstrapRequest
	if !decode(w, r, &req) {
		return
	}
	resp, err := a.Bootstrap(r.Context(), req, clientAddr(r))
	if err != nil {
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusCreated, resp)
}

func (a *Agent) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if !decode(w, r, &req) {
		return
	}
	if err := a.checkSetupCode(req.SetupCode); err != nil {
		apiError(w, err)
		return
	}
	if err := a.Join(r.Context(), req.Token, req.Peers); err != nil {
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, a.beacon())
}

func (a *Agent) handleJoinRequest(w http.ResponseWriter, r *http.Request) {
	var req JoinClaimRequest
	if !decode(w, r, &req) {
		return
	}
	resp, err := a.acceptJoin(r.Context(), req, clientAddr(r))
	if err != nil {
		a.auditRefusal("member.join", req.Name, err, clientAddr(r))
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, resp)
}

// auditRefusal records a join the cluster refused.
func (a *Agent) auditRefusal(action, target string, err error, from string) {
	var refused *refusedError
	if !errors.As(err, &refused) && !errors.Is(err, directory.ErrRefused) {
		return
	}
	a.recordRefusal(action, target, err.Error(), from)
}

// recordRefusal writes a refused request to the audit log, through the
// leader, at most a few a second so refusals cannot flood the log. It does
// not make the refusal wait.
func (a *Agent) recordRefusal(action, target, detail, from string) {
	a.log.Warn("refused", "action", action, "target", target, "detail", detail, "from", from)
	if !a.auditLimit.allow() || a.r() == nil {
		return
	}
	line := directory.AuditPayload{Action: action, Target: target, Result: "refused", Detail: detail}
	go func() {
		r := a.r()
		if r == nil {
			return
		}
		var err error
		if r.State() == raft.Leader {
			_, err = a.propose(directory.TypeAudit, "anonymous", from, line)
		} else if addr, id := r.LeaderWithID(); addr != "" {
			_, addrs, perr := ParseAddress(addr)
			if perr != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = a.memberCall(ctx, directory.Member{ID: string(id), Addresses: addrs}, http.MethodPost, "/api/v1/cluster/audit",
				auditRequest{AuditPayload: line, From: from}, nil)
		}
		if err != nil {
			a.log.Warn("audit of a refusal not written", "err", err)
		}
	}()
}

// auditRequest is a refusal another member records through the leader.
type auditRequest struct {
	directory.AuditPayload
	From string `json:"from"`
}

func (a *Agent) handleAuditWrite(w http.ResponseWriter, r *http.Request) {
	var req auditRequest
	if !decode(w, r, &req) {
		return
	}
	if _, err := a.propose(directory.TypeAudit, "anonymous", req.From, req.AuditPayload); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Agent) handleMemberSelf(w http.ResponseWriter, r *http.Request) {
	var upd directory.MemberUpdatePayload
	if !decode(w, r, &upd) {
		return
	}
	id, _ := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
	if upd.ID != id.ID {
		frontdoor.WriteError(w, http.StatusForbidden, "identity_mismatch", "a member may update only its own record")
		return
	}
	if _, err := a.propose(directory.TypeMemberUpdate, "member:"+id.ID, clientAddr(r), upd); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Agent) handleMemberState(w http.ResponseWriter, r *http.Request) {
	st := MemberState{MemberID: a.id.ID, State: "not-in-cluster"}
	if rf := a.r(); rf != nil {
		st.State, st.AppliedIndex = rf.State().String(), rf.AppliedIndex()
		if c, ok := a.Directory().Cluster(); ok {
			st.Forced = c.Forced.On && c.Forced.MemberID == a.id.ID
		}
		if f := rf.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					st.Voters = append(st.Voters, string(s.ID))
				}
			}
		}
	}
	frontdoor.WriteJSON(w, http.StatusOK, st)
}

func (a *Agent) handleNewToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TTLHours int `json:"ttl_hours"`
	}
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	ttl := tokenTTL
	if req.TTLHours > 0 {
		if req.TTLHours > 24*30 {
			apiError(w, fieldError("ttl_hours", "at most 720 (30 days)"))
			return
		}
		ttl = time.Duration(req.TTLHours) * time.Hour
	}
	_, ca, err := a.live.Current()
	if err != nil || ca == nil {
		apiError(w, ErrNotInCluster)
		return
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		apiError(w, err)
		return
	}
	expires := time.Now().Add(ttl).UTC()
	if _, err := a.propose(directory.TypeTokenPut, actor(r), clientAddr(r), directory.TokenPutPayload{
		Token: directory.JoinToken{ID: tok.ID, Key: tok.Key(), Expires: expires, CreatedBy: actor(r)},
	}); err != nil {
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusCreated, map[string]any{"token": tok.String(), "expires": expires})
}

func (a *Agent) handleRemoveMember(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	m, ok := a.Directory().Member(id)
	if !ok {
		apiError(w, fmt.Errorf("member %s: %w", id, directory.ErrNotFound))
		return
	}
	if err := a.r().RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		apiError(w, err)
		return
	}
	if _, err := a.propose(directory.TypeMemberRemove, actor(r), clientAddr(r), directory.NamePayload{Name: id}); err != nil {
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, m)
}

func (a *Agent) handleGetSettings(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, a.Directory().Settings())
}

// clusterSettings are the cluster-wide settings and their checks.
func clusterSettings() map[string]func(string) error {
	return map[string]func(string) error{
		SettingClusterIP: func(v string) error {
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() {
				return errors.New("want an IPv4 address/prefix, e.g. 192.0.2.100/24")
			}
			return nil
		},
		"cluster.name": func(v string) error {
			if len(v) > 64 {
				return errors.New("at most 64 characters")
			}
			return nil
		},
		"time.zone": func(v string) error {
			if _, err := time.LoadLocation(v); err != nil {
				return errors.New("want an IANA time zone, e.g. Asia/Shanghai")
			}
			return nil
		},
		"ntp.servers":        checkHostList,
		"dns.servers":        checkHostList,
		settingFenceUser:     checkFenceCredential,
		settingFencePassword: checkFenceCredential,
	}
}

func checkFenceCredential(v string) error {
	if len(v) > 128 || strings.ContainsAny(v, "\x00\n") {
		return errors.New("at most 128 characters, on one line")
	}
	return nil
}

func checkHostList(v string) error {
	for _, h := range strings.Split(v, ",") {
		h = strings.TrimSpace(h)
		if h == "" || len(h) > 253 || strings.ContainsAny(h, " /\\") {
			return fmt.Errorf("%q: want host names or addresses separated by commas", h)
		}
	}
	return nil
}

func (a *Agent) handlePatchSettings(w http.ResponseWriter, r *http.Request) {
	var req directory.SettingsPayload
	if !decode(w, r, &req) {
		return
	}
	known := clusterSettings()
	for k, v := range req.Set {
		check, ok := known[k]
		if node, isBMC := strings.CutPrefix(k, settingFenceBMC); isBMC && node != "" && len(node) <= 64 {
			check, ok = checkHostList, true
		}
		if !ok {
			apiError(w, fieldError("set."+k, "unknown setting"))
			return
		}
		if err := check(v); err != nil {
			apiError(w, fieldError("set."+k, err.Error()))
			return
		}
	}
	for _, k := range req.Unset {
		if _, ok := known[k]; !ok && !strings.HasPrefix(k, settingFenceBMC) {
			apiError(w, fieldError("unset", "unknown setting "+k))
			return
		}
	}
	if _, err := a.propose(directory.TypeSettingsSet, actor(r), clientAddr(r), req); err != nil {
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, a.Directory().Settings())
}

// Label is a label as the API shows it.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	Index uint64 `json:"index,omitempty"` // raft index of the write, or of the directory at the read
}

func (a *Agent) handleLabels(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, a.Directory().Labels())
}

func (a *Agent) handleGetLabel(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	v, ok := a.Directory().Label(key)
	if !ok {
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no label "+key)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, Label{Key: key, Value: v, Index: a.Directory().AppliedIndex()})
}

func (a *Agent) handlePutLabel(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Value string `json:"value"`
	}
	if !decode(w, r, &req) {
		return
	}
	key := r.PathValue("key")
	res, err := a.propose(directory.TypeLabelSet, actor(r), clientAddr(r), directory.LabelPayload{Key: key, Value: req.Value})
	if err != nil {
		apiError(w, err)
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, Label{Key: key, Value: req.Value, Index: res.Index})
}

func (a *Agent) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, _ := strconv.ParseUint(q.Get("since"), 10, 64)
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 || limit > 1000 {
		limit = 100
	}
	frontdoor.WriteJSON(w, http.StatusOK, a.Directory().Audit(since, limit))
}

// handleActivity answers the latest lines of the audit log, newest
// first, for anyone logged in: what the dashboard shows as recent events.
func (a *Agent) handleActivity(w http.ResponseWriter, r *http.Request) {
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if r.URL.Query().Has("limit") && (err != nil || limit < 1 || limit > 200) {
		apiError(w, fieldError("limit", "want 1 to 200"))
		return
	}
	if limit == 0 {
		limit = 50
	}
	frontdoor.WriteJSON(w, http.StatusOK, a.Directory().RecentAudit(limit))
}
