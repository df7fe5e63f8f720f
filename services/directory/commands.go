package directory

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Type says what a command does. A log entry is one type byte followed by
// the JSON envelope. Types are never renumbered; a type with
// IgnoreUnknown set may be skipped by an older member during a rolling
// upgrade, any other unknown type fails on it.
type Type uint8

// IgnoreUnknown marks a command older members may skip.
const IgnoreUnknown Type = 0x80

// Command types.
const (
	TypeInit          Type = 1  // bootstrap: cluster record, first admin, first member, first token
	TypeUserPut       Type = 2  // create or update a user
	TypeUserDelete    Type = 3  // remove a user
	TypeMemberJoin    Type = 4  // a member joined with a token (nonce recorded)
	TypeMemberUpdate  Type = 5  // a member's addresses or inventory changed
	TypeMemberRemove  Type = 6  // a member left or was removed
	TypeVMPut         Type = 7  // create or update a VM definition
	TypeVMDelete      Type = 8  // remove a VM definition
	TypeTemplatePut   Type = 9  // create or update an app template
	TypeTemplateDel   Type = 10 // remove an app template
	TypeSettingsSet   Type = 11 // set and unset cluster settings
	TypeLabelSet      Type = 12 // set (or, empty, remove) a label
	TypeAlertPut      Type = 13 // create or update an alert rule
	TypeAlertDelete   Type = 14 // remove an alert rule
	TypeTokenPut      Type = 15 // a new join token
	TypeTokenDelete   Type = 16 // revoke a join token
	TypeAudit         Type = 17 // an audit line on its own (a refused request)
	TypeIPOwner       Type = 18 // who holds the cluster IP, decided by the leader of a term
	TypeForced        Type = 19 // single-node mode forced on or lifted
	TypeVolumePut     Type = 20 // create a volume, or grow it
	TypeVolumeDelete  Type = 21 // remove a volume
	TypeVolumePrimary Type = 22 // move a volume's primary role (a new role generation)
	TypeVolumeCopy    Type = 23 // the primary records its peer's copy outdated or up to date
	TypeMaintenance   Type = 24 // a node enters or leaves maintenance
	TypeVolumeCloned  Type = 25 // a clone's primary copied its source's data in
	TypeVMFT          Type = 26 // a VM's fault tolerance starts, is reached, fails over or ends
	TypeSessionPut    Type = 27 // a console login
	TypeSessionDelete Type = 28 // a logout, or a session ended
	TypeAPITokenPut   Type = 29 // a new API token
	TypeAPITokenDel   Type = 30 // an API token revoked
	TypeTaskPut       Type = 31 // a long operation starts, progresses or ends
	TypeProvisioning  Type = 32 // the provisioning network's plan, and its switch
	TypeMachine       Type = 33 // a machine on the provisioning network: PXE, report, approval, steps
)

// Envelope is what every command carries besides its payload.
type Envelope struct {
	V     int       `json:"v"` // payload version
	Actor string    `json:"actor"`
	From  string    `json:"from,omitempty"`
	Time  time.Time `json:"time"` // stamped by the proposer; apply never reads the clock
	// Key is the client's Idempotency-Key of a create (idempotency.go).
	Key     string          `json:"key,omitempty"`
	Payload json.RawMessage `json:"payload"`
}

// Op says whether a put creates a record, replaces one, or does either.
type Op string

// Put operations.
const (
	OpCreate Op = "create" // fails if the record exists
	OpUpdate Op = "update" // fails if it does not
	OpUpsert Op = "upsert"
)

