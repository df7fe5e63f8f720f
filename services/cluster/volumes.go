package cluster

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
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
	// CloneFrom, on create: the new volume is a copy of that one (a
	// template's disk), made where it is primary; the size defaults to
	// the source's.
	CloneFrom string `json:"clone_from,omitempty"`
}

// PrimaryRequest moves a volume's primary role.
type PrimaryRequest struct {
	Node               string `json:"node"`
	ExpectedGeneration uint64 `json:"expected_generation,omitempty"`
	Force              bool   `json:"force,omitempty"`
	Discard            bool   `json:"discard,omitempty"`
}

func (a *Agent) handleVolumes(w http.ResponseWriter, r *http.Request) {
	writePage(w, r, a.Directory().Volumes())
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
	if req.CloneFrom != "" {
		primary, err = a.clonePlace(&req, primary, err)
	}
	if err != nil {
		apiError(w, err)
		return
	}
	v := directory.Volume{Name: req.Name, Description: req.Description, SizeBytes: req.SizeBytes, Primary: primary,
		ID: randomHex(16), DataGeneration: randomGeneration(), CloneFrom: req.CloneFrom}
	if _, err := a.proposeCreate(r, directory.TypeVolumePut, directory.VolumePutPayload{Op: directory.OpCreate, Volume: v}); err != nil {
		apiError(w, err)
		return
	}
	v, _ = a.Directory().Volume(req.Name)
	frontdoor.WriteJSON(w, http.StatusCreated, v)
}

// clonePlace puts a clone where its source is primary (the copy reads
// the source's export there) and sizes it, unless asked otherwise. A
// source a running VM writes to is refused: its clone would be a copy of
// a disk in use.
func (a *Agent) clonePlace(req *VolumeRequest, asked string, askedErr error) (string, error) {
	dir := a.Directory()
	src, ok := dir.Volume(req.CloneFrom)
	if !ok {
		return "", fmt.Errorf("clone_from: volume %s: %w", req.CloneFrom, directory.ErrNotFound)
	}
	if req.Node != "" && (askedErr != nil || asked != src.Primary) {
		where := src.Primary
		if m, ok := dir.Member(src.Primary); ok {
			where = m.Name
		}
		return "", fieldError("node", fmt.Sprintf("a clone is made where its source %s is primary (%s); leave node out", src.Name, where))
	}
	for _, vm := range dir.VMs() {
		for _, d := range vm.Disks {
			if d.Volume == src.Name && vm.Running {
				return "", fmt.Errorf("volume %s is a disk of VM %s, which runs: stop it, or clone a template: %w", src.Name, vm.Name, directory.ErrConflict)
			}
		}
	}
	if req.SizeBytes == 0 {
		req.SizeBytes = src.SizeBytes
	}
	return src.Primary, nil
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
