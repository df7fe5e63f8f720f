package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
)

// Volume definitions live here, in the directory; the storage service on
// each node makes its copy follow them and serves the data-plane API
// (status, verify, images) under /api/v1/storage/.

// VolumeRequest creates or changes a volume.
type VolumeRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	SizeBytes   int64  `json:"size_bytes"`
	// Node is the node (name or member ID) whose copy starts as primary;
	// empty: the node with the fewest primaries.
	Node string `json:"node,omitempty"`
}

// PrimaryRequest moves a volume's primary role.
type PrimaryRequest struct {
	Node               string `json:"node"`
	ExpectedGeneration uint64 `json:"expected_generation,omitempty"`
	Force              bool   `json:"force,omitempty"`
	Discard            bool   `json:"discard,omitempty"`
}

func (a *Agent) handleVolumes(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, a.Directory().Volumes())
}

func (a *Agent) handleVolume(w http.ResponseWriter, r *http.Request) {
	v, ok := a.Directory().Volume(r.PathValue("name"))
	if !ok {
		apiError(w, fmt.Errorf("volume %s: %w", r.PathValue("name"), directory.ErrNotFound))
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, v)
}

// nodeID resolves a node's name or member ID.
func (a *Agent) nodeID(nameOrID string) (string, error) {
	d := a.Directory()
	m, ok := d.Member(nameOrID)
	if !ok {
		m, ok = d.MemberByName(nameOrID)
	}
	if !ok || m.Role != directory.MemberNode {
		return "", fieldError("node", fmt.Sprintf("%q is not a node of the cluster", nameOrID))
	}
	return m.ID, nil
}

// leastLoadedNode is the node holding the fewest primaries (by name on a
// tie), where a new volume starts.
func (a *Agent) leastLoadedNode() (string, error) {
	d := a.Directory()
	count := map[string]int{}
	var nodes []directory.Member
	for _, m := range d.Members() {
		if m.Role == directory.MemberNode {
			nodes = append(nodes, m)
		}
	}
	if len(nodes) == 0 {
		return "", fmt.Errorf("no nodes: %w", directory.ErrInvalid)
	}
	for _, v := range d.Volumes() {
		count[v.Primary]++
	}
	best := slices.MinFunc(nodes, func(x, y directory.Member) int {
		if c := count[x.ID] - count[y.ID]; c != 0 {
			return c
		}
		return strings.Compare(x.Name, y.Name)
	})
	return best.ID, nil
}

func (a *Agent) handleCreateVolume(w http.ResponseWriter, r *http.Request) {
	var req VolumeRequest
	if !decode(w, r, &req) {
		return
	}
	var primary string
	var err error
	if req.Node != "" {
		primary, err = a.nodeID(req.Node)
	} else {
		primary, err = a.leastLoadedNode()
	}
	if err != nil {
		apiError(w, err)
		return
	}
	v := directory.Volume{Name: req.Name, Description: req.Description, SizeBytes: req.SizeBytes, Primary: primary,
		ID: randomHex(16), DataGeneration: randomGeneration()}
	if _, err := a.propose(directory.TypeVolumePut, actor(r), clientAddr(r), directory.VolumePutPayload{Op: directory.OpCreate, Volume: v}); err != nil {
		apiError(w, err)
		return
	}
	v, _ = a.Directory().Volume(req.Name)
	frontdoor.WriteJSON(w, http.StatusCreated, v)
}

// randomGeneration is a replica data generation: random, never zero.
func randomGeneration() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if g := binary.BigEndian.Uint64(b[:]); g != 0 {
			return g
		}
	}
}

func (a *Agent) handleUpdateVolume(w http.ResponseWriter, r *http.Request) {
	var req VolumeRequest
	if !decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	old, ok := a.Directory().Volume(name)
	if !ok {
		apiError(w, fmt.Errorf("volume %s: %w", name, directory.ErrNotFound))
		return
	}
	if req.Name != "" && req.Name != name {
		apiError(w, fieldError("name", "volumes are not renamed"))
		return
	}
	if req.Node != "" {
		apiError(w, fieldError("node", "move the primary with POST /api/v1/volumes/"+name+"/primary"))
		return
	}
	v := directory.Volume{Name: name, Description: old.Description, SizeBytes: old.SizeBytes}
	if req.SizeBytes != 0 {
		v.SizeBytes = req.SizeBytes
	}
	if req.Description != "" {
		v.Description = req.Description
	}
	if _, err := a.propose(directory.TypeVolumePut, actor(r), clientAddr(r), directory.VolumePutPayload{Op: directory.OpUpdate, Volume: v}); err != nil {
		apiError(w, err)
		return
	}
	v, _ = a.Directory().Volume(name)
	frontdoor.WriteJSON(w, http.StatusOK, v)
}

