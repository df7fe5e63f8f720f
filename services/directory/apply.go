package directory

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// apply runs the command's apply function under the write lock.
func (d *Directory) apply(index uint64, t Type, env Envelope) (*Event, error) {
	if env.V != 1 {
		return nil, fmt.Errorf("%v: payload version %d: %w (this member knows version 1)", t, env.V, ErrInvalid)
	}
	if err := d.replayed(t, env); err != nil {
		return nil, err
	}
	var target string
	var err error
	switch t {
	case TypeInit:
		target, err = withPayload(env, d.applyInit(index, env))
	case TypeUserPut:
		target, err = withPayload(env, d.applyUserPut(index, env))
	case TypeUserDelete:
		target, err = withPayload(env, d.applyUserDelete(index, env))
	case TypeMemberJoin:
		target, err = withPayload(env, d.applyMemberJoin(index, env))
	case TypeMemberUpdate:
		target, err = withPayload(env, d.applyMemberUpdate(env))
	case TypeMemberRemove:
		target, err = withPayload(env, d.applyMemberRemove(index, env))
	case TypeVMPut:
		target, err = withPayload(env, d.applyVMPut(index, env))
	case TypeVMDelete:
		target, err = withPayload(env, d.applyVMDelete(index, env))
	case TypeTemplatePut:
		target, err = withPayload(env, d.applyTemplatePut(index, env))
	case TypeTemplateDel:
		target, err = withPayload(env, d.applyTemplateDelete(index, env))
	case TypeSettingsSet:
		target, err = withPayload(env, d.applySettings(index, env))
	case TypeLabelSet:
		target, err = withPayload(env, d.applyLabel(index, env))
	case TypeAlertPut:
		target, err = withPayload(env, d.applyAlertPut(index, env))
	case TypeAlertDelete:
		target, err = withPayload(env, d.applyAlertDelete(index, env))
	case TypeTokenPut:
		target, err = withPayload(env, d.applyTokenPut(index, env))
	case TypeTokenDelete:
		target, err = withPayload(env, d.applyTokenDelete(index, env))
	case TypeAudit:
		target, err = withPayload(env, d.applyAudit(index, env))
	case TypeIPOwner:
		target, err = withPayload(env, d.applyIPOwner(index, env))
	case TypeForced:
		target, err = withPayload(env, d.applyForced(index, env))
	case TypeMaintenance:
		target, err = withPayload(env, d.applyMaintenance(index, env))
	case TypeVolumePut:
		target, err = withPayload(env, d.applyVolumePut(index, env))
	case TypeVolumeDelete:
		target, err = withPayload(env, d.applyVolumeDelete(index, env))
	case TypeVolumePrimary:
		target, err = withPayload(env, d.applyVolumePrimary(index, env))
	case TypeVolumeCopy:
		target, err = withPayload(env, d.applyVolumeCopy(index, env))
	case TypeVolumeCloned:
		target, err = withPayload(env, d.applyVolumeCloned(index, env))
	case TypeVMFT:
		target, err = withPayload(env, d.applyVMFT(index, env))
	case TypeSessionPut:
		target, err = withPayload(env, d.applySessionPut(index, env))
	case TypeSessionDelete:
		target, err = withPayload(env, d.applySessionDelete(index, env))
	case TypeAPITokenPut:
		target, err = withPayload(env, d.applyAPITokenPut(index, env))
	case TypeAPITokenDel:
		target, err = withPayload(env, d.applyAPITokenDelete(index, env))
	case TypeTaskPut:
		target, err = withPayload(env, d.applyTaskPut(index, env))
	case TypeProvisioning:
		target, err = withPayload(env, d.applyProvisioningSet(index, env))
	case TypeMachine:
		target, err = withPayload(env, d.applyMachine(index, env))
	default:
		if t&IgnoreUnknown != 0 {
			return nil, nil // a newer member's optional command
		}
		return nil, fmt.Errorf("unknown command type %d: %w (upgrade this member)", uint8(t), ErrInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("%v: %w", t, err)
	}
	d.remember(index, t, env, target)
	return &Event{Type: t.String(), Target: target}, nil
}

// withPayload decodes the envelope's payload into fn's argument type and
// runs fn.
func withPayload[P any](env Envelope, fn func(P) (string, error)) (string, error) {
	var p P
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return "", fmt.Errorf("payload: %v: %w", err, ErrInvalid)
	}
	return fn(p)
}

