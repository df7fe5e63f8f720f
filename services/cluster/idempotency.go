package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// HeaderIdempotencyKey makes a create safe to send again: the same key
// from the same user within a day answers with what the first request
// made instead of making it twice (directory/idempotency.go).
const HeaderIdempotencyKey = "Idempotency-Key"

const idempotencyCtxKey ctxKey = 3

// idempotent wraps a create: a key already used answers with the record
// it made (lookup finds it by name), now; a new one goes with the
// request to proposeCreate.
func (a *Agent) idempotent(lookup func(target string) (any, error), next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(HeaderIdempotencyKey)
		if key == "" {
			next(w, r)
			return
		}
		if len(key) > 128 || !printableASCII(key) {
			apiError(w, fieldError(HeaderIdempotencyKey, "1 to 128 printable ASCII characters"))
			return
		}
		if done, ok := a.Directory().Idempotent(actor(r), key, time.Now()); ok {
			v, err := lookup(done.Target)
			if err != nil {
				apiError(w, err)
				return
			}
			w.Header().Set("Idempotent-Replayed", "true")
			frontdoor.WriteJSON(w, http.StatusCreated, v)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), idempotencyCtxKey, key)))
	}
}

func printableASCII(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// proposeCreate proposes a create with the request's actor, client and
// Idempotency-Key. A key that a concurrent twin used first is answered
// as a conflict to retry (which then replays).
func (a *Agent) proposeCreate(r *http.Request, t directory.Type, payload any) (directory.Result, error) {
	key, _ := r.Context().Value(idempotencyCtxKey).(string)
	res, err := a.proposeKeyed(t, actor(r), clientAddr(r), key, payload)
	var replay *directory.ReplayedError
	if errors.As(err, &replay) {
		err = fmt.Errorf("a request with this Idempotency-Key was done meanwhile; send it again for its answer: %w", directory.ErrConflict)
	}
	return res, err
}

// lookupIn answers a replayed create with the record's current state.
func lookupIn[V any](get func(string) (V, bool), kind string) func(string) (any, error) {
	return func(name string) (any, error) {
		v, ok := get(name)
		if !ok {
			return nil, fmt.Errorf("the %s this Idempotency-Key made, %s, is gone: %w", kind, name, directory.ErrConflict)
		}
		return v, nil
	}
}
