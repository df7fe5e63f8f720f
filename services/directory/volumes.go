package directory

import (
	"fmt"
	"maps"
	"time"
)

// Volume is a replicated disk: a copy on every node, one of them primary
// (serving the VM), the other kept identical by the storage replicator.
// Who is primary is decided here, by raft, and nowhere else: the role
// generation rises with every change, and a copy that streams under an
// older generation is refused by its peer.
type Volume struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// ID names the volume's data; both copies carry it, so a stream for
	// another volume of the same name (deleted and made again) is refused.
	ID        string `json:"id"`
	SizeBytes int64  `json:"size_bytes"`
	// Primary is the member ID whose copy serves I/O.
	Primary string `json:"primary"`
	// Generation is the role generation, raised on every change of
	// primary.
	Generation uint64 `json:"generation"`
	// DataGeneration is the replica data generation both empty copies
	// start from, so the first meeting of the copies needs no sync.
	DataGeneration uint64 `json:"data_generation"`
	// Copies holds each node's copy state: a copy marked outdated missed
	// writes and may not become primary unless forced.
	Copies map[string]CopyState `json:"copies"`
	// DiscardOthers is the admin's choice after a split brain: the
	// primary overwrites the differing regions of the other copy.
	DiscardOthers bool `json:"discard_others,omitempty"`
	// CloneFrom is the volume this one is a copy of (a template's disk):
	// its primary copies the data in, then records Cloned. Until then no
	// VM starts on it.
	// Colo is the node of a fault-tolerant VM's secondary while COLO
	// keeps the copies in step: each copy is written by its own node's
	// QEMU (the primary's writes reach the secondary's copy through
	// QEMU's block replication), not by the replicator, and both record
	// what they write, so that when the pairing ends the survivor's copy
	// is brought over the other's by the union of the two bitmaps.
	Colo      string    `json:"colo,omitempty"`
	CloneFrom string    `json:"clone_from,omitempty"`
	Cloned    bool      `json:"cloned,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// CopyState is what the cluster knows of one node's copy.
type CopyState string

// Copy states.
const (
	CopyUpToDate CopyState = "uptodate" // has every acknowledged write
	CopyOutdated CopyState = "outdated" // the primary went on without it
)

// Volume payloads.
type (
	VolumePutPayload struct {
		Op     Op     `json:"op"`
		Volume Volume `json:"volume"`
	}
	// VolumePrimaryPayload moves the primary role. Force promotes a copy
	// marked outdated (losing what it missed); Discard, after a split
	// brain, makes the new primary overwrite the other copy's changes.
	VolumePrimaryPayload struct {
		Name               string `json:"name"`
		Member             string `json:"member"`
		ExpectedGeneration uint64 `json:"expected_generation,omitempty"`
		Force              bool   `json:"force,omitempty"`
		Discard            bool   `json:"discard,omitempty"`
	}
	// VolumeCopyPayload records a copy's state. Only the primary, at the
	// current role generation, may say it (the actor is checked).
	VolumeCopyPayload struct {
		Name       string    `json:"name"`
		Member     string    `json:"member"`
		State      CopyState `json:"state"`
		Generation uint64    `json:"generation"`
	}
	// VolumeClonedPayload: the primary finished copying a clone's data.
	VolumeClonedPayload struct {
		Name       string `json:"name"`
		ID         string `json:"id"`
		Generation uint64 `json:"generation"`
	}
)

// Copying reports whether the volume's data is still being cloned in.
func (v Volume) Copying() bool { return v.CloneFrom != "" && !v.Cloned }

// MaxVolumeBytes bounds a volume's size (64 TiB).
const MaxVolumeBytes = 64 << 40

// volumeAlign is the replicator's block size: sizes are multiples of it.
const volumeAlign = 4096

// Volume returns a volume.
func (d *Directory) Volume(name string) (Volume, bool) {
	v, ok := get(d, func(s *state) map[string]*Volume { return s.Volumes }, name)
	v.Copies = maps.Clone(v.Copies)
	return v, ok
}

// Volumes returns every volume, sorted by name.
func (d *Directory) Volumes() []Volume {
	vs := list(d, func(s *state) map[string]*Volume { return s.Volumes })
	for i := range vs {
		vs[i].Copies = maps.Clone(vs[i].Copies)
	}
	return vs
}

func (d *Directory) isNode(id string) bool {
	m, ok := d.s.Members[id]
	return ok && m.Role == MemberNode
}

func (d *Directory) applyVolumePut(index uint64, env Envelope) func(VolumePutPayload) (string, error) {
	return func(p VolumePutPayload) (string, error) {
		v := p.Volume
		if err := checkName("volume", v.Name); err != nil {
			return "", err
		}
		if err := checkText("description", v.Description, 4096); err != nil {
			return "", err
		}
		if v.SizeBytes <= 0 || v.SizeBytes%volumeAlign != 0 || v.SizeBytes > MaxVolumeBytes {
			return "", fmt.Errorf("volume %s: size %d: want a multiple of %d bytes up to %d: %w", v.Name, v.SizeBytes, volumeAlign, int64(MaxVolumeBytes), ErrInvalid)
		}
		old, exists := d.s.Volumes[v.Name]
		switch p.Op {
		case OpCreate:
			if exists {
				return "", fmt.Errorf("volume %s: %w", v.Name, ErrExists)
			}
			if v.ID == "" || v.DataGeneration == 0 {
				return "", fmt.Errorf("volume %s: an ID and a data generation are required: %w", v.Name, ErrInvalid)
			}
			if !d.isNode(v.Primary) {
				return "", fmt.Errorf("volume %s: primary %q is not a node of the cluster: %w", v.Name, v.Primary, ErrInvalid)
			}
			if v.CloneFrom != "" {
				src, ok := d.s.Volumes[v.CloneFrom]
				switch {
				case !ok:
					return "", fmt.Errorf("volume %s: clone of %s: %w", v.Name, v.CloneFrom, ErrNotFound)
				case src.SizeBytes > v.SizeBytes:
					return "", fmt.Errorf("volume %s: %d bytes cannot hold a clone of %s (%d bytes): %w", v.Name, v.SizeBytes, src.Name, src.SizeBytes, ErrInvalid)
				case src.Copying():
					return "", fmt.Errorf("volume %s: %s is itself still being cloned: %w", v.Name, src.Name, ErrConflict)
				case src.Primary != v.Primary:
					return "", fmt.Errorf("volume %s: a clone is made where its source %s is primary (%s): %w", v.Name, src.Name, src.Primary, ErrInvalid)
				}
			}
			v.Generation, v.Created, v.DiscardOthers, v.Cloned, v.Colo = 1, env.Time, false, false, ""
			v.Copies = map[string]CopyState{}
			for id, m := range d.s.Members {
				if m.Role == MemberNode {
					v.Copies[id] = CopyUpToDate
				}
			}
		case OpUpdate:
			// Only the description and the size (grown) change here; the
			// roles have their own commands.
			if !exists {
				return "", fmt.Errorf("volume %s: %w", v.Name, ErrNotFound)
			}
			if v.SizeBytes < old.SizeBytes {
				return "", fmt.Errorf("volume %s: %d bytes is smaller than its %d: volumes only grow: %w", v.Name, v.SizeBytes, old.SizeBytes, ErrInvalid)
			}
			nv := *old
			nv.Description, nv.SizeBytes = v.Description, v.SizeBytes
			v = nv
		default:
			return "", fmt.Errorf("op %q: %w", p.Op, ErrInvalid)
		}
		v.Updated = env.Time
		d.s.Volumes[v.Name] = &v
		d.audit(index, env, "volume.put", v.Name, "ok", fmt.Sprintf("%s, %d bytes", p.Op, v.SizeBytes))
		return v.Name, nil
	}
}

func (d *Directory) applyVolumeDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return func(p NamePayload) (string, error) {
		for _, vm := range d.s.VMs {
			for _, disk := range vm.Disks {
				if disk.Volume == p.Name {
					return "", fmt.Errorf("volume %s is a disk of VM %s: %w", p.Name, vm.Name, ErrConflict)
				}
			}
		}
		for _, v := range d.s.Volumes {
			if v.CloneFrom == p.Name && v.Copying() {
				return "", fmt.Errorf("volume %s is being cloned into %s: %w", p.Name, v.Name, ErrConflict)
			}
		}
		return deleteRecord(d, index, env, "volume.delete", d.s.Volumes)(p)
	}
}

func (d *Directory) applyVolumePrimary(index uint64, env Envelope) func(VolumePrimaryPayload) (string, error) {
	return func(p VolumePrimaryPayload) (string, error) {
		old, ok := d.s.Volumes[p.Name]
		if !ok {
			return "", fmt.Errorf("volume %s: %w", p.Name, ErrNotFound)
		}
		if p.ExpectedGeneration != 0 && p.ExpectedGeneration != old.Generation {
			return "", fmt.Errorf("volume %s changed roles since generation %d (now %d): %w", p.Name, p.ExpectedGeneration, old.Generation, ErrConflict)
		}
		if !d.isNode(p.Member) {
			return "", fmt.Errorf("volume %s: %q is not a node of the cluster: %w", p.Name, p.Member, ErrInvalid)
		}
		if p.Discard && !p.Force {
			return "", fmt.Errorf("volume %s: discarding the other copy's changes needs force: %w", p.Name, ErrInvalid)
		}
		v := *old
		v.Copies = maps.Clone(old.Copies)
		if v.Colo != "" {
			// A fault-tolerant VM's copies were written apart by their
			// QEMUs: the new primary's copy wins.
			endColo(&v, p.Member)
		}
		if v.Copies[p.Member] == CopyOutdated {
			if !p.Force {
				return "", fmt.Errorf("volume %s: the copy on %s is outdated (it missed writes); promote it only with force, losing them: %w", p.Name, p.Member, ErrRefused)
			}
			// The forced copy is now the reference; the others hold
			// writes it lacks and must not be promoted without a choice.
			for id := range v.Copies {
				v.Copies[id] = CopyOutdated
			}
		}
		v.Copies[p.Member] = CopyUpToDate
		v.Primary, v.Generation, v.DiscardOthers = p.Member, old.Generation+1, p.Discard || old.Colo != ""
		v.Updated = env.Time
		d.s.Volumes[v.Name] = &v
		detail := fmt.Sprintf("primary %s at generation %d", p.Member, v.Generation)
		if p.Force {
			detail += ", forced"
		}
		if p.Discard {
			detail += ", discarding the other copy's changes"
		}
		d.audit(index, env, "volume.primary", v.Name, "ok", detail)
		return v.Name, nil
	}
}

func (d *Directory) applyVolumeCloned(index uint64, env Envelope) func(VolumeClonedPayload) (string, error) {
	return func(p VolumeClonedPayload) (string, error) {
		old, ok := d.s.Volumes[p.Name]
		if !ok || old.ID != p.ID {
			return "", fmt.Errorf("volume %s (id %s): %w", p.Name, p.ID, ErrNotFound)
		}
		if env.Actor != "member:"+old.Primary || p.Generation != old.Generation {
			return "", fmt.Errorf("volume %s: only the primary %s at generation %d records a clone done (asked by %s at %d): %w",
				p.Name, old.Primary, old.Generation, env.Actor, p.Generation, ErrRefused)
		}
		if old.CloneFrom == "" {
			return "", fmt.Errorf("volume %s is not a clone: %w", p.Name, ErrInvalid)
		}
		v := *old
		v.Cloned, v.Updated = true, env.Time
		d.s.Volumes[v.Name] = &v
		d.audit(index, env, "volume.cloned", v.Name, "ok", "copied from "+v.CloneFrom)
		return v.Name, nil
	}
}

func (d *Directory) applyVolumeCopy(index uint64, env Envelope) func(VolumeCopyPayload) (string, error) {
	return func(p VolumeCopyPayload) (string, error) {
		old, ok := d.s.Volumes[p.Name]
		if !ok {
			return "", fmt.Errorf("volume %s: %w", p.Name, ErrNotFound)
		}
		// Fencing: only the primary of the current generation speaks for
		// the copies. A primary that lost its role cannot outdate the copy
		// that replaced it.
		if env.Actor != "member:"+old.Primary || p.Generation != old.Generation {
			return "", fmt.Errorf("volume %s: only the primary %s at generation %d records copy states (asked by %s at %d): %w",
				p.Name, old.Primary, old.Generation, env.Actor, p.Generation, ErrRefused)
		}
		if p.Member == old.Primary || !d.isNode(p.Member) {
			return "", fmt.Errorf("volume %s: %q is not the secondary: %w", p.Name, p.Member, ErrInvalid)
		}
		if old.Colo != "" {
			return "", fmt.Errorf("volume %s: COLO keeps the copies of a fault-tolerant VM, not the replicator: %w", p.Name, ErrConflict)
		}
		if p.State != CopyUpToDate && p.State != CopyOutdated {
			return "", fmt.Errorf("copy state %q: want uptodate or outdated: %w", p.State, ErrInvalid)
		}
		v := *old
		v.Copies = maps.Clone(old.Copies)
		v.Copies[p.Member] = p.State
		if p.State == CopyUpToDate {
			v.DiscardOthers = false // the chosen data has reached the other copy
		}
		v.Updated = env.Time
		d.s.Volumes[v.Name] = &v
		d.audit(index, env, "volume.copy", v.Name, "ok", fmt.Sprintf("copy on %s %s", p.Member, p.State))
		return v.Name, nil
	}
}