// audit appends an audit line, dropping the oldest past maxAudit.
func (d *Directory) audit(index uint64, env Envelope, action, target, result, detail string) {
	if len(d.s.Audit) >= maxAudit {
		// Copy rather than reslice, so a snapshot holding the old slice
		// keeps its own view and the array does not grow without end.
		keep := maxAudit * 9 / 10
		d.s.Audit = slices.Clone(d.s.Audit[len(d.s.Audit)-keep:])
	}
	d.s.Audit = append(d.s.Audit, AuditEntry{
		Index: index, Time: env.Time, Actor: env.Actor, From: env.From,
		Action: action, Target: target, Result: result, Detail: detail,
	})
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkName accepts the names records use: they end up in URLs, file
// names and web pages, so they are kept to a safe alphabet.
func checkName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: want 1 to 63 of A-Z a-z 0-9 . _ -, starting with a letter or digit: %w", kind, name, ErrInvalid)
	}
	return nil
}

func checkText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s: %d bytes, over %d: %w", field, len(s), max, ErrInvalid)
	}
	return nil
}

func (d *Directory) applyInit(index uint64, env Envelope) func(InitPayload) (string, error) {
	return func(p InitPayload) (string, error) {
		if d.s.Cluster != nil {
			return "", fmt.Errorf("cluster %s already exists: %w", d.s.Cluster.ID, ErrExists)
		}
		if p.Cluster.ID == "" || p.Member.ID == "" || p.Token.ID == "" {
			return "", fmt.Errorf("cluster, member and token IDs are required: %w", ErrInvalid)
		}
		if err := checkName("user", p.Admin.Name); err != nil {
			return "", err
		}
		if p.Admin.Role != RoleAdmin || p.Admin.PasswordHash == "" {
			return "", fmt.Errorf("the first user must be an admin with a password: %w", ErrInvalid)
		}
		c := p.Cluster
		c.Created = env.Time
		d.s.Cluster = &c
		admin := p.Admin
		admin.Created, admin.Updated = env.Time, env.Time
		d.s.Users[admin.Name] = &admin
		m := p.Member
		m.Joined, m.Updated = env.Time, env.Time
		d.s.Members[m.ID] = &m
		tok := p.Token
		tok.Created = env.Time
		d.s.Tokens[tok.ID] = &tok
		for k, v := range p.Settings {
			d.s.Settings[k] = v
		}
		d.audit(index, env, "cluster.init", c.ID, "ok", "first member "+m.Name+", admin "+admin.Name)
		return c.ID, nil
	}
}

// enabledAdmins counts admins who can log in, without the named user.
func (d *Directory) enabledAdminsBut(name string) int {
	n := 0
	for _, u := range d.s.Users {
		if u.Name != name && u.Role == RoleAdmin && !u.Disabled {
			n++
		}
	}
	return n
}

