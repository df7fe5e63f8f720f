package vmm

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Event is one line of a VM's history on this node.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // started, stopped, crashed, start-failed, adopted, …
	Detail string    `json:"detail,omitempty"`
}

// history keeps each VM's events, the last maxEvents in memory and all of
// them appended to a file per VM, so they survive a restart.
type history struct {
	dir string
	mu  sync.Mutex
	m   map[string][]Event
}

const maxEvents = 200

func newHistory(dir string) *history { return &history{dir: dir, m: map[string][]Event{}} }

func (h *history) add(vm, kind, detail string) {
	e := Event{Time: time.Now().UTC(), Kind: kind, Detail: detail}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.load(vm)
	h.m[vm] = append(h.m[vm], e)
	if len(h.m[vm]) > maxEvents {
		h.m[vm] = h.m[vm][len(h.m[vm])-maxEvents:]
	}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(h.dir, vm+".jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	b, _ := json.Marshal(e)
	f.Write(append(b, '\n'))
}

// load reads a VM's events from its file the first time they are needed.
func (h *history) load(vm string) {
	if _, ok := h.m[vm]; ok {
		return
	}
	h.m[vm] = []Event{}
	f, err := os.Open(filepath.Join(h.dir, vm+".jsonl"))
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			h.m[vm] = append(h.m[vm], e)
		}
	}
	if n := len(h.m[vm]); n > maxEvents {
		h.m[vm] = h.m[vm][n-maxEvents:]
	}
}

func (h *history) events(vm string) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.load(vm)
	return append([]Event(nil), h.m[vm]...)
}
