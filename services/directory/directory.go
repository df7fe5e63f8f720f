package directory

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Errors an apply can return; the API maps them to status codes.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
	ErrRefused  = errors.New("refused")
)

// Result is what Apply returns to the proposer of a command.
type Result struct {
	Index uint64 // raft index the command was applied at
	Err   error
}

// Event tells subscribers that something changed.
type Event struct {
	Index  uint64 `json:"index"`
	Type   string `json:"type"`   // the command type, e.g. vm.put
	Target string `json:"target"` // the record's name or ID
}

// maxAudit bounds the audit log kept in the directory; older lines are
// dropped from the head (the web console exports them before that).
const maxAudit = 50000

// state is everything the directory holds. Values in the maps are never
// changed after they are stored, so copying the maps is a snapshot.
type state struct {
	Cluster   *Cluster              `json:"cluster,omitempty"`
	Users     map[string]*User      `json:"users"`
	Members   map[string]*Member    `json:"members"`
	VMs       map[string]*VM        `json:"vms"`
	Volumes   map[string]*Volume    `json:"volumes"`
	Templates map[string]*Template  `json:"templates"`
	Settings  map[string]string     `json:"settings"`
	Labels    map[string]string     `json:"labels"`
	Alerts    map[string]*AlertRule `json:"alerts"`
	Tokens    map[string]*JoinToken `json:"tokens"`
	Sessions  map[string]*Session   `json:"sessions"`
	APITokens map[string]*APIToken  `json:"api_tokens"`
	Tasks     map[string]*Task      `json:"tasks"`
	// Provisioning: the plan, and the machines on the network by MAC.
	Provisioning *Provisioning       `json:"provisioning,omitempty"`
	Machines     map[string]*Machine `json:"machines"`
	// Idempotency: the keyed creates of the last day, by actor and key.
	Idempotency map[string]IdempotentWrite `json:"idempotency"`
	Nonces      map[string]time.Time       `json:"nonces"` // used join nonces, until they expire
	Audit       []AuditEntry               `json:"audit"`
	Index       uint64                     `json:"index"` // last applied raft index
}

func newState() *state {
	s := &state{}
	s.fillNil()
	return s
}

// fillNil gives every nil map an empty one.
func (s *state) fillNil() {
	fill(&s.Users)
	fill(&s.Members)
	fill(&s.VMs)
	fill(&s.Volumes)
	fill(&s.Templates)
	fill(&s.Settings)
	fill(&s.Labels)
	fill(&s.Alerts)
	fill(&s.Tokens)
	fill(&s.Sessions)
	fill(&s.APITokens)
	fill(&s.Idempotency)
	fill(&s.Tasks)
	fill(&s.Nonces)
	fill(&s.Machines)
}

func fill[K comparable, V any](m *map[K]V) {
	if *m == nil {
		*m = map[K]V{}
	}
}

