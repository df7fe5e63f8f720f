package cluster

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// sessionTTL is how long a console login lasts: a working day and then
// some, as vCenter's default.
const sessionTTL = 12 * time.Hour

// LoginRequest logs a user in to the console.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// SessionInfo is the logged-in user, as the console sees it.
type SessionInfo struct {
	User      string         `json:"user"`
	Role      directory.Role `json:"role"`
	Via       string         `json:"via"`                  // session, token or password
	CSRFToken string         `json:"csrf_token,omitempty"` // for a session: send it in X-Tandem-CSRF
	Expires   time.Time      `json:"expires,omitzero"`
	// ClusterName is the cluster's name setting, for the console's
	// header (the settings are for admins).
	ClusterName string `json:"cluster_name,omitempty"`
}

// randomString returns n random bytes, base64url.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// handleLogin checks a password and starts a session: a cookie only
// this front door's pages carry (HttpOnly, Secure, SameSite=Strict),
// and the CSRF token the page sends with every change.
func (a *Agent) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req LoginRequest
	if !decode(w, r, &req) {
		return
	}
	from := clientAddr(r)
	if wait := a.logins.wait(from, req.User); wait > 0 {
		authError(&lockedError{wait}).Write(w, r)
		return
	}
	p, err := a.passwordPrincipal(req.User, req.Password)
	if err != nil {
		a.logins.failed(from, req.User)
		a.recordRefusal("session.create", req.User, "wrong user name or password", from)
		frontdoor.WriteError(w, http.StatusUnauthorized, "unauthorized", "wrong user name or password")
		return
	}
	a.logins.succeeded(p.User)
	secret := randomString(32)
	agent := r.UserAgent()
	if len(agent) > 200 {
		agent = agent[:200]
	}
	s := directory.Session{
		ID: randomHex(12), User: p.User, KeyHash: secretHash(secret),
		CSRF: randomString(32), From: from, Agent: agent, Expires: time.Now().Add(sessionTTL).UTC(),
	}
	if _, err := a.propose(directory.TypeSessionPut, p.User, from, directory.SessionPutPayload{Session: s}); err != nil {
		apiError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: s.ID + "." + secret, Path: "/", MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	frontdoor.WriteJSON(w, http.StatusCreated, SessionInfo{User: p.User, Role: p.Role, Via: "session", CSRFToken: s.CSRF, Expires: s.Expires,
		ClusterName: a.Directory().Settings()["cluster.name"]})
}

// handleSession tells who the request is for: after a reload, the page
// learns its CSRF token here.
func (a *Agent) handleSession(w http.ResponseWriter, r *http.Request) {
	p := requestPrincipal(r)
	info := SessionInfo{User: p.User, Role: p.Role, Via: p.Via, ClusterName: a.Directory().Settings()["cluster.name"]}
	if p.Via == "session" {
		s, _ := a.Directory().Session(p.Session)
		info.CSRFToken, info.Expires = s.CSRF, s.Expires
	}
	frontdoor.WriteJSON(w, http.StatusOK, info)
}

// handleLogout ends the request's session, everywhere.
func (a *Agent) handleLogout(w http.ResponseWriter, r *http.Request) {
	p := requestPrincipal(r)
	if p.Via != "session" {
		frontdoor.WriteError(w, http.StatusBadRequest, "no_session", "this request is not made with a session (nothing to log out of)")
		return
	}
	_, err := a.propose(directory.TypeSessionDelete, p.User, clientAddr(r), directory.NamePayload{Name: p.Session})
	if err != nil && !errors.Is(err, directory.ErrNotFound) {
		apiError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

func requestPrincipal(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey).(principal)
	return p
}
