package cluster

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/passwd"
)

// Authentication errors.
var (
	errUnauthorized = errors.New("authentication required: a session, an API token, or a user name and password")
	errForbidden    = errors.New("your role does not allow this")
	errCSRF         = errors.New("cross-site request refused")
)

// lockedError is an attempt refused before its credentials were checked:
// too many failures (loginGuard).
type lockedError struct{ wait time.Duration }

func (e *lockedError) Error() string {
	return fmt.Sprintf("too many failed attempts: try again in %d s", int(e.wait.Seconds()+0.999))
}

// How a request proves who it is, checked in this order: an API token
// (Authorization: Bearer), the console's session cookie, or a user name
// and password (Authorization: Basic).
const (
	// SessionCookie holds a console session: "<id>.<secret>".
	SessionCookie = "tandem_session"
	// HeaderCSRF carries, on every state change a session makes, the
	// session's CSRF token: a page of another site can make the browser
	// send the cookie, but cannot read the token.
	HeaderCSRF = "X-Tandem-CSRF"
	// APITokenPrefix starts every API token: "tdm_<id>_<secret>".
	APITokenPrefix = "tdm_"
)

// principal is who a request acts for.
type principal struct {
	User string
	Role directory.Role
	Via  string // password, session or token
	// The session's ID and CSRF token, or the API token's ID.
	Session, CSRF, Token string
}

// authCache remembers recent successful password checks for a few
// minutes: argon2id costs tens of milliseconds and 64 MiB on purpose, and
// API clients send the password with every request. The key covers the
// stored hash, so a password change ends the entry.
type authCache struct {
	mu      sync.Mutex
	entries map[[32]byte]time.Time
	// slots bounds concurrent argon2id checks, so a burst of requests
	// cannot take gigabytes of memory.
	slots chan struct{}
}

func newAuthCache() *authCache {
	return &authCache{entries: map[[32]byte]time.Time{}, slots: make(chan struct{}, 2)}
}

const authCacheTTL = 5 * time.Minute

func (c *authCache) verify(user, password, hash string) bool {
	key := sha256.Sum256([]byte(user + "\x00" + password + "\x00" + hash))
	c.mu.Lock()
	until, ok := c.entries[key]
	c.mu.Unlock()
	if ok && time.Now().Before(until) {
		return true
	}
	c.slots <- struct{}{}
	good, err := passwd.Verify(password, hash)
	<-c.slots
	if err != nil || !good {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) > 10000 {
		c.entries = map[[32]byte]time.Time{}
	}
	c.entries[key] = time.Now().Add(authCacheTTL)
	return true
}

// authenticate works out who a request is for. It checks against this
// member's copy of the directory: users change rarely, and the leader
// checks again any request forwarded to it.
func (a *Agent) authenticate(r *http.Request) (principal, error) {
	from := clientAddr(r)
	if wait := a.logins.wait(from, ""); wait > 0 {
		return principal{}, &lockedError{wait}
	}
	authz := r.Header.Get("Authorization")
	var p principal
	var err error
	var name string // the user a password attempt named
	switch scheme, cred, _ := strings.Cut(authz, " "); {
	case authz == "" && !hasCookie(r, SessionCookie) && r.Header.Get(frontdoor.HeaderMember) != "" && r.Header.Get(frontdoor.HeaderForwardedBy) == "":
		// A member calling for itself (not forwarding a user's
		// request): it may read, as a viewer.
		id, err := memberconn.IdentityFromHeader(r.Header.Get(frontdoor.HeaderMember))
		if err != nil || !a.isMember(id) {
			return principal{}, errUnauthorized
		}
		return principal{User: "member:" + id.ID, Role: directory.RoleViewer, Via: "member"}, nil
	case strings.EqualFold(scheme, "Bearer"):
		p, err = a.tokenPrincipal(strings.TrimSpace(cred))
	case authz == "" && hasCookie(r, SessionCookie):
		c, _ := r.Cookie(SessionCookie)
		if p, err = a.sessionPrincipal(c.Value); err == nil {
			err = checkCSRF(r, p.CSRF)
		}
	default:
		var pass string
		var ok bool
		if name, pass, ok = r.BasicAuth(); !ok {
			return principal{}, errUnauthorized // nothing tried: not a failure
		}
		if wait := a.logins.wait(from, name); wait > 0 {
			return principal{}, &lockedError{wait}
		}
		p, err = a.passwordPrincipal(name, pass)
	}
	if err == nil {
		err = checkOrigin(r)
	}
	switch {
	case errors.Is(err, errUnauthorized):
		a.logins.failed(from, name)
		a.log.Warn("failed authentication", "user", name, "from", from)
	case err == nil && p.Via == "password":
		a.logins.succeeded(p.User)
	}
	return p, err
}

func hasCookie(r *http.Request, name string) bool {
	_, err := r.Cookie(name)
	return err == nil
}

