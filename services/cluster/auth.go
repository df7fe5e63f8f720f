package cluster

import (
	"crypto/sha256"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/passwd"
)

// Authentication errors.
var (
	errUnauthorized = errors.New("authentication required: a user name and password")
	errForbidden    = errors.New("your role does not allow this")
)

// principal is who a request acts for.
type principal struct {
	User string
	Role directory.Role
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

// authenticate checks the request's Basic credentials against the
// directory (this member's copy: users change rarely, and the leader
// checks again any request forwarded to it).
func (a *Agent) authenticate(r *http.Request) (principal, error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return principal{}, errUnauthorized
	}
	u, ok := a.Directory().User(user)
	if !ok || u.Disabled || !a.auth.verify(user, pass, u.PasswordHash) {
		a.log.Warn("failed authentication", "user", user, "from", clientAddr(r))
		return principal{}, errUnauthorized
	}
	return principal{User: u.Name, Role: u.Role}, nil
}

func roleAtLeast(have, want directory.Role) bool {
	rank := map[directory.Role]int{directory.RoleViewer: 1, directory.RoleOperator: 2, directory.RoleAdmin: 3}
	return rank[have] >= rank[want]
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