// Payloads, one per command type.
type (
	InitPayload struct {
		Cluster  Cluster           `json:"cluster"`
		Admin    User              `json:"admin"`
		Member   Member            `json:"member"`
		Token    JoinToken         `json:"token"`
		Settings map[string]string `json:"settings,omitempty"`
	}
	UserPutPayload struct {
		Op   Op   `json:"op"`
		User User `json:"user"`
	}
	NamePayload struct {
		Name string `json:"name"`
	}
	MemberJoinPayload struct {
		Member       Member    `json:"member"`
		TokenID      string    `json:"token_id"`
		Nonce        string    `json:"nonce"`
		NonceExpires time.Time `json:"nonce_expires"`
		// Replaces is the ID of a member with the same name whose disk was
		// wiped: it is removed as this one joins.
		Replaces string `json:"replaces,omitempty"`
	}
	MemberUpdatePayload struct {
		ID        string     `json:"id"`
		Addresses []string   `json:"addresses,omitempty"`
		Inventory *Inventory `json:"inventory,omitempty"`
	}
	VMPutPayload struct {
		Op VMOp `json:"op"`
		VM VM   `json:"vm"`
	}
	TemplatePutPayload struct {
		Template Template `json:"template"`
	}
	SettingsPayload struct {
		Set   map[string]string `json:"set,omitempty"`
		Unset []string          `json:"unset,omitempty"`
	}
	LabelPayload struct {
		Key   string `json:"key"`
		Value string `json:"value"` // empty removes the label
	}
	AlertPutPayload struct {
		Rule AlertRule `json:"rule"`
	}
	TokenPutPayload struct {
		Token JoinToken `json:"token"`
	}
	AuditPayload struct {
		Action string `json:"action"`
		Target string `json:"target,omitempty"`
		Result string `json:"result"`
		Detail string `json:"detail,omitempty"`
	}
	IPOwnerPayload struct {
		MemberID string `json:"member_id"`
		Term     uint64 `json:"term"`
	}
	MaintenancePayload struct {
		ID string `json:"id"`
		On bool   `json:"on"`
	}
	ForcedPayload struct {
		On       bool   `json:"on"`
		MemberID string `json:"member_id,omitempty"`
		Reason   string `json:"reason,omitempty"`
	}
)

// VMOp is a VM put: create, or update at an expected generation (0: any).
type VMOp struct {
	Op                 Op    `json:"op"`
	ExpectedGeneration int64 `json:"expected_generation,omitempty"`
}

// MaxCommandSize bounds a log entry, so one request cannot bloat the log.
const MaxCommandSize = 1 << 20

// Encode makes a log entry.
func Encode(t Type, env Envelope, payload any) ([]byte, error) {
	p, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %v payload: %w", t, err)
	}
	env.Payload = p
	if env.V == 0 {
		env.V = 1
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	out := append([]byte{byte(t)}, b...)
	if len(out) > MaxCommandSize {
		return nil, fmt.Errorf("command of %d bytes is over the %d limit", len(out), MaxCommandSize)
	}
	return out, nil
}

// Decode splits a log entry into its type and envelope.
func Decode(data []byte) (Type, Envelope, error) {
	var env Envelope
	if len(data) < 2 {
		return 0, env, errors.New("command too short")
	}
	if len(data) > MaxCommandSize {
		return 0, env, fmt.Errorf("command of %d bytes is over the %d limit", len(data), MaxCommandSize)
	}
	if err := json.Unmarshal(data[1:], &env); err != nil {
		return 0, env, fmt.Errorf("command envelope: %w", err)
	}
	return Type(data[0]), env, nil
}

func (t Type) String() string {
	names := map[Type]string{
		TypeInit: "init", TypeUserPut: "user.put", TypeUserDelete: "user.delete", TypeMemberJoin: "member.join",
		TypeMemberUpdate: "member.update", TypeMemberRemove: "member.remove", TypeVMPut: "vm.put", TypeVMDelete: "vm.delete",
		TypeTemplatePut: "template.put", TypeTemplateDel: "template.delete", TypeSettingsSet: "settings.set",
		TypeLabelSet: "label.set", TypeAlertPut: "alert.put", TypeAlertDelete: "alert.delete", TypeTokenPut: "token.put",
		TypeTokenDelete: "token.delete", TypeAudit: "audit", TypeIPOwner: "cluster-ip.owner", TypeForced: "forced",
		TypeVolumePut: "volume.put", TypeVolumeDelete: "volume.delete", TypeVolumePrimary: "volume.primary", TypeVolumeCopy: "volume.copy", TypeMaintenance: "member.maintenance",
		TypeVolumeCloned: "volume.cloned", TypeVMFT: "vm.ft", TypeSessionPut: "session.put", TypeSessionDelete: "session.delete",
		TypeAPITokenPut: "api-token.put", TypeAPITokenDel: "api-token.delete", TypeTaskPut: "task.put",
		TypeProvisioning: "provisioning.set", TypeMachine: "machine",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type-%d", uint8(t))
}
