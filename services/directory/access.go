package directory

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Console sessions and API tokens live in the directory, so that every
// member accepts them (a request may reach either node, and the cluster
// IP moves) and a logout or revocation ends them everywhere. Only a hash
// of each secret is stored: a copy of the directory (a snapshot, a
// backup) lets nobody in.

// Session is a browser's login.
type Session struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	KeyHash string    `json:"key_hash"` // hex SHA-256 of the cookie's secret
	CSRF    string    `json:"csrf"`     // the token state changes must carry
	From    string    `json:"from,omitempty"`
	Agent   string    `json:"agent,omitempty"` // the browser's User-Agent, shortened
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// APIToken lets automation act as a user, with at most the user's role.
type APIToken struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	User    string    `json:"user"`
	Role    Role      `json:"role"`
	KeyHash string    `json:"key_hash"` // hex SHA-256 of the token's secret
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: until revoked
}

// Live reports whether the session is still good at now.
func (s Session) Live(now time.Time) bool { return now.Before(s.Expires) }

// Live reports whether the token is still good at now.
func (t APIToken) Live(now time.Time) bool { return t.Expires.IsZero() || now.Before(t.Expires) }

// Bounds on what access records the directory keeps: enough for every
// plausible user, small enough that a login flood cannot bloat it.
const (
	maxSessions        = 2000
	maxSessionsPerUser = 50
	maxAPITokens       = 1000
)

type (
	SessionPutPayload struct {
		Session Session `json:"session"`
	}
	APITokenPutPayload struct {
		Token APIToken `json:"token"`
	}
)

func (d *Directory) applySessionPut(index uint64, env Envelope) func(SessionPutPayload) (string, error) {
	return func(p SessionPutPayload) (string, error) {
		s := p.Session
		u, ok := d.s.Users[s.User]
		switch {
		case s.ID == "" || s.KeyHash == "" || s.CSRF == "":
			return "", fmt.Errorf("session needs an ID, a key and a CSRF token: %w", ErrInvalid)
		case !ok || u.Disabled:
			return "", fmt.Errorf("user %s: %w", s.User, ErrRefused)
		case !s.Live(env.Time):
			return "", fmt.Errorf("session expires in the past: %w", ErrInvalid)
		}
		if _, ok := d.s.Sessions[s.ID]; ok {
			return "", fmt.Errorf("session %s: %w", s.ID, ErrExists)
		}
		if err := checkText("session agent", s.Agent, 256); err != nil {
			return "", err
		}
		d.pruneSessions(env.Time, s.User)
		s.Created = env.Time
		d.s.Sessions[s.ID] = &s
		d.audit(index, env, "session.create", s.User, "ok", "")
		return s.User, nil
	}
}

// pruneSessions forgets expired sessions, and the oldest ones past the
// bounds (the user's own first).
func (d *Directory) pruneSessions(now time.Time, user string) {
	var mine, all []*Session
	for id, s := range d.s.Sessions {
		if !s.Live(now) {
			delete(d.s.Sessions, id)
			continue
		}
		all = append(all, s)
		if s.User == user {
			mine = append(mine, s)
		}
	}
	oldestFirst := func(a, b *Session) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	}
	slices.SortFunc(mine, oldestFirst)
	for len(mine) >= maxSessionsPerUser {
		delete(d.s.Sessions, mine[0].ID)
		mine = mine[1:]
	}
	if len(d.s.Sessions) >= maxSessions {
		slices.SortFunc(all, oldestFirst)
		for _, s := range all {
			if len(d.s.Sessions) < maxSessions {
				break
			}
			delete(d.s.Sessions, s.ID)
		}
	}
}

func (d *Directory) applySessionDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return func(p NamePayload) (string, error) {
		s, ok := d.s.Sessions[p.Name]
		if !ok {
			return "", fmt.Errorf("session: %w", ErrNotFound)
		}
		delete(d.s.Sessions, p.Name)
		d.audit(index, env, "session.end", s.User, "ok", "")
		return s.User, nil
	}
}

func (d *Directory) applyAPITokenPut(index uint64, env Envelope) func(APITokenPutPayload) (string, error) {
	return func(p APITokenPutPayload) (string, error) {
		t := p.Token
		u, ok := d.s.Users[t.User]
		switch {
		case t.ID == "" || t.KeyHash == "":
			return "", fmt.Errorf("API token needs an ID and a key: %w", ErrInvalid)
		case !ok || u.Disabled:
			return "", fmt.Errorf("user %s: %w", t.User, ErrRefused)
		case !ValidRole(t.Role):
			return "", fmt.Errorf("role %q: want admin, operator or viewer: %w", t.Role, ErrInvalid)
		case !u.Role.AtLeast(t.Role):
			return "", fmt.Errorf("a token of %s cannot have the %s role, above the user's %s: %w", t.User, t.Role, u.Role, ErrRefused)
		case !t.Live(env.Time):
			return "", fmt.Errorf("token expires in the past: %w", ErrInvalid)
		}
		if err := checkText("token name", t.Name, 64); err != nil {
			return "", err
		}
		if _, ok := d.s.APITokens[t.ID]; ok {
			return "", fmt.Errorf("API token %s: %w", t.ID, ErrExists)
		}
		for id, old := range d.s.APITokens {
			if !old.Live(env.Time) {
				delete(d.s.APITokens, id)
			}
		}
		if len(d.s.APITokens) >= maxAPITokens {
			return "", fmt.Errorf("the cluster holds %d API tokens, the most it keeps; revoke some: %w", maxAPITokens, ErrRefused)
		}
		t.Created = env.Time
		d.s.APITokens[t.ID] = &t
		d.audit(index, env, "api-token.create", t.ID, "ok", fmt.Sprintf("%q for %s, role %s", t.Name, t.User, t.Role))
		return t.ID, nil
	}
}

func (d *Directory) applyAPITokenDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return deleteRecord(d, index, env, "api-token.revoke", d.s.APITokens)
}

// endAccess ends a user's sessions, and with tokens also its API tokens:
// what a disabled or deleted user, or a new password, must not keep.
func (d *Directory) endAccess(user string, tokens bool) {
	for id, s := range d.s.Sessions {
		if s.User == user {
			delete(d.s.Sessions, id)
		}
	}
	if !tokens {
		return
	}
	for id, t := range d.s.APITokens {
		if t.User == user {
			delete(d.s.APITokens, id)
		}
	}
}

// Session returns a session by ID.
func (d *Directory) Session(id string) (Session, bool) {
	return get(d, func(s *state) map[string]*Session { return s.Sessions }, id)
}

// APIToken returns an API token by ID.
func (d *Directory) APIToken(id string) (APIToken, bool) {
	return get(d, func(s *state) map[string]*APIToken { return s.APITokens }, id)
}

// APITokens returns every API token, sorted by ID.
func (d *Directory) APITokens() []APIToken {
	return list(d, func(s *state) map[string]*APIToken { return s.APITokens })
}
