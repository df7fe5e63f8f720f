package directory

import (
	"fmt"
	"time"
)

// A create sent again (a client retrying after a lost answer) must not
// make a second record, nor fail because the first exists: a create that
// carries the client's Idempotency-Key records it, and the same key from
// the same actor within idempotencyTTL names what that create made. The
// record is in the directory, so a retry that reaches a new leader is
// answered alike.

// IdempotentWrite is what a keyed create made.
type IdempotentWrite struct {
	Type   string    `json:"type"`   // the command, e.g. vm.put
	Target string    `json:"target"` // the record it made
	Index  uint64    `json:"index"`
	Time   time.Time `json:"time"`
}

const (
	idempotencyTTL = 24 * time.Hour
	maxIdempotency = 10000
)

// ReplayedError is a keyed command whose key was used already: Write is
// what the first one did.
type ReplayedError struct{ Write IdempotentWrite }

func (e *ReplayedError) Error() string {
	return fmt.Sprintf("this Idempotency-Key already made %s %s: %v", e.Write.Type, e.Write.Target, ErrConflict)
}

func (e *ReplayedError) Unwrap() error { return ErrConflict }

func idempotencyKey(actor, key string) string { return actor + "\x00" + key }

// replayed checks a keyed command against the keys recorded.
func (d *Directory) replayed(t Type, env Envelope) error {
	if env.Key == "" {
		return nil
	}
	w, ok := d.s.Idempotency[idempotencyKey(env.Actor, env.Key)]
	if !ok || env.Time.Sub(w.Time) >= idempotencyTTL {
		return nil
	}
	if w.Type != t.String() {
		return fmt.Errorf("Idempotency-Key %q was used for another request (%s %s): %w", env.Key, w.Type, w.Target, ErrConflict)
	}
	return &ReplayedError{Write: w}
}

// remember records a keyed command that succeeded, forgetting keys past
// their time, and the oldest past the bound.
func (d *Directory) remember(index uint64, t Type, env Envelope, target string) {
	if env.Key == "" {
		return
	}
	for k, w := range d.s.Idempotency {
		if env.Time.Sub(w.Time) >= idempotencyTTL {
			delete(d.s.Idempotency, k)
		}
	}
	if len(d.s.Idempotency) >= maxIdempotency {
		var oldest string
		for k, w := range d.s.Idempotency {
			if oldest == "" || w.Index < d.s.Idempotency[oldest].Index {
				oldest = k
			}
		}
		delete(d.s.Idempotency, oldest)
	}
	d.s.Idempotency[idempotencyKey(env.Actor, env.Key)] = IdempotentWrite{Type: t.String(), Target: target, Index: index, Time: env.Time}
}

// Idempotent returns what actor's create with key made, if it did within
// the last day (as of now).
func (d *Directory) Idempotent(actor, key string, now time.Time) (IdempotentWrite, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	w, ok := d.s.Idempotency[idempotencyKey(actor, key)]
	if !ok || now.Sub(w.Time) >= idempotencyTTL {
		return IdempotentWrite{}, false
	}
	return w, true
}