// clone copies the maps (not the records, which never change).
func (s *state) clone() *state {
	c := *s
	c.Users = cloneMap(s.Users)
	c.Members = cloneMap(s.Members)
	c.VMs = cloneMap(s.VMs)
	c.Volumes = cloneMap(s.Volumes)
	c.Templates = cloneMap(s.Templates)
	c.Settings = cloneMap(s.Settings)
	c.Labels = cloneMap(s.Labels)
	c.Alerts = cloneMap(s.Alerts)
	c.Tokens = cloneMap(s.Tokens)
	c.Sessions = cloneMap(s.Sessions)
	c.APITokens = cloneMap(s.APITokens)
	c.Idempotency = cloneMap(s.Idempotency)
	c.Tasks = cloneMap(s.Tasks)
	c.Nonces = cloneMap(s.Nonces)
	c.Machines = cloneMap(s.Machines)
	c.Audit = s.Audit[:len(s.Audit):len(s.Audit)] // appends copy; the prefix never changes
	return &c
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Directory is the raft FSM and the local read view of the directory.
type Directory struct {
	mu sync.RWMutex
	s  *state

	subMu sync.Mutex
	subs  map[int]chan Event
	next  int
}

// New returns an empty directory.
func New() *Directory {
	return &Directory{s: newState(), subs: map[int]chan Event{}}
}

var _ raft.FSM = (*Directory)(nil)

// Apply applies one committed command. It never panics on bad input: a
// command that cannot be applied returns its error to the proposer and
// leaves the directory as it was, on every member alike.
func (d *Directory) Apply(l *raft.Log) any {
	t, env, err := Decode(l.Data)
	res := Result{Index: l.Index}
	d.mu.Lock()
	var ev *Event
	if err == nil {
		ev, err = d.apply(l.Index, t, env)
	}
	d.s.Index = l.Index
	d.mu.Unlock()
	if err != nil {
		res.Err = err
	}
	if ev != nil {
		ev.Index = l.Index
		d.publish(*ev)
	}
	return res
}

// Subscribe returns a channel of changes. A subscriber that falls more
// than buf events behind misses events (and should re-read what it shows).
func (d *Directory) Subscribe(buf int) (<-chan Event, func()) {
	d.subMu.Lock()
	defer d.subMu.Unlock()
	ch := make(chan Event, buf)
	id := d.next
	d.next++
	d.subs[id] = ch
	return ch, func() {
		d.subMu.Lock()
		defer d.subMu.Unlock()
		if _, ok := d.subs[id]; ok {
			delete(d.subs, id)
			close(ch)
		}
	}
}

func (d *Directory) publish(e Event) {
	d.subMu.Lock()
	defer d.subMu.Unlock()
	for _, ch := range d.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Reads. They see the local member's applied state: whether that is
// current is the caller's concern (read through the leader with a barrier
// for reads that must be).

// AppliedIndex is the raft index of the last command applied here.
func (d *Directory) AppliedIndex() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.s.Index
}

// Cluster returns the cluster record, once bootstrapped.
func (d *Directory) Cluster() (Cluster, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.s.Cluster == nil {
		return Cluster{}, false
	}
	return *d.s.Cluster, true
}

// User returns a user.
func (d *Directory) User(name string) (User, bool) {
	return get(d, func(s *state) map[string]*User { return s.Users }, name)
}

// Users returns every user, sorted by name.
func (d *Directory) Users() []User {
	return list(d, func(s *state) map[string]*User { return s.Users })
}

// Member returns a member by ID.
func (d *Directory) Member(id string) (Member, bool) {
	return get(d, func(s *state) map[string]*Member { return s.Members }, id)
}

// Members returns every member, sorted by ID.
func (d *Directory) Members() []Member {
	return list(d, func(s *state) map[string]*Member { return s.Members })
}

// MemberByName returns the member with a name.
func (d *Directory) MemberByName(name string) (Member, bool) {
	for _, m := range d.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// VM returns a VM definition.
func (d *Directory) VM(name string) (VM, bool) {
	return get(d, func(s *state) map[string]*VM { return s.VMs }, name)
}

// VMs returns every VM definition, sorted by name.
func (d *Directory) VMs() []VM { return list(d, func(s *state) map[string]*VM { return s.VMs }) }

// Templates returns every app template.
func (d *Directory) Templates() []Template {
	return list(d, func(s *state) map[string]*Template { return s.Templates })
}

// AlertRules returns every alert rule.
func (d *Directory) AlertRules() []AlertRule {
	return list(d, func(s *state) map[string]*AlertRule { return s.Alerts })
}

// Token returns a join token.
func (d *Directory) Token(id string) (JoinToken, bool) {
	return get(d, func(s *state) map[string]*JoinToken { return s.Tokens }, id)
}

// Settings returns a copy of the cluster settings.
func (d *Directory) Settings() map[string]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return cloneMap(d.s.Settings)
}

// Label returns a label's value.
func (d *Directory) Label(key string) (string, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	v, ok := d.s.Labels[key]
	return v, ok
}

// Labels returns a copy of the labels.
func (d *Directory) Labels() map[string]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return cloneMap(d.s.Labels)
}

// NonceUsed reports whether a join nonce was already used.
func (d *Directory) NonceUsed(nonce string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.s.Nonces[nonce]
	return ok
}

// Audit returns up to limit audit lines written after index since.
func (d *Directory) Audit(since uint64, limit int) []AuditEntry {
	d.mu.RLock()
	defer d.mu.RUnlock()
	i, _ := slices.BinarySearchFunc(d.s.Audit, since+1, func(e AuditEntry, idx uint64) int {
		switch {
		case e.Index < idx:
			return -1
		case e.Index > idx:
			return 1
		}
		return 0
	})
	out := d.s.Audit[i:]
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return slices.Clone(out)
}

// RecentAudit returns the last limit lines of the audit log, newest
// first.
func (d *Directory) RecentAudit(limit int) []AuditEntry {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := min(limit, len(d.s.Audit))
	out := make([]AuditEntry, 0, n)
	for i := len(d.s.Audit) - 1; i >= len(d.s.Audit)-n; i-- {
		out = append(out, d.s.Audit[i])
	}
	return out
}

func get[V any](d *Directory, m func(*state) map[string]*V, key string) (V, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	v, ok := m(d.s)[key]
	if !ok {
		var zero V
		return zero, false
	}
	return *v, true
}

func list[V any](d *Directory, m func(*state) map[string]*V) []V {
	d.mu.RLock()
	src := m(d.s)
	keys := make([]string, 0, len(src))
	for k := range src {
		keys = append(keys, k)
	}
	vals := make([]V, 0, len(src))
	slices.SortFunc(keys, strings.Compare)
	for _, k := range keys {
		vals = append(vals, *src[k])
	}
	d.mu.RUnlock()
	return vals
}
