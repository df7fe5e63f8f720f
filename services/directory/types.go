// Package directory is the cluster's replicated directory: the raft FSM
// holding users, members and their inventory, VM definitions, app
// templates, settings, labels, alert rules, join tokens and the audit log.
//
// Every change is a versioned command (commands.go) applied by one
// function (apply.go); applying is deterministic (the time comes from the
// command, stamped by the leader) and errors go back to whoever proposed
// the command. Records are immutable once stored: a change stores a new
// value, so a snapshot is a copy of the maps' pointers.
package directory

import "time"

// Role is what a user may do.
type Role string

// User roles, most powerful first.
const (
	RoleAdmin    Role = "admin"    // everything, users included
	RoleOperator Role = "operator" // run VMs and nodes, not users or settings
	RoleViewer   Role = "viewer"   // read only
)

// AtLeast reports whether r may do what want may: admin over operator
// over viewer. An unknown role is below every role.
func (r Role) AtLeast(want Role) bool {
	rank := map[Role]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}
	return rank[r] >= rank[want] && rank[r] > 0
}

// ValidRole reports whether r is a known role.
func ValidRole(r Role) bool { return r == RoleAdmin || r == RoleOperator || r == RoleViewer }

// User is a person or automation account.
type User struct {
	Name         string    `json:"name"`
	Role         Role      `json:"role"`
	PasswordHash string    `json:"password_hash,omitempty"` // argon2id PHC string
	Disabled     bool      `json:"disabled,omitempty"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// Member roles.
const (
	MemberNode    = "node"
	MemberWitness = "witness"
)

// Member is a node or the witness.
type Member struct {
	ID        string     `json:"id"` // raft server ID
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Addresses []string   `json:"addresses"` // front door addresses, preferred first
	Inventory *Inventory `json:"inventory,omitempty"`
	// Maintenance keeps VMs away from the node: the leader moves its VMs
	// off, and nothing new is placed on it.
	Maintenance bool      `json:"maintenance,omitempty"`
	Joined      time.Time `json:"joined"`
	Updated     time.Time `json:"updated"`
}

// Inventory is what a node reports about its hardware and firmware.
type Inventory struct {
	Board        string `json:"board,omitempty"`
	ImageVersion string `json:"image_version,omitempty"`
	CPUs         int    `json:"cpus,omitempty"`
	MemoryBytes  int64  `json:"memory_bytes,omitempty"`
	// WatchdogSeconds is the node's armed hardware watchdog timeout (0:
	// none): the leader adds it to the node's fence bound.
	WatchdogSeconds int `json:"watchdog_seconds,omitempty"`
}

// VM is a virtual machine's definition: what should exist, not what runs.
type VM struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	CPUs        int      `json:"cpus"`
	MemoryMiB   int      `json:"memory_mib"`
	Disks       []VMDisk `json:"disks,omitempty"`
	NICs        []VMNIC  `json:"nics,omitempty"`
	HA          bool     `json:"ha,omitempty"`
	FT          bool     `json:"ft,omitempty"`
	Priority    int      `json:"priority,omitempty"`
	Node        string   `json:"node,omitempty"` // member ID it should run on; empty: placer decides
	Running     bool     `json:"running,omitempty"`
	Template    string   `json:"template,omitempty"`
	Boot        *VMBoot  `json:"boot,omitempty"`
	// StopForce asks for a power-off rather than an ACPI shutdown when
	// Running goes false.
	StopForce bool `json:"stop_force,omitempty"`
	// MigrateTo asks for a live migration to that node: the node running
	// the VM sends it there, then records Node as MigrateTo.
	MigrateTo string `json:"migrate_to,omitempty"`
	// Home is the node a VM left for its node's maintenance, to go back
	// to when the maintenance ends.
	Home string `json:"home,omitempty"`
	// Fault tolerance as it stands, changed only by TypeVMFT (and ended
	// when the VM stops or moves otherwise): the node running the
	// secondary QEMU, the state (FTSyncing, FTProtected, …), why it is
	// not protected, and an epoch raised at every change, so a failover
	// decided for an earlier pairing is refused.
	FTSecondary string    `json:"ft_secondary,omitempty"`
	FTState     string    `json:"ft_state,omitempty"`
	FTReason    string    `json:"ft_reason,omitempty"`
	FTEpoch     uint64    `json:"ft_epoch,omitempty"`
	Generation  int64     `json:"generation"` // raised on every change
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
}

// VMDisk is one disk of a VM: a replicated volume.
type VMDisk struct {
	Volume  string `json:"volume"`
	SizeGiB int    `json:"size_gib"`
}

// VMBoot boots a VM from a kernel rather than from its first disk: files
// in the nodes' guest boot directory (the test guest's are
// testguest/vmlinux, an ELF kernel QEMU starts at its PVH entry, and testguest/initrd.gz).
type VMBoot struct {
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// VMNIC is one network interface of a VM.
type VMNIC struct {
	Network string `json:"network"`
	MAC     string `json:"mac,omitempty"`
}

// Template is a one-click app template.
type Template struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	App         string    `json:"app"` // mariadb, lnmp, tomcat, …
	CPUs        int       `json:"cpus"`
	MemoryMiB   int       `json:"memory_mib"`
	DiskGiB     int       `json:"disk_gib"`
	Image       string    `json:"image,omitempty"` // template volume the disk is cloned from
	Updated     time.Time `json:"updated"`
}

// AlertRule raises an alert when a metric crosses a threshold for a while.
type AlertRule struct {
	Name      string        `json:"name"`
	Metric    string        `json:"metric"`
	Op        string        `json:"op"` // >, >=, <, <=
	Threshold float64       `json:"threshold"`
	For       time.Duration `json:"for"`
	Severity  string        `json:"severity"` // info, warning, critical
	Enabled   bool          `json:"enabled"`
	Updated   time.Time     `json:"updated"`
}

// JoinToken lets members join until it expires. Key is derived from the
// token's secret (pki.Token.Key); the secret itself is never stored.
type JoinToken struct {
	ID        string    `json:"id"`
	Key       string    `json:"key"`
	Expires   time.Time `json:"expires"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
}

// AuditEntry is one line of the append-only audit log.
type AuditEntry struct {
	Index  uint64    `json:"index"` // raft index of the command that wrote it
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"` // user or member
	From   string    `json:"from,omitempty"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Result string    `json:"result"` // "ok" or why it was refused
	Detail string    `json:"detail,omitempty"`
}

// Cluster is the cluster's own record.
type Cluster struct {
	ID            string    `json:"id"`
	Created       time.Time `json:"created"`
	CAFingerprint string    `json:"ca_fingerprint"`
	CAPEM         string    `json:"ca_pem"`
	IPOwner       IPOwner   `json:"ip_owner"`
	Forced        Forced    `json:"forced"`
}

// IPOwner is the committed decision of who holds the cluster IP.
type IPOwner struct {
	MemberID string    `json:"member_id,omitempty"`
	Term     uint64    `json:"term,omitempty"`
	Since    time.Time `json:"since"`
}

// Forced records that an admin made one node go on alone.
type Forced struct {
	On       bool      `json:"on"`
	MemberID string    `json:"member_id,omitempty"`
	Since    time.Time `json:"since"`
	By       string    `json:"by,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}
