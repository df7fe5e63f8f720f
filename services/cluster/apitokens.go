package cluster

import (
	"fmt"
	"net/http"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// API tokens are how automation authenticates: "Authorization: Bearer
// tdm_<id>_<secret>". A token acts as its user with at most the role it
// was given; the secret is shown once, at creation.

// APITokenRequest creates an API token.
type APITokenRequest struct {
	Name string         `json:"name"`
	Role directory.Role `json:"role,omitempty"` // default: the user's role
	// TTLDays is how long it lasts; 0: until revoked.
	TTLDays int `json:"ttl_days,omitempty"`
}

// APITokenView is an API token as the API shows it; Secret only in the
// answer that created it.
type APITokenView struct {
	ID      string         `json:"id"`
	Name    string         `json:"name"`
	User    string         `json:"user"`
	Role    directory.Role `json:"role"`
	Created time.Time      `json:"created"`
	Expires time.Time      `json:"expires,omitzero"`
	Secret  string         `json:"secret,omitempty"`
}

func apiTokenView(t directory.APIToken) APITokenView {
	return APITokenView{ID: t.ID, Name: t.Name, User: t.User, Role: t.Role, Created: t.Created, Expires: t.Expires}
}

// handleAPITokens lists the caller's tokens; an admin's list has
// everyone's.
func (a *Agent) handleAPITokens(w http.ResponseWriter, r *http.Request) {
	p := requestPrincipal(r)
	out := []APITokenView{}
	for _, t := range a.Directory().APITokens() {
		if t.User == p.User || p.Role == directory.RoleAdmin {
			out = append(out, apiTokenView(t))
		}
	}
	writePage(w, r, out)
}

func (a *Agent) handleCreateAPIToken(w http.ResponseWriter, r *http.Request) {
	var req APITokenRequest
	if !decode(w, r, &req) {
		return
	}
	p := requestPrincipal(r)
	if p.Via == "token" {
		// A leaked token must not be able to mint others that outlive
		// its revocation.
		frontdoor.WriteError(w, http.StatusForbidden, "forbidden", "API tokens are made by a logged-in user, not by another token")
		return
	}
	if req.Name == "" || len(req.Name) > 64 {
		apiError(w, fieldError("name", "1 to 64 bytes, to tell the token apart"))
		return
	}
	if req.Role == "" {
		req.Role = p.Role
	}
	if !directory.ValidRole(req.Role) {
		apiError(w, fieldError("role", "want admin, operator or viewer"))
		return
	}
	if !p.Role.AtLeast(req.Role) {
		apiError(w, fieldError("role", fmt.Sprintf("at most your own role, %s", p.Role)))
		return
	}
	if req.TTLDays < 0 || req.TTLDays > 3650 {
		apiError(w, fieldError("ttl_days", "0 (until revoked) to 3650"))
		return
	}
	secret := randomString(32)
	t := directory.APIToken{ID: randomHex(8), Name: req.Name, User: p.User, Role: req.Role, KeyHash: secretHash(secret)}
	if req.TTLDays > 0 {
		t.Expires = time.Now().Add(time.Duration(req.TTLDays) * 24 * time.Hour).UTC()
	}
	if _, err := a.proposeCreate(r, directory.TypeAPITokenPut, directory.APITokenPutPayload{Token: t}); err != nil {
		apiError(w, err)
		return
	}
	t, _ = a.Directory().APIToken(t.ID)
	v := apiTokenView(t)
	v.Secret = APITokenPrefix + t.ID + "_" + secret
	frontdoor.WriteJSON(w, http.StatusCreated, v)
}

// handleRevokeAPIToken revokes one of the caller's tokens, or, for an
// admin, anyone's.
func (a *Agent) handleRevokeAPIToken(w http.ResponseWriter, r *http.Request) {
	p := requestPrincipal(r)
	id := r.PathValue("id")
	t, ok := a.Directory().APIToken(id)
	if !ok || (t.User != p.User && p.Role != directory.RoleAdmin) {
		apiError(w, fmt.Errorf("API token %s: %w", id, directory.ErrNotFound))
		return
	}
	if _, err := a.propose(directory.TypeAPITokenDel, actor(r), clientAddr(r), directory.NamePayload{Name: id}); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// tokenMadeBefore answers a replayed token create: the secret was shown
// once and is not kept, so the retry learns only which token it was.
func (a *Agent) tokenMadeBefore(id string) (any, error) {
	return nil, fmt.Errorf("this Idempotency-Key made API token %s; its secret was shown once, in that answer (revoke it and make another if it was lost): %w", id, directory.ErrConflict)
}
