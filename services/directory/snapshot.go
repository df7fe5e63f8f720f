package directory

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// snapshotHeader starts every snapshot, so a restore knows what it reads.
type snapshotHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

const snapshotFormat = "tandem-directory"

// Snapshot implements raft.FSM: a copy of the maps' pointers taken under
// the read lock; the encoding happens later, in Persist, while commands
// go on being applied.
func (d *Directory) Snapshot() (raft.FSMSnapshot, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return &snapshot{s: d.s.clone()}, nil
}

type snapshot struct{ s *state }

// Persist writes the snapshot as a header line and the state as JSON.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 256<<10)
	enc := json.NewEncoder(w)
	err := enc.Encode(snapshotHeader{Format: snapshotFormat, Version: 1})
	if err == nil {
		err = enc.Encode(s.s)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("directory snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot; nothing is held.
func (s *snapshot) Release() {}

// Restore implements raft.FSM: it reads a snapshot into a fresh state and
// swaps it in whole, so a bad snapshot leaves the directory as it was.
func (d *Directory) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	dec := json.NewDecoder(bufio.NewReader(rc))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return fmt.Errorf("directory snapshot header: %w", err)
	}
	if h.Format != snapshotFormat || h.Version != 1 {
		return fmt.Errorf("snapshot is %s version %d; this member reads %s version 1", h.Format, h.Version, snapshotFormat)
	}
	s := newState()
	if err := dec.Decode(s); err != nil {
		return fmt.Errorf("directory snapshot: %w", err)
	}
	s.fillNil() // JSON null leaves a map nil; the apply functions write to them
	d.mu.Lock()
	d.s = s
	d.mu.Unlock()
	d.publish(Event{Index: s.Index, Type: "restore"})
	return nil
}