func (a *Agent) handleDeleteVolume(w http.ResponseWriter, r *http.Request) {
	if _, err := a.propose(directory.TypeVolumeDelete, actor(r), clientAddr(r), directory.NamePayload{Name: r.PathValue("name")}); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Agent) handleVolumePrimary(w http.ResponseWriter, r *http.Request) {
	var req PrimaryRequest
	if !decode(w, r, &req) {
		return
	}
	if p, _ := r.Context().Value(principalKey).(principal); (req.Force || req.Discard) && p.Role != directory.RoleAdmin {
		frontdoor.WriteError(w, http.StatusForbidden, "forbidden", "forcing a promotion or discarding data needs the admin role")
		return
	}
	id, err := a.nodeID(req.Node)
	if err != nil {
		apiError(w, err)
		return
	}
	name := r.PathValue("name")
	if _, err := a.propose(directory.TypeVolumePrimary, actor(r), clientAddr(r), directory.VolumePrimaryPayload{
		Name: name, Member: id, ExpectedGeneration: req.ExpectedGeneration, Force: req.Force, Discard: req.Discard,
	}); err != nil {
		apiError(w, err)
		return
	}
	v, _ := a.Directory().Volume(name)
	frontdoor.WriteJSON(w, http.StatusOK, v)
}

// handleVolumeCopy records a copy state for the member that asks: only a
// volume's primary may (the directory checks the actor and generation).
func (a *Agent) handleVolumeCopy(w http.ResponseWriter, r *http.Request) {
	var p directory.VolumeCopyPayload
	if !decode(w, r, &p) {
		return
	}
	id, _ := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
	if _, err := a.propose(directory.TypeVolumeCopy, "member:"+id.ID, clientAddr(r), p); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// --- the node-local API, for the storage service --------------------------

// The local API is served on the agent's Unix socket only: the front door
// routes no /local/ path, and a request carrying X-Forwarded-For came
// through a proxy and is refused.

// StorageView is what the storage service reconciles against.
type StorageView struct {
	Index     uint64 `json:"index"` // the directory's applied index
	Self      string `json:"self"`  // this member's ID
	InCluster bool   `json:"in_cluster"`
	// Current says the member has caught up with the cluster (it leads,
	// or it heard from the leader lately and applied what was committed):
	// only then may a storage service act on being named primary or on a
	// volume's absence.
	Current bool               `json:"current"`
	Members []directory.Member `json:"members"`
	Volumes []directory.Volume `json:"volumes"`
}

// Principal is an authenticated user, as the local API reports it.
type Principal struct {
	User string         `json:"user"`
	Role directory.Role `json:"role"`
}

func (a *Agent) local(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get(frontdoor.HeaderMember) != "" {
			frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
			return
		}
		next(w, r)
	}
}

// handleLocalStorage answers the storage view, waiting (up to ?wait=
// seconds) until the directory has applied past ?after=.
func (a *Agent) handleLocalStorage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
	wait, err := strconv.Atoi(q.Get("wait"))
	if err != nil || wait < 0 || wait > 60 {
		wait = 0
	}
	events, unsubscribe := a.Directory().Subscribe(16)
	defer unsubscribe()
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(wait)*time.Second)
	defer cancel()
	ticker := time.NewTicker(time.Second) // raft restarts replace the directory
	defer ticker.Stop()
	for a.Directory().AppliedIndex() <= after && wait > 0 {
		select {
		case <-events:
		case <-ticker.C:
		case <-ctx.Done():
			wait = 0
		}
	}
	d := a.Directory()
	view := StorageView{Index: d.AppliedIndex(), Self: a.id.ID, Members: d.Members(), Volumes: d.Volumes()}
	if rf := a.r(); rf != nil {
		view.InCluster = true
		view.Current = rf.State() == raft.Leader ||
			(rf.State() == raft.Follower && time.Since(rf.LastContact()) < 3*time.Second && rf.AppliedIndex() >= rf.CommitIndex() && d.AppliedIndex() > 0)
	}
	frontdoor.WriteJSON(w, http.StatusOK, view)
}

// handleLocalVolumeCopy records a copy state through the leader, as this
// member.
func (a *Agent) handleLocalVolumeCopy(w http.ResponseWriter, r *http.Request) {
	var p directory.VolumeCopyPayload
	if !decode(w, r, &p) {
		return
	}
	rf := a.r()
	if rf == nil {
		apiError(w, ErrNotInCluster)
		return
	}
	var err error
	if rf.State() == raft.Leader {
		_, err = a.propose(directory.TypeVolumeCopy, "member:"+a.id.ID, "", p)
	} else {
		err = a.callLeader(r.Context(), http.MethodPost, "/api/v1/cluster/volumes/copy", p, nil)
	}
	if err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleLocalWhoami authenticates a user's credentials for a service on
// this node that does not keep users itself.
func (a *Agent) handleLocalWhoami(w http.ResponseWriter, r *http.Request) {
	p, err := a.authenticate(r)
	if err != nil {
		frontdoor.WriteError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, Principal{User: p.User, Role: p.Role})
}