func (d *Directory) applyUserPut(index uint64, env Envelope) func(UserPutPayload) (string, error) {
	return func(p UserPutPayload) (string, error) {
		u := p.User
		if err := checkName("user", u.Name); err != nil {
			return "", err
		}
		if !ValidRole(u.Role) {
			return "", fmt.Errorf("role %q: want admin, operator or viewer: %w", u.Role, ErrInvalid)
		}
		old, exists := d.s.Users[u.Name]
		switch {
		case p.Op == OpCreate && exists:
			return "", fmt.Errorf("user %s: %w", u.Name, ErrExists)
		case p.Op == OpUpdate && !exists:
			return "", fmt.Errorf("user %s: %w", u.Name, ErrNotFound)
		case p.Op != OpCreate && p.Op != OpUpdate && p.Op != OpUpsert:
			return "", fmt.Errorf("op %q: %w", p.Op, ErrInvalid)
		}
		if exists {
			u.Created = old.Created
			if u.PasswordHash == "" {
				u.PasswordHash = old.PasswordHash
			}
			if old.Role == RoleAdmin && !old.Disabled && (u.Role != RoleAdmin || u.Disabled) && d.enabledAdminsBut(u.Name) == 0 {
				return "", fmt.Errorf("user %s is the last admin: %w", u.Name, ErrRefused)
			}
		} else {
			u.Created = env.Time
		}
		if u.PasswordHash == "" {
			return "", fmt.Errorf("user %s has no password: %w", u.Name, ErrInvalid)
		}
		u.Updated = env.Time
		d.s.Users[u.Name] = &u
		if exists && (u.Disabled || u.PasswordHash != old.PasswordHash) {
			// A disabled user is out at once; a new password ends the
			// browsers logged in with the old one (API tokens stay: they
			// are not the password).
			d.endAccess(u.Name, u.Disabled)
		}
		action := "user.update"
		if !exists {
			action = "user.create"
		}
		d.audit(index, env, action, u.Name, "ok", "role "+string(u.Role))
		return u.Name, nil
	}
}

func (d *Directory) applyUserDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return func(p NamePayload) (string, error) {
		u, ok := d.s.Users[p.Name]
		if !ok {
			return "", fmt.Errorf("user %s: %w", p.Name, ErrNotFound)
		}
		if u.Role == RoleAdmin && !u.Disabled && d.enabledAdminsBut(u.Name) == 0 {
			return "", fmt.Errorf("user %s is the last admin: %w", u.Name, ErrRefused)
		}
		delete(d.s.Users, p.Name)
		d.endAccess(p.Name, true)
		d.audit(index, env, "user.delete", p.Name, "ok", "")
		return p.Name, nil
	}
}

func (d *Directory) applyMemberJoin(index uint64, env Envelope) func(MemberJoinPayload) (string, error) {
	return func(p MemberJoinPayload) (string, error) {
		m := p.Member
		tok, ok := d.s.Tokens[p.TokenID]
		switch {
		case !ok:
			return "", fmt.Errorf("join token %s: %w", p.TokenID, ErrRefused)
		case !env.Time.Before(tok.Expires):
			return "", fmt.Errorf("join token %s expired at %v: %w", p.TokenID, tok.Expires, ErrRefused)
		case p.Nonce == "":
			return "", fmt.Errorf("no nonce: %w", ErrInvalid)
		}
		if _, used := d.s.Nonces[p.Nonce]; used {
			return "", fmt.Errorf("join request replayed (nonce already used): %w", ErrRefused)
		}
		if m.ID == "" || (m.Role != MemberNode && m.Role != MemberWitness) {
			return "", fmt.Errorf("member needs an ID and the role node or witness: %w", ErrInvalid)
		}
		if err := checkName("member", m.Name); err != nil {
			return "", err
		}
		if _, exists := d.s.Members[m.ID]; exists {
			return "", fmt.Errorf("member %s: %w", m.ID, ErrExists)
		}
		for _, other := range d.s.Members {
			if other.Name == m.Name && other.ID != p.Replaces {
				return "", fmt.Errorf("another member (%s) is named %s: %w", other.ID, m.Name, ErrExists)
			}
		}
		if p.Replaces != "" {
			old, ok := d.s.Members[p.Replaces]
			if !ok || old.Name != m.Name {
				return "", fmt.Errorf("member to replace %s is not the one named %s: %w", p.Replaces, m.Name, ErrInvalid)
			}
			delete(d.s.Members, p.Replaces)
		}
		for n, exp := range d.s.Nonces {
			if !env.Time.Before(exp) {
				delete(d.s.Nonces, n)
			}
		}
		d.s.Nonces[p.Nonce] = p.NonceExpires
		m.Joined, m.Updated = env.Time, env.Time
		d.s.Members[m.ID] = &m
		if m.Role == MemberNode {
			d.machineJoined(m.Name, env.Time)
		}
		detail := m.Role + " " + m.ID
		if p.Replaces != "" {
			detail += ", replacing " + p.Replaces
		}
		d.audit(index, env, "member.join", m.Name, "ok", detail)
		return m.ID, nil
	}
}

