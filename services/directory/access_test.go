package directory

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestSessionsAndAPITokens(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(TypeUserPut, UserPutPayload{Op: OpCreate, User: User{Name: "olga", Role: RoleOperator, PasswordHash: "h1"}})
	session := func(id, user string, ttl time.Duration) SessionPutPayload {
		return SessionPutPayload{Session: Session{ID: id, User: user, KeyHash: "k" + id, CSRF: "c" + id, Expires: h.now.Add(ttl)}}
	}
	token := func(id, user string, role Role) APITokenPutPayload {
		return APITokenPutPayload{Token: APIToken{ID: id, Name: "ci " + id, User: user, Role: role, KeyHash: "k" + id}}
	}
	steps := []struct {
		name    string
		typ     Type
		payload any
		want    error
	}{
		{"session for a user", TypeSessionPut, session("s1", "olga", time.Hour), nil},
		{"same ID again", TypeSessionPut, session("s1", "olga", time.Hour), ErrExists},
		{"unknown user", TypeSessionPut, session("s2", "nobody", time.Hour), ErrRefused},
		{"already expired", TypeSessionPut, session("s3", "olga", -time.Minute), ErrInvalid},
		{"no CSRF token", TypeSessionPut, SessionPutPayload{Session: Session{ID: "s4", User: "olga", KeyHash: "k", Expires: h.now.Add(time.Hour)}}, ErrInvalid},
		{"token within the role", TypeAPITokenPut, token("t1", "olga", RoleViewer), nil},
		{"token above the user's role", TypeAPITokenPut, token("t2", "olga", RoleAdmin), ErrRefused},
		{"token with an unknown role", TypeAPITokenPut, token("t3", "olga", "root"), ErrInvalid},
		{"end a session", TypeSessionDelete, NamePayload{Name: "s1"}, nil},
		{"end it twice", TypeSessionDelete, NamePayload{Name: "s1"}, ErrNotFound},
		{"revoke a token", TypeAPITokenDel, NamePayload{Name: "t1"}, nil},
		{"revoke it twice", TypeAPITokenDel, NamePayload{Name: "t1"}, ErrNotFound},
	}
	for _, s := range steps {
		if err := h.apply(s.typ, s.payload); !errors.Is(err, s.want) {
			t.Errorf("%s: got %v, want %v", s.name, err, s.want)
		}
	}
}

// TestAccessEndsWithTheUser: a new password ends the user's sessions, a
// disabled or deleted user loses sessions and tokens, others keep theirs.
func TestAccessEndsWithTheUser(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(TypeUserPut, UserPutPayload{Op: OpCreate, User: User{Name: "olga", Role: RoleOperator, PasswordHash: "h1"}})
	login := func(id, user string) {
		h.must(TypeSessionPut, SessionPutPayload{Session: Session{ID: id, User: user, KeyHash: "k", CSRF: "c", Expires: h.now.Add(time.Hour)}})
	}
	login("s-admin", "admin")
	login("s-olga", "olga")
	h.must(TypeAPITokenPut, APITokenPutPayload{Token: APIToken{ID: "t-olga", User: "olga", Role: RoleOperator, KeyHash: "k"}})

	h.must(TypeUserPut, UserPutPayload{Op: OpUpdate, User: User{Name: "olga", Role: RoleOperator, PasswordHash: "h2"}})
	if _, ok := h.d.Session("s-olga"); ok {
		t.Error("a session outlived its user's new password")
	}
	if _, ok := h.d.APIToken("t-olga"); !ok {
		t.Error("a new password revoked an API token")
	}
	login("s-olga2", "olga")
	h.must(TypeUserPut, UserPutPayload{Op: OpUpdate, User: User{Name: "olga", Role: RoleOperator, Disabled: true}})
	if _, ok := h.d.Session("s-olga2"); ok {
		t.Error("a disabled user kept a session")
	}
	if _, ok := h.d.APIToken("t-olga"); ok {
		t.Error("a disabled user kept an API token")
	}
	if _, ok := h.d.Session("s-admin"); !ok {
		t.Error("another user's session ended")
	}
	if err := h.apply(TypeSessionPut, SessionPutPayload{Session: Session{ID: "s-x", User: "olga", KeyHash: "k", CSRF: "c", Expires: h.now.Add(time.Hour)}}); !errors.Is(err, ErrRefused) {
		t.Errorf("a disabled user logged in: %v", err)
	}
}

// TestSessionsBounded: a flood of logins keeps at most maxSessionsPerUser
// sessions of the user, dropping the oldest, and expired ones go.
func TestSessionsBounded(t *testing.T) {
	h := newHarness(t)
	h.init()
	for i := range maxSessionsPerUser + 10 {
		h.must(TypeSessionPut, SessionPutPayload{Session: Session{ID: fmt.Sprintf("s%03d", i), User: "admin", KeyHash: "k", CSRF: "c", Expires: h.now.Add(time.Hour)}})
	}
	if n := len(h.d.s.Sessions); n != maxSessionsPerUser {
		t.Errorf("%d sessions kept, want %d", n, maxSessionsPerUser)
	}
	if _, ok := h.d.Session("s000"); ok {
		t.Error("the oldest session was kept")
	}
	if _, ok := h.d.Session(fmt.Sprintf("s%03d", maxSessionsPerUser+9)); !ok {
		t.Error("the newest session was dropped")
	}
	h.now = h.now.Add(2 * time.Hour)
	h.must(TypeSessionPut, SessionPutPayload{Session: Session{ID: "late", User: "admin", KeyHash: "k", CSRF: "c", Expires: h.now.Add(time.Hour)}})
	if n := len(h.d.s.Sessions); n != 1 {
		t.Errorf("%d sessions after the others expired, want 1", n)
	}
}
