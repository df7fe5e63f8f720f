package directory

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestIdempotentCreates(t *testing.T) {
	h := newHarness(t)
	h.init()
	keyed := func(actor, key string, typ Type, payload any) error {
		h.index++
		h.now = h.now.Add(time.Second)
		data, err := Encode(typ, Envelope{Actor: actor, Key: key, Time: h.now}, payload)
		if err != nil {
			t.Fatal(err)
		}
		return h.d.Apply(&raft.Log{Index: h.index, Data: data}).(Result).Err
	}
	user := func(name string) UserPutPayload {
		return UserPutPayload{Op: OpCreate, User: User{Name: name, Role: RoleViewer, PasswordHash: "h"}}
	}
	if err := keyed("admin", "k1", TypeUserPut, user("olga")); err != nil {
		t.Fatal(err)
	}
	var replay *ReplayedError
	err := keyed("admin", "k1", TypeUserPut, user("olga"))
	if !errors.As(err, &replay) || replay.Write.Target != "olga" || replay.Write.Type != "user.put" {
		t.Errorf("the same create again: %v", err)
	}
	// The key stands for what it made, whatever the retry says.
	if err := keyed("admin", "k1", TypeUserPut, user("vera")); !errors.As(err, &replay) {
		t.Errorf("another create with the key: %v", err)
	}
	if _, ok := h.d.User("vera"); ok {
		t.Error("a replayed key made a second user")
	}
	if err := keyed("admin", "k1", TypeVolumePut, VolumePutPayload{}); !errors.Is(err, ErrConflict) || errors.As(err, &replay) {
		t.Errorf("the key for another kind of request: %v", err)
	}
	if err := keyed("bob", "k1", TypeUserPut, user("vera")); err != nil {
		t.Errorf("another actor's key of the same name: %v", err)
	}
	if w, ok := h.d.Idempotent("admin", "k1", h.now); !ok || w.Target != "olga" {
		t.Errorf("Idempotent: %+v %v", w, ok)
	}
	// A day later the key is free again; the user exists, so: exists.
	h.now = h.now.Add(idempotencyTTL)
	if err := keyed("admin", "k1", TypeUserPut, user("olga")); !errors.Is(err, ErrExists) {
		t.Errorf("a day later: %v", err)
	}
	if _, ok := h.d.Idempotent("admin", "k1", h.now); ok {
		t.Error("a key outlived its day")
	}
}