func (d *Directory) applyMemberUpdate(env Envelope) func(MemberUpdatePayload) (string, error) {
	return func(p MemberUpdatePayload) (string, error) {
		old, ok := d.s.Members[p.ID]
		if !ok {
			return "", fmt.Errorf("member %s: %w", p.ID, ErrNotFound)
		}
		m := *old
		if p.Addresses != nil {
			m.Addresses = p.Addresses
		}
		if p.Inventory != nil {
			inv := *p.Inventory
			m.Inventory = &inv
		}
		m.Updated = env.Time
		d.s.Members[p.ID] = &m
		return p.ID, nil
	}
}

func (d *Directory) applyMaintenance(index uint64, env Envelope) func(MaintenancePayload) (string, error) {
	return func(p MaintenancePayload) (string, error) {
		old, ok := d.s.Members[p.ID]
		if !ok || old.Role != MemberNode {
			return "", fmt.Errorf("node %s: %w", p.ID, ErrNotFound)
		}
		m := *old
		m.Maintenance, m.Updated = p.On, env.Time
		d.s.Members[p.ID] = &m
		state := "left"
		if p.On {
			state = "entered"
		}
		d.audit(index, env, "member.maintenance", m.Name, "ok", state+" maintenance")
		return p.ID, nil
	}
}

func (d *Directory) applyMemberRemove(index uint64, env Envelope) func(NamePayload) (string, error) {
	return func(p NamePayload) (string, error) {
		m, ok := d.s.Members[p.Name]
		if !ok {
			return "", fmt.Errorf("member %s: %w", p.Name, ErrNotFound)
		}
		delete(d.s.Members, p.Name)
		d.audit(index, env, "member.remove", m.Name, "ok", m.Role+" "+m.ID)
		return p.Name, nil
	}
}

func (d *Directory) applyVMPut(index uint64, env Envelope) func(VMPutPayload) (string, error) {
	return func(p VMPutPayload) (string, error) {
		vm := p.VM
		if err := checkName("VM", vm.Name); err != nil {
			return "", err
		}
		if err := checkText("description", vm.Description, 4096); err != nil {
			return "", err
		}
		if vm.CPUs < 1 || vm.MemoryMiB < 16 {
			return "", fmt.Errorf("VM %s: at least 1 CPU and 16 MiB of memory: %w", vm.Name, ErrInvalid)
		}
		if err := d.checkVM(&vm); err != nil {
			return "", err
		}
		old, exists := d.s.VMs[vm.Name]
		switch p.Op.Op {
		case OpCreate:
			if exists {
				return "", fmt.Errorf("VM %s: %w", vm.Name, ErrExists)
			}
			vm.Generation, vm.Created = 1, env.Time
		case OpUpdate:
			if !exists {
				return "", fmt.Errorf("VM %s: %w", vm.Name, ErrNotFound)
			}
			if p.Op.ExpectedGeneration != 0 && p.Op.ExpectedGeneration != old.Generation {
				return "", fmt.Errorf("VM %s changed since generation %d (now %d): %w", vm.Name, p.Op.ExpectedGeneration, old.Generation, ErrConflict)
			}
			vm.Generation, vm.Created = old.Generation+1, old.Created
			// Fault tolerance at run time is the VM manager's to record
			// (TypeVMFT); a put that stops the VM, moves it (an HA
			// restart) or switches FT off ends the pairing.
			vm.FTSecondary, vm.FTState, vm.FTReason, vm.FTEpoch = old.FTSecondary, old.FTState, old.FTReason, old.FTEpoch
			if vm.FTSecondary != "" && (!vm.Running || vm.Node != old.Node || !vm.FT) {
				survivor, reason := old.Node, "FT switched off"
				switch {
				case !vm.Running:
					reason = "the VM stopped"
				case vm.Node != old.Node:
					survivor, reason = vm.Node, "its node was lost: restarted on another node"
				}
				state := ""
				if survivor == old.FTSecondary {
					// Its secondary takes over (the VM manager there).
					state, reason = FTFailedOver, "its node was lost: the secondary took over"
				}
				d.endFT(index, env, &vm, survivor, state, reason)
			}
			if !vm.FT || !vm.Running {
				vm.FTState, vm.FTReason = "", ""
			}
		default:
			return "", fmt.Errorf("op %q: %w", p.Op.Op, ErrInvalid)
		}
		vm.Updated = env.Time
		d.s.VMs[vm.Name] = &vm
		d.audit(index, env, "vm."+string(p.Op.Op), vm.Name, "ok", fmt.Sprintf("generation %d", vm.Generation))
		return vm.Name, nil
	}
}

