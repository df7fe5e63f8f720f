package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/passwd"
)

// UserView is a user as the API shows it: never the password hash.
type UserView struct {
	Name     string         `json:"name"`
	Role     directory.Role `json:"role"`
	Disabled bool           `json:"disabled"`
	Created  time.Time      `json:"created"`
	Updated  time.Time      `json:"updated"`
}

func userView(u directory.User) UserView {
	return UserView{Name: u.Name, Role: u.Role, Disabled: u.Disabled, Created: u.Created, Updated: u.Updated}
}

// UserRequest creates a user.
type UserRequest struct {
	Name     string         `json:"name"`
	Role     directory.Role `json:"role"`
	Password string         `json:"password"`
}

// UserPatch changes a user: only the fields sent.
type UserPatch struct {
	Role     *directory.Role `json:"role,omitempty"`
	Disabled *bool           `json:"disabled,omitempty"`
	Password *string         `json:"password,omitempty"`
}

// PasswordChange is a user changing their own password.
type PasswordChange struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// checkPassword is the password policy: long enough to resist guessing
// behind the lockout, short enough to hash.
func checkPassword(field, p string) error {
	switch n := utf8.RuneCountInString(p); {
	case n < 8:
		return fieldError(field, "at least 8 characters")
	case len(p) > 256:
		return fieldError(field, "at most 256 bytes")
	}
	return nil
}

// newPasswordHash checks a new password (in field) against the policy
// and hashes it, within the argon2id slots, so a burst of user changes
// cannot take gigabytes.
func (a *Agent) newPasswordHash(field, p string) (string, error) {
	if err := checkPassword(field, p); err != nil {
		return "", err
	}
	a.auth.slots <- struct{}{}
	defer func() { <-a.auth.slots }()
	return passwd.Hash(p, passwd.Default())
}

func (a *Agent) handleUsers(w http.ResponseWriter, r *http.Request) {
	users := a.Directory().Users()
	out := make([]UserView, 0, len(users))
	for _, u := range users {
		out = append(out, userView(u))
	}
	writePage(w, r, out)
}

func (a *Agent) handleUser(w http.ResponseWriter, r *http.Request) {
	u, ok := a.Directory().User(r.PathValue("name"))
	if !ok {
		apiError(w, fmt.Errorf("user %s: %w", r.PathValue("name"), directory.ErrNotFound))
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, userView(u))
}

func (a *Agent) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if !decode(w, r, &req) {
		return
	}
	if !directory.ValidRole(req.Role) {
		apiError(w, fieldError("role", "want admin, operator or viewer"))
		return
	}
	if old, ok := a.Directory().User(req.Name); ok {
		// The same create again (a retried request) is answered as
		// the first was; a different one is a conflict.
		if old.Role == req.Role && a.auth.verify(old.Name, req.Password, old.PasswordHash) {
			frontdoor.WriteJSON(w, http.StatusOK, userView(old))
			return
		}
		apiError(w, fmt.Errorf("user %s: %w", req.Name, directory.ErrExists))
		return
	}
	hash, err := a.newPasswordHash("password", req.Password)
	if err != nil {
		apiError(w, err)
		return
	}
	u := directory.User{Name: req.Name, Role: req.Role, PasswordHash: hash}
	if _, err := a.proposeCreate(r, directory.TypeUserPut, directory.UserPutPayload{Op: directory.OpCreate, User: u}); err != nil {
		apiError(w, userFieldError(err))
		return
	}
	u, _ = a.Directory().User(req.Name)
	frontdoor.WriteJSON(w, http.StatusCreated, userView(u))
}

// userFieldError points a bad name at its field.
func userFieldError(err error) error {
	if errors.Is(err, directory.ErrInvalid) {
		return fieldError("name", err.Error())
	}
	return err
}

func (a *Agent) handleUpdateUser(w http.ResponseWriter, r *http.Request) {
	var req UserPatch
	if !decode(w, r, &req) {
		return
	}
	u, ok := a.Directory().User(r.PathValue("name"))
	if !ok {
		apiError(w, fmt.Errorf("user %s: %w", r.PathValue("name"), directory.ErrNotFound))
		return
	}
	if req.Role != nil {
		if !directory.ValidRole(*req.Role) {
			apiError(w, fieldError("role", "want admin, operator or viewer"))
			return
		}
		u.Role = *req.Role
	}
	if req.Disabled != nil {
		if *req.Disabled && u.Name == requestPrincipal(r).User {
			apiError(w, fmt.Errorf("you cannot disable yourself (another admin can): %w", directory.ErrConflict))
			return
		}
		u.Disabled = *req.Disabled
	}
	if req.Password != nil {
		hash, err := a.newPasswordHash("password", *req.Password)
		if err != nil {
			apiError(w, err)
			return
		}
		u.PasswordHash = hash
	}
	if !a.putUser(w, r, u) {
		return
	}
	u, _ = a.Directory().User(u.Name)
	frontdoor.WriteJSON(w, http.StatusOK, userView(u))
}

// putUser records a changed user; false when it could not, and the
// answer says why.
func (a *Agent) putUser(w http.ResponseWriter, r *http.Request, u directory.User) bool {
	if _, err := a.propose(directory.TypeUserPut, actor(r), clientAddr(r), directory.UserPutPayload{Op: directory.OpUpdate, User: u}); err != nil {
		apiError(w, err)
		return false
	}
	return true
}

func (a *Agent) handleDeleteUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == requestPrincipal(r).User {
		apiError(w, fmt.Errorf("you cannot delete yourself (another admin can): %w", directory.ErrConflict))
		return
	}
	if _, err := a.propose(directory.TypeUserDelete, actor(r), clientAddr(r), directory.NamePayload{Name: name}); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleChangePassword lets any user change their own password, given
// the current one. Their other sessions end; this one too (the
// directory ends them all), so the console logs in again.
func (a *Agent) handleChangePassword(w http.ResponseWriter, r *http.Request) {
	var req PasswordChange
	if !decode(w, r, &req) {
		return
	}
	p := requestPrincipal(r)
	if p.Via == "token" {
		frontdoor.WriteError(w, http.StatusForbidden, "forbidden", "an API token cannot change its user's password")
		return
	}
	if _, err := a.passwordPrincipal(p.User, req.Current); err != nil {
		a.logins.failed(clientAddr(r), p.User)
		apiError(w, fieldError("current", "not the current password"))
		return
	}
	u, _ := a.Directory().User(p.User)
	hash, err := a.newPasswordHash("new", req.New)
	if err != nil {
		apiError(w, err)
		return
	}
	u.PasswordHash = hash
	if a.putUser(w, r, u) {
		w.WriteHeader(http.StatusNoContent)
	}
}
