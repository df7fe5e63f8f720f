package cluster

import (
	"net/http"

	"github.com/tandemhci/tandem/services/apidoc"
	"github.com/tandemhci/tandem/services/directory"
)

// APIRoutes describes the agent's endpoints, for the API's document:
// the same list Handler serves, without handlers.
func APIRoutes() []apidoc.Route {
	routes := (&Agent{}).routes()
	for i := range routes {
		routes[i].Handler = nil
	}
	return routes
}

// routes is every endpoint of the agent, declared once: Handler serves
// it (guard enforces each one's Access) and APIRoutes documents it.
// Handlers that write to the directory run on the leader (leaderOnly
// forwards); reads are consistent unless ?stale=1 (read).
func (a *Agent) routes() []apidoc.Route {
	type (
		R = apidoc.Route
		P = apidoc.Param
	)
	public, viewer, operator, admin, member, local, installer := apidoc.Public, apidoc.Viewer, apidoc.Operator, apidoc.Admin, apidoc.Member, apidoc.Local, apidoc.Installer
	stale := P{Name: "stale", Type: "integer", Description: "1: answer from this member's copy, without asking the leader"}
	paged := []P{{Name: "limit", Type: "integer", Description: "items per page (1-1000)"}, {Name: "offset", Type: "integer", Description: "first item"}, stale}
	volumeCopy := proposedBy[directory.VolumeCopyPayload](a, directory.TypeVolumeCopy)
	volumeCloned := proposedBy[directory.VolumeClonedPayload](a, directory.TypeVolumeCloned)
	vmFT := proposedBy[directory.VMFTPayload](a, directory.TypeVMFT)
	return []R{
		// Open to anyone: what a new member needs to find and check a cluster.
		{Method: "GET", Path: "/api/v1/cluster/beacon", Access: public, Summary: "This member's identity and cluster, for members joining", Response: Beacon{}, Handler: a.handleBeacon},
		{Method: "GET", Path: "/api/v1/cluster/ca", Access: public, Summary: "The cluster's CA certificate (PEM)", Handler: a.handleCA, Status: http.StatusOK},
		// Before there are users: authorised by the member's setup code.
		{Method: "POST", Path: "/api/v1/cluster/bootstrap", Access: public, Summary: "Make this member the first of a new cluster (needs its setup code)", Request: BootstrapRequest{}, Response: BootstrapResponse{}, Status: http.StatusCreated, Handler: a.handleBootstrap},
		{Method: "POST", Path: "/api/v1/cluster/join", Access: public, Summary: "Make this member join a cluster with a join token (needs its setup code)", Request: JoinRequest{}, Response: Beacon{}, Handler: a.handleJoin},
		// A joining member, authorised by its token proof.
		{Method: "POST", Path: "/api/v1/cluster/join-request", Access: public, Summary: "A joining member's claim, proven with its join token", Request: JoinClaimRequest{}, Response: JoinClaimResponse{}, Handler: a.leaderOnly(a.handleJoinRequest)},

		// Console sessions: logging in is open to anyone, and guarded by
		// the lockout (loginGuard).
		{Method: "POST", Path: "/api/v1/session", Access: public, Summary: "Log in: sets the session cookie and returns the CSRF token", Request: LoginRequest{}, Response: SessionInfo{}, Status: http.StatusCreated, Handler: a.leaderOnly(a.handleLogin)},
		{Method: "GET", Path: "/api/v1/session", Access: viewer, Summary: "Who the request is for, and the session's CSRF token", Response: SessionInfo{}, Handler: a.handleSession},
		{Method: "DELETE", Path: "/api/v1/session", Access: viewer, Summary: "Log out (ends the session everywhere)", Handler: a.leaderOnly(a.handleLogout)},
		{Method: "PUT", Path: "/api/v1/session/password", Access: viewer, Summary: "Change your own password (ends your sessions)", Request: PasswordChange{}, Handler: a.leaderOnly(a.handleChangePassword)},
		{Method: "GET", Path: "/api/v1/events", Access: viewer, Websocket: true, Summary: "Websocket of changes as they happen (EventMessage)", Response: EventMessage{}, Handler: a.handleEvents},
		{Method: "GET", Path: "/api/v1/tasks", Access: viewer, Summary: "Long operations (start, stop, migrate, FT, maintenance) and how they go, newest first", Query: append([]P{{Name: "state", Description: "running, done or failed"}}, paged...), Response: []directory.Task{}, Handler: a.read(a.handleTasks)},
		{Method: "GET", Path: "/api/v1/tasks/{id}", Access: viewer, Summary: "A long operation and how it goes", Query: []P{stale}, Response: directory.Task{}, Handler: a.read(a.handleTask)},
		{Method: "GET", Path: "/api/v1/activity", Access: viewer, Summary: "The latest audit lines, newest first", Query: []P{{Name: "limit", Type: "integer", Description: "1-200, default 50"}, stale}, Response: []directory.AuditEntry{}, Handler: a.read(a.handleActivity)},

		// Users, and their API tokens.
		{Method: "GET", Path: "/api/v1/users", Access: admin, Summary: "List users", Query: paged, Response: []UserView{}, Handler: a.read(a.handleUsers)},
		{Method: "GET", Path: "/api/v1/users/{name}", Access: admin, Summary: "Get a user", Query: []P{stale}, Response: UserView{}, Handler: a.read(a.handleUser)},
		{Method: "POST", Idempotent: true, Path: "/api/v1/users", Access: admin, Summary: "Create a user", Request: UserRequest{}, Response: UserView{}, Status: http.StatusCreated, Handler: a.leaderOnly(a.idempotent(lookupIn(func(n string) (UserView, bool) { u, ok := a.Directory().User(n); return userView(u), ok }, "user"), a.handleCreateUser))},
		{Method: "PATCH", Path: "/api/v1/users/{name}", Access: admin, Summary: "Change a user's role, password or disabled flag", Request: UserPatch{}, Response: UserView{}, Handler: a.leaderOnly(a.handleUpdateUser)},
		{Method: "DELETE", Path: "/api/v1/users/{name}", Access: admin, Summary: "Delete a user (and their sessions and tokens)", Handler: a.leaderOnly(a.handleDeleteUser)},
		{Method: "GET", Path: "/api/v1/tokens", Access: viewer, Summary: "List your API tokens (an admin: everyone's)", Query: paged, Response: []APITokenView{}, Handler: a.read(a.handleAPITokens)},
		{Method: "POST", Idempotent: true, Path: "/api/v1/tokens", Access: viewer, Summary: "Create an API token (its secret is in this answer only)", Request: APITokenRequest{}, Response: APITokenView{}, Status: http.StatusCreated, Handler: a.leaderOnly(a.idempotent(a.tokenMadeBefore, a.handleCreateAPIToken))},
		{Method: "DELETE", Path: "/api/v1/tokens/{id}", Access: viewer, Summary: "Revoke an API token", Handler: a.leaderOnly(a.handleRevokeAPIToken)},

		// The cluster.
		{Method: "GET", Path: "/api/v1/cluster/status", Access: viewer, Summary: "This member's view of the cluster", Response: Status{}, Handler: a.handleStatus},
		{Method: "GET", Path: "/api/v1/cluster/metrics", Access: viewer, Summary: "This member's raft state and the directory's records in Prometheus's text format", Handler: a.handleMetrics, Status: http.StatusOK},
		{Method: "GET", Path: "/api/v1/cluster/health", Access: viewer, Summary: "The cluster's health, as the leader sees it", Response: Health{}, Handler: a.leaderOnly(a.handleHealth)},
		{Method: "POST", Path: "/api/v1/cluster/tokens", Access: admin, Summary: "Make a join token for a new member", Request: struct {
			TTLHours int `json:"ttl_hours,omitempty"`
		}{}, Response: struct {
			Token   string `json:"token"`
			Expires string `json:"expires"`
		}{}, Status: http.StatusCreated, Handler: a.leaderOnly(a.handleNewToken)},
		{Method: "GET", Path: "/api/v1/cluster/members", Access: viewer, Summary: "The cluster's members: addresses, inventory, maintenance", Query: []P{stale}, Response: []directory.Member{}, Handler: a.read(a.handleMembers)},
		{Method: "GET", Path: "/api/v1/cluster/members/{id}/health", Access: viewer, Summary: "A member's own health: its services and their restarts (its /api/v1/health)", Response: frontdoorHealth{}, Handler: a.handleMemberHealth},
		{Method: "GET", Path: "/api/v1/cluster/members/{id}/logs/{service}", Access: operator, Summary: "A service's last output lines on a member (from its supervisor)", Query: []P{{Name: "lines", Type: "integer", Description: "1-5000, default 200"}}, Response: []LogLine{}, Handler: a.handleMemberLog},
		{Method: "DELETE", Path: "/api/v1/cluster/members/{id}", Access: admin, Summary: "Remove a member", Response: directory.Member{}, Handler: a.leaderOnly(a.handleRemoveMember)},
		{Method: "POST", Path: "/api/v1/cluster/force-single", Access: admin, Summary: "Make this node go on alone when the other node and the witness are lost", Request: ForceRequest{}, Response: Status{}, Handler: a.handleForceSingle},
		{Method: "POST", Path: "/api/v1/cluster/members/{id}/maintenance", Access: operator, Summary: "Put a node into maintenance, or take it out", Request: MaintenanceRequest{}, Response: directory.Member{}, Handler: a.leaderOnly(a.handleMaintenance)},
		{Method: "GET", Path: "/api/v1/cluster/settings", Access: admin, Summary: "The cluster's settings", Query: []P{stale}, Response: map[string]string{}, Handler: a.read(a.handleGetSettings)},
		{Method: "PATCH", Path: "/api/v1/cluster/settings", Access: admin, Summary: "Set and unset settings", Request: directory.SettingsPayload{}, Response: map[string]string{}, Handler: a.leaderOnly(a.handlePatchSettings)},
		{Method: "GET", Path: "/api/v1/labels", Access: viewer, Summary: "Labels", Query: []P{stale}, Response: map[string]string{}, Handler: a.read(a.handleLabels)},
		{Method: "GET", Path: "/api/v1/labels/{key}", Access: viewer, Summary: "A label", Query: []P{stale}, Response: Label{}, Handler: a.read(a.handleGetLabel)},
		{Method: "PUT", Path: "/api/v1/labels/{key}", Access: operator, Summary: "Set a label (empty: remove it)", Request: struct {
			Value string `json:"value"`
		}{}, Response: Label{}, Handler: a.leaderOnly(a.handlePutLabel)},
		{Method: "GET", Path: "/api/v1/audit", Access: admin, Summary: "The audit log from an index on", Query: []P{{Name: "since", Type: "integer", Description: "raft index after which to start"}, {Name: "limit", Type: "integer", Description: "1-1000, default 100"}, stale}, Response: []directory.AuditEntry{}, Handler: a.read(a.handleAudit)},

		// Volumes and VMs: their definitions (the runtime side is the
		// storage service's and the VM manager's).
		{Method: "GET", Path: "/api/v1/volumes", Access: viewer, Summary: "List volumes", Query: paged, Response: []directory.Volume{}, Handler: a.read(a.handleVolumes)},
		{Method: "GET", Path: "/api/v1/volumes/{name}", Access: viewer, Summary: "Get a volume", Query: []P{stale}, Response: directory.Volume{}, Handler: a.read(a.handleVolume)},
		{Method: "POST", Idempotent: true, Path: "/api/v1/volumes", Access: operator, Summary: "Create a volume (or clone one)", Request: VolumeRequest{}, Response: directory.Volume{}, Status: http.StatusCreated, Handler: a.leaderOnly(a.idempotent(lookupIn(func(n string) (directory.Volume, bool) { return a.Directory().Volume(n) }, "volume"), a.handleCreateVolume))},
		{Method: "PATCH", Path: "/api/v1/volumes/{name}", Access: operator, Summary: "Grow a volume or change its description", Request: VolumeRequest{}, Response: directory.Volume{}, Handler: a.leaderOnly(a.handleUpdateVolume)},
		{Method: "DELETE", Path: "/api/v1/volumes/{name}", Access: operator, Summary: "Delete a volume no VM uses", Handler: a.leaderOnly(a.handleDeleteVolume)},
		{Method: "POST", Path: "/api/v1/volumes/{name}/primary", Access: operator, Summary: "Move a volume's primary role", Request: PrimaryRequest{}, Response: directory.Volume{}, Handler: a.leaderOnly(a.handleVolumePrimary)},
		{Method: "GET", Path: "/api/v1/vms", Access: viewer, Summary: "List VM definitions", Query: paged, Response: []directory.VM{}, Handler: a.read(a.handleVMs)},
		{Method: "GET", Path: "/api/v1/vms/{name}", Access: viewer, Summary: "Get a VM's definition", Query: []P{stale}, Response: directory.VM{}, Handler: a.read(a.handleVM)},
		{Method: "POST", Idempotent: true, Path: "/api/v1/vms", Access: operator, Summary: "Create a VM", Request: VMRequest{}, Response: directory.VM{}, Status: http.StatusCreated, Handler: a.leaderOnly(a.idempotent(lookupIn(func(n string) (directory.VM, bool) { return a.Directory().VM(n) }, "VM"), a.handleCreateVM))},
		{Method: "PUT", Path: "/api/v1/vms/{name}", Access: operator, Summary: "Change a VM (FT and HA too)", Request: VMRequest{}, Response: directory.VM{}, Handler: a.leaderOnly(a.handleUpdateVM)},
		{Method: "DELETE", Path: "/api/v1/vms/{name}", Access: operator, Summary: "Delete a VM (its volumes stay)", Handler: a.leaderOnly(a.handleDeleteVM)},
		{Method: "POST", Path: "/api/v1/vms/{name}/start", Access: operator, Summary: "Start a VM", Request: StartRequest{}, Response: directory.VM{}, Handler: a.leaderOnly(a.handleStartVM)},
		{Method: "POST", Path: "/api/v1/vms/{name}/stop", Access: operator, Summary: "Stop a VM (ACPI, or force)", Request: StopRequest{}, Response: directory.VM{}, Handler: a.leaderOnly(a.handleStopVM)},
		{Method: "POST", Path: "/api/v1/vms/{name}/migrate", Access: operator, Summary: "Live-migrate a VM to another node", Request: MigrateRequest{}, Response: directory.VM{}, Status: http.StatusAccepted, Handler: a.leaderOnly(a.handleMigrateVM)},

		// Provisioning: the network's plan, the machines on it and their
		// install sequences; the installer's own endpoints (authorised by
		// the key it reported, and only while provisioning is on).
		{Method: "GET", Path: "/api/v1/provisioning", Access: admin, Summary: "The provisioning network's plan, and whether it is on", Query: []P{stale}, Response: directory.Provisioning{}, Handler: a.read(a.handleGetProvisioning)},
		{Method: "PUT", Path: "/api/v1/provisioning", Access: admin, Summary: "Set the provisioning network's plan; switch it on or off", Request: directory.Provisioning{}, Response: directory.Provisioning{}, Handler: a.leaderOnly(a.handlePutProvisioning)},
		{Method: "GET", Path: "/api/v1/provisioning/machines", Access: viewer, Summary: "Machines on the provisioning network: hardware, state, install sequence", Query: paged, Response: []MachineView{}, Handler: a.read(a.handleMachines)},
		{Method: "GET", Path: "/api/v1/provisioning/machines/{mac}", Access: viewer, Summary: "A machine and its install sequence", Query: []P{stale}, Response: MachineView{}, Handler: a.read(a.handleMachine)},
		{Method: "POST", Path: "/api/v1/provisioning/machines/{mac}/approve", Access: admin, Summary: "Approve a discovered machine: it is installed and joins as the named node", Request: ApproveRequest{}, Response: MachineView{}, Handler: a.leaderOnly(a.handleApproveMachine)},
		{Method: "POST", Path: "/api/v1/provisioning/machines/{mac}/retry", Access: admin, Summary: "Retry a failed install from its failed step", Response: MachineView{}, Handler: a.leaderOnly(a.handleRetryMachine)},
		{Method: "DELETE", Path: "/api/v1/provisioning/machines/{mac}", Access: admin, Summary: "Forget a machine", Handler: a.leaderOnly(a.handleForgetMachine)},
		{Method: "POST", Path: "/api/v1/provisioning/installer/report", Access: installer, Summary: "An installer reports its machine's hardware (with its key in " + HeaderMachineKey + ")", Request: InstallerReport{}, Response: InstallPlan{}, Handler: a.leaderOnly(a.handleInstallerReport)},
		{Method: "GET", Path: "/api/v1/provisioning/installer/plan", Access: installer, Summary: "An installer asks whether it may go on, and with what", Query: []P{{Name: "mac", Description: "the machine's MAC"}}, Response: InstallPlan{}, Handler: a.leaderOnly(a.handleInstallerPlan)},
		{Method: "POST", Path: "/api/v1/provisioning/installer/step", Access: installer, Summary: "An installer reports a step of its install", Request: InstallerStep{}, Response: InstallPlan{}, Handler: a.leaderOnly(a.handleInstallerStep)},

		// Members only.
		{Method: "POST", Path: "/api/v1/cluster/members/self", Access: member, Summary: "A member updates its own record", Request: directory.MemberUpdatePayload{}, Handler: a.leaderOnly(a.handleMemberSelf)},
		{Method: "GET", Path: "/api/v1/cluster/members/self", Access: member, Summary: "This member's raft state", Response: MemberState{}, Handler: a.handleMemberState},
		{Method: "POST", Path: "/api/v1/cluster/volumes/copy", Access: member, Summary: "A primary records its peer's copy", Request: directory.VolumeCopyPayload{}, Handler: a.leaderOnly(asCallingMember(volumeCopy))},
		{Method: "POST", Path: "/api/v1/cluster/volumes/cloned", Access: member, Summary: "A clone's primary records its data in", Request: directory.VolumeClonedPayload{}, Handler: a.leaderOnly(asCallingMember(volumeCloned))},
		{Method: "POST", Path: "/api/v1/cluster/vms/stopped", Access: member, Summary: "A node records a guest that powered off", Request: VMStopped{}, Handler: a.leaderOnly(asCallingMember(a.vmStoppedBy))},
		{Method: "POST", Path: "/api/v1/cluster/vms/moved", Access: member, Summary: "A node records a finished migration", Request: VMMoved{}, Handler: a.leaderOnly(asCallingMember(a.vmMovedBy))},
		{Method: "POST", Path: "/api/v1/cluster/vms/ft", Access: member, Summary: "A node records a change of a VM's fault tolerance", Request: directory.VMFTPayload{}, Handler: a.leaderOnly(asCallingMember(vmFT))},
		{Method: "POST", Path: "/api/v1/cluster/volumes/primary-here", Access: member, Summary: "A node takes a volume's primary role", Request: PrimaryHere{}, Handler: a.leaderOnly(asCallingMember(a.primaryFor))},
		{Method: "POST", Path: "/api/v1/cluster/machines/pxe", Access: member, Summary: "The provisioning server records a PXE boot it answered or refused", Request: PXEReport{}, Handler: a.leaderOnly(asCallingMember(a.pxeBy))},
		{Method: "POST", Path: "/api/v1/cluster/audit", Access: member, Summary: "A member records a refusal through the leader", Request: auditRequest{}, Handler: a.leaderOnly(a.handleAuditWrite)},

		// This node's services, on the socket only.
		{Method: "GET", Path: "/local/v1/view", Access: local, Summary: "The node's view of the directory", Response: LocalView{}, Handler: a.handleLocalView},
		{Method: "POST", Path: "/local/v1/volumes/copy", Access: local, Request: directory.VolumeCopyPayload{}, Handler: asThisMember(a, "/api/v1/cluster/volumes/copy", volumeCopy)},
		{Method: "POST", Path: "/local/v1/volumes/cloned", Access: local, Request: directory.VolumeClonedPayload{}, Handler: asThisMember(a, "/api/v1/cluster/volumes/cloned", volumeCloned)},
		{Method: "POST", Path: "/local/v1/volumes/primary-here", Access: local, Request: PrimaryHere{}, Handler: asThisMember(a, "/api/v1/cluster/volumes/primary-here", a.primaryFor)},
		{Method: "POST", Path: "/local/v1/vms/stopped", Access: local, Request: VMStopped{}, Handler: asThisMember(a, "/api/v1/cluster/vms/stopped", a.vmStoppedBy)},
		{Method: "POST", Path: "/local/v1/vms/moved", Access: local, Request: VMMoved{}, Handler: asThisMember(a, "/api/v1/cluster/vms/moved", a.vmMovedBy)},
		{Method: "POST", Path: "/local/v1/vms/ft", Access: local, Request: directory.VMFTPayload{}, Handler: asThisMember(a, "/api/v1/cluster/vms/ft", vmFT)},
		{Method: "POST", Path: "/local/v1/machines/pxe", Access: local, Request: PXEReport{}, Handler: asThisMember(a, "/api/v1/cluster/machines/pxe", a.pxeBy)},
		{Method: "GET", Path: "/local/v1/whoami", Access: local, Response: Principal{}, Handler: a.handleLocalWhoami},
	}
}

// guard wraps a route's handler in the check its Access asks for.
func (a *Agent) guard(r apidoc.Route) http.HandlerFunc {
	if role, ok := userRole(r.Access); ok {
		return a.user(role, r.Handler)
	}
	switch r.Access {
	case apidoc.Member:
		return a.member(r.Handler)
	case apidoc.Local:
		return a.local(r.Handler)
	}
	return r.Handler
}