func (d *Directory) applyVMDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return deleteRecord(d, index, env, "vm.delete", d.s.VMs)
}

func (d *Directory) applyTemplatePut(index uint64, env Envelope) func(TemplatePutPayload) (string, error) {
	return func(p TemplatePutPayload) (string, error) {
		t := p.Template
		if err := checkName("template", t.Name); err != nil {
			return "", err
		}
		if err := checkText("description", t.Description, 4096); err != nil {
			return "", err
		}
		if t.CPUs < 1 || t.MemoryMiB < 16 || t.DiskGiB < 1 {
			return "", fmt.Errorf("template %s: at least 1 CPU, 16 MiB and 1 GiB: %w", t.Name, ErrInvalid)
		}
		t.Updated = env.Time
		d.s.Templates[t.Name] = &t
		d.audit(index, env, "template.put", t.Name, "ok", t.App)
		return t.Name, nil
	}
}

func (d *Directory) applyTemplateDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return deleteRecord(d, index, env, "template.delete", d.s.Templates)
}

func (d *Directory) applySettings(index uint64, env Envelope) func(SettingsPayload) (string, error) {
	return func(p SettingsPayload) (string, error) {
		var keys []string
		for k, v := range p.Set {
			if k == "" || len(k) > 128 || len(v) > 4096 {
				return "", fmt.Errorf("setting %q: key of 1 to 128 bytes, value up to 4096: %w", k, ErrInvalid)
			}
			keys = append(keys, k)
		}
		for k, v := range p.Set {
			d.s.Settings[k] = v
		}
		for _, k := range p.Unset {
			delete(d.s.Settings, k)
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d.audit(index, env, "settings.set", "", "ok", strings.Join(keys, ","))
		return strings.Join(keys, ","), nil
	}
}

func (d *Directory) applyLabel(index uint64, env Envelope) func(LabelPayload) (string, error) {
	return func(p LabelPayload) (string, error) {
		if err := checkName("label", p.Key); err != nil {
			return "", err
		}
		if err := checkText("label value", p.Value, 4096); err != nil {
			return "", err
		}
		if p.Value == "" {
			delete(d.s.Labels, p.Key)
		} else {
			d.s.Labels[p.Key] = p.Value
		}
		d.audit(index, env, "label.set", p.Key, "ok", "")
		return p.Key, nil
	}
}

func (d *Directory) applyAlertPut(index uint64, env Envelope) func(AlertPutPayload) (string, error) {
	return func(p AlertPutPayload) (string, error) {
		r := p.Rule
		if err := checkName("alert rule", r.Name); err != nil {
			return "", err
		}
		if !slices.Contains([]string{">", ">=", "<", "<="}, r.Op) {
			return "", fmt.Errorf("alert rule %s: op %q: %w", r.Name, r.Op, ErrInvalid)
		}
		if !slices.Contains([]string{"info", "warning", "critical"}, r.Severity) {
			return "", fmt.Errorf("alert rule %s: severity %q: %w", r.Name, r.Severity, ErrInvalid)
		}
		if r.Metric == "" || r.For < 0 {
			return "", fmt.Errorf("alert rule %s: metric and a non-negative duration: %w", r.Name, ErrInvalid)
		}
		r.Updated = env.Time
		d.s.Alerts[r.Name] = &r
		d.audit(index, env, "alert.put", r.Name, "ok", "")
		return r.Name, nil
	}
}

func (d *Directory) applyAlertDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return deleteRecord(d, index, env, "alert.delete", d.s.Alerts)
}