func (a *Agent) passwordPrincipal(name, pass string) (principal, error) {
	u, ok := a.Directory().User(name)
	if !ok || u.Disabled || !a.auth.verify(name, pass, u.PasswordHash) {
		return principal{}, errUnauthorized
	}
	return principal{User: u.Name, Role: u.Role, Via: "password"}, nil
}

// sessionPrincipal checks a session cookie's value.
func (a *Agent) sessionPrincipal(value string) (principal, error) {
	id, secret, ok := strings.Cut(value, ".")
	if !ok {
		return principal{}, errUnauthorized
	}
	s, ok := a.Directory().Session(id)
	if !ok || !sameHash(secret, s.KeyHash) || !s.Live(time.Now()) {
		return principal{}, errUnauthorized
	}
	u, ok := a.Directory().User(s.User)
	if !ok || u.Disabled {
		return principal{}, errUnauthorized
	}
	return principal{User: u.Name, Role: u.Role, Via: "session", Session: s.ID, CSRF: s.CSRF}, nil
}

// tokenPrincipal checks an API token. Its role is the lower of the
// token's and its user's: a user moved down takes their tokens along.
func (a *Agent) tokenPrincipal(tok string) (principal, error) {
	rest, ok := strings.CutPrefix(tok, APITokenPrefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 {
		return principal{}, errUnauthorized
	}
	t, ok := a.Directory().APIToken(id)
	if !ok || !sameHash(secret, t.KeyHash) || !t.Live(time.Now()) {
		return principal{}, errUnauthorized
	}
	u, ok := a.Directory().User(t.User)
	if !ok || u.Disabled {
		return principal{}, errUnauthorized
	}
	role := t.Role
	if !u.Role.AtLeast(role) {
		role = u.Role
	}
	return principal{User: u.Name, Role: role, Via: "token", Token: t.ID}, nil
}

// secretHash is how secrets (session and token keys) are stored: they
// are random and long, so a plain hash is enough.
func secretHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func sameHash(secret, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(secretHash(secret)), []byte(stored)) == 1
}

// checkOrigin refuses a request that names an Origin (every websocket
// handshake and cross-site fetch of a browser does) other than this
// front door's own pages: whatever its credentials, a page of another
// site must not act through the user's browser. A member forwarding a
// request has checked it already, and changed its Host.
func checkOrigin(r *http.Request) error {
	if r.Header.Get(frontdoor.HeaderMember) != "" {
		return nil
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && hasCookie(r, SessionCookie) {
			return fmt.Errorf("%w: a websocket with the session cookie but without an Origin", errCSRF)
		}
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("%w: from origin %q, not this console (%s)", errCSRF, origin, r.Host)
	}
	return nil
}

// checkCSRF guards a request made with the session cookie: a state
// change must carry the session's CSRF token, which a page of another
// site can make the browser send the cookie with, but cannot read.
func checkCSRF(r *http.Request, csrf string) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if got := r.Header.Get(HeaderCSRF); csrf == "" || subtle.ConstantTimeCompare([]byte(got), []byte(csrf)) != 1 {
		return fmt.Errorf("%w: a change made with the session needs its token in %s", errCSRF, HeaderCSRF)
	}
	return nil
}

// clientAddr is the address of the client a request came from: what a
// forwarding member says, else what the front door saw.
func clientAddr(r *http.Request) string {
	if r.Header.Get(frontdoor.HeaderMember) != "" {
		if c := r.Header.Get(frontdoor.HeaderClient); c != "" {
			return c
		}
	}
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		parts := strings.Split(xff, ",")
		return strings.TrimSpace(parts[len(parts)-1])
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// AuthError is a request's credentials refused, with the answer it gets.
type AuthError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds, for a lockout
}

func (e *AuthError) Error() string { return e.Message }

// authError turns authenticate's error into the answer.
func authError(err error) *AuthError {
	var locked *lockedError
	switch {
	case errors.As(err, &locked):
		return &AuthError{Status: http.StatusTooManyRequests, Code: "locked", Message: err.Error(), RetryAfter: int(locked.wait.Seconds() + 0.999)}
	case errors.Is(err, errCSRF):
		return &AuthError{Status: http.StatusForbidden, Code: "csrf", Message: err.Error()}
	default:
		return &AuthError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: errUnauthorized.Error()}
	}
}

// Write answers the request with the refusal. A 401 invites Basic
// credentials only for clients that are not a browser's script (which
// sends Sec-Fetch-Mode): the console has its own login page, and the
// browser's password dialog would only be in the way.
func (e *AuthError) Write(w http.ResponseWriter, r *http.Request) {
	if e.Status == http.StatusUnauthorized && r.Header.Get("Sec-Fetch-Mode") == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="Tandem"`)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	frontdoor.WriteError(w, e.Status, e.Code, e.Message)
}