func (d *Directory) applyTokenPut(index uint64, env Envelope) func(TokenPutPayload) (string, error) {
	return func(p TokenPutPayload) (string, error) {
		t := p.Token
		if t.ID == "" || t.Key == "" || !t.Expires.After(env.Time) {
			return "", fmt.Errorf("token needs an ID, a key and an expiry in the future: %w", ErrInvalid)
		}
		if _, ok := d.s.Tokens[t.ID]; ok {
			return "", fmt.Errorf("token %s: %w", t.ID, ErrExists)
		}
		// Expired tokens are forgotten as new ones come.
		for id, old := range d.s.Tokens {
			if !env.Time.Before(old.Expires) {
				delete(d.s.Tokens, id)
			}
		}
		t.Created = env.Time
		d.s.Tokens[t.ID] = &t
		d.audit(index, env, "token.create", t.ID, "ok", "expires "+t.Expires.UTC().Format("2006-01-02 15:04 MST"))
		return t.ID, nil
	}
}

func (d *Directory) applyTokenDelete(index uint64, env Envelope) func(NamePayload) (string, error) {
	return deleteRecord(d, index, env, "token.delete", d.s.Tokens)
}

func (d *Directory) applyAudit(index uint64, env Envelope) func(AuditPayload) (string, error) {
	return func(p AuditPayload) (string, error) {
		if p.Action == "" || p.Result == "" {
			return "", fmt.Errorf("audit line needs an action and a result: %w", ErrInvalid)
		}
		if err := checkText("audit detail", p.Detail, 4096); err != nil {
			return "", err
		}
		d.audit(index, env, p.Action, p.Target, p.Result, p.Detail)
		return p.Target, nil
	}
}

func (d *Directory) applyIPOwner(index uint64, env Envelope) func(IPOwnerPayload) (string, error) {
	return func(p IPOwnerPayload) (string, error) {
		if d.s.Cluster == nil {
			return "", fmt.Errorf("no cluster yet: %w", ErrInvalid)
		}
		c := *d.s.Cluster
		if p.Term < c.IPOwner.Term {
			return "", fmt.Errorf("term %d is older than the owner's term %d: %w", p.Term, c.IPOwner.Term, ErrRefused)
		}
		changed := c.IPOwner.MemberID != p.MemberID
		c.IPOwner = IPOwner{MemberID: p.MemberID, Term: p.Term, Since: env.Time}
		d.s.Cluster = &c
		if changed {
			d.audit(index, env, "cluster-ip.owner", p.MemberID, "ok", fmt.Sprintf("term %d", p.Term))
		}
		return p.MemberID, nil
	}
}

func (d *Directory) applyForced(index uint64, env Envelope) func(ForcedPayload) (string, error) {
	return func(p ForcedPayload) (string, error) {
		if d.s.Cluster == nil {
			return "", fmt.Errorf("no cluster yet: %w", ErrInvalid)
		}
		c := *d.s.Cluster
		c.Forced = Forced{On: p.On, MemberID: p.MemberID, Since: env.Time, By: env.Actor, Reason: p.Reason}
		d.s.Cluster = &c
		action := "cluster.force-single"
		if !p.On {
			action = "cluster.force-single.lifted"
		}
		d.audit(index, env, action, p.MemberID, "ok", p.Reason)
		return p.MemberID, nil
	}
}

// deleteRecord removes a named record from m.
func deleteRecord[V any](d *Directory, index uint64, env Envelope, action string, m map[string]*V) func(NamePayload) (string, error) {
	return func(p NamePayload) (string, error) {
		if _, ok := m[p.Name]; !ok {
			return "", fmt.Errorf("%s: %w", p.Name, ErrNotFound)
		}
		delete(m, p.Name)
		d.audit(index, env, action, p.Name, "ok", "")
		return p.Name, nil
	}
}
