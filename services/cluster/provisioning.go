package cluster

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// HeaderMachineKey carries an installer's key: it made the key when it
// booted and reported its hash, and only it may report steps and get
// the join token.
const HeaderMachineKey = "X-Tandem-Machine-Key"

// installTokenTTL is how long an approved machine has to install and
// join before its join token expires.
const installTokenTTL = 6 * time.Hour

// MachineView is a machine as the API shows it: never its installer's
// key hash or its join token.
type MachineView = directory.Machine

func machineView(m directory.Machine) MachineView {
	m.KeyHash, m.JoinToken = "", ""
	return m
}

// ApproveRequest approves a discovered machine as a named node.
type ApproveRequest struct {
	Name string `json:"name"`
}

// InstallerReport is what the installer says when it has booted.
type InstallerReport struct {
	MAC       string                      `json:"mac"`
	Address   string                      `json:"address,omitempty"`
	Inventory *directory.MachineInventory `json:"inventory"`
}

// InstallerStep is the installer's word on one step.
type InstallerStep struct {
	MAC    string `json:"mac"`
	Step   string `json:"step"`
	State  string `json:"state"` // running, done, failed
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

// InstallPlan is what the installer polls for: whether it may go on, and
// once approved, what it needs to make the node.
type InstallPlan struct {
	State   string   `json:"state"`
	Name    string   `json:"name,omitempty"`
	Token   string   `json:"token,omitempty"`   // join token, approved machines only
	Peers   []string `json:"peers,omitempty"`   // front door addresses of the cluster's nodes
	Retry   bool     `json:"retry,omitempty"`   // an admin asked for the failed step again
	Message string   `json:"message,omitempty"` // why it waits, or failed
	// Steps are the sequence's steps as the directory has them: the
	// installer resumes at the first not done.
	Steps []directory.Step `json:"steps"`
}

func (a *Agent) handleGetProvisioning(w http.ResponseWriter, r *http.Request) {
	p, ok := a.Directory().Provisioning()
	if !ok {
		p = directory.Provisioning{Mode: directory.ProvisionDHCP}
	}
	frontdoor.WriteJSON(w, http.StatusOK, p)
}

func (a *Agent) handlePutProvisioning(w http.ResponseWriter, r *http.Request) {
	var p directory.Provisioning
	if !decode(w, r, &p) {
		return
	}
	if err := p.Check(); err != nil {
		apiError(w, err)
		return
	}
	if p.Node != "" {
		if m, ok := a.Directory().MemberByName(p.Node); !ok || m.Role != directory.MemberNode {
			apiError(w, fieldError("node", fmt.Sprintf("no node named %q in the cluster", p.Node)))
			return
		}
	}
	if _, err := a.propose(directory.TypeProvisioning, actor(r), clientAddr(r), p); err != nil {
		apiError(w, err)
		return
	}
	a.handleGetProvisioning(w, r)
}

func (a *Agent) handleMachines(w http.ResponseWriter, r *http.Request) {
	ms := a.Directory().Machines()
	views := make([]MachineView, 0, len(ms))
	for _, m := range ms {
		views = append(views, machineView(m))
	}
	writePage(w, r, views)
}

func (a *Agent) machine(w http.ResponseWriter, mac string) (directory.Machine, bool) {
	m, ok := a.Directory().Machine(mac)
	if !ok {
		apiError(w, fmt.Errorf("machine %s: %w", mac, directory.ErrNotFound))
	}
	return m, ok
}

func (a *Agent) handleMachine(w http.ResponseWriter, r *http.Request) {
	if m, ok := a.machine(w, r.PathValue("mac")); ok {
		frontdoor.WriteJSON(w, http.StatusOK, machineView(m))
	}
}

// newInstallToken makes the join token an approved machine's node joins
// with.
func (a *Agent) newInstallToken() (*directory.JoinToken, string, error) {
	_, ca, err := a.live.Current()
	if err != nil || ca == nil {
		return nil, "", ErrNotInCluster
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		return nil, "", err
	}
	return &directory.JoinToken{ID: tok.ID, Key: tok.Key(), Expires: time.Now().Add(installTokenTTL).UTC()}, tok.String(), nil
}

func (a *Agent) handleApproveMachine(w http.ResponseWriter, r *http.Request) {
	var req ApproveRequest
	if !decode(w, r, &req) {
		return
	}
	m, ok := a.machine(w, r.PathValue("mac"))
	if !ok {
		return
	}
	tok, secret, err := a.newInstallToken()
	if err != nil {
		apiError(w, err)
		return
	}
	a.proposeMachine(w, r, actor(r), directory.MachinePayload{Op: directory.MachineOpApprove, MAC: m.MAC, Name: req.Name, Token: tok, TokenSecret: secret})
}

func (a *Agent) handleRetryMachine(w http.ResponseWriter, r *http.Request) {
	if m, ok := a.machine(w, r.PathValue("mac")); ok {
		a.proposeMachine(w, r, actor(r), directory.MachinePayload{Op: directory.MachineOpRetry, MAC: m.MAC})
	}
}

func (a *Agent) handleForgetMachine(w http.ResponseWriter, r *http.Request) {
	m, ok := a.machine(w, r.PathValue("mac"))
	if !ok {
		return
	}
	if _, err := a.propose(directory.TypeMachine, actor(r), clientAddr(r), directory.MachinePayload{Op: directory.MachineOpForget, MAC: m.MAC}); err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// proposeMachine proposes a machine change and answers with the machine.
func (a *Agent) proposeMachine(w http.ResponseWriter, r *http.Request, who string, p directory.MachinePayload) {
	if _, err := a.propose(directory.TypeMachine, who, clientAddr(r), p); err != nil {
		apiError(w, err)
		return
	}
	m, _ := a.Directory().Machine(p.MAC)
	frontdoor.WriteJSON(w, http.StatusOK, machineView(m))
}

// installer checks an installer's request: provisioning is on, it
// carries a key, and mac is a MAC. It returns the MAC in the directory's
// form and the hash of the key.
func (a *Agent) installer(r *http.Request, mac string) (canonical, keyHash string, err error) {
	if p, ok := a.Directory().Provisioning(); !ok || !p.Enabled {
		return "", "", &refusedError{"provisioning is off: an admin switches it on (PUT /api/v1/provisioning)"}
	}
	key := r.Header.Get(HeaderMachineKey)
	if len(key) < 32 || len(key) > 128 {
		return "", "", &refusedError{"no installer key (" + HeaderMachineKey + ", 32 to 128 characters)"}
	}
	if canonical, err = directory.CanonicalMAC(mac); err != nil {
		return "", "", fieldError("mac", err.Error())
	}
	sum := sha256.Sum256([]byte(key))
	return canonical, hex.EncodeToString(sum[:]), nil
}

// handleInstallerReport records an installer's boot: its machine shows
// up as discovered (or goes on with an approved install). A machine on
// the allowlist is approved here, with a join token made for it.
func (a *Agent) handleInstallerReport(w http.ResponseWriter, r *http.Request) {
	var req InstallerReport
	if !decode(w, r, &req) {
		return
	}
	mac, hash, err := a.installer(r, req.MAC)
	if err != nil {
		apiError(w, err)
		return
	}
	p := directory.MachinePayload{Op: directory.MachineOpReport, MAC: mac, KeyHash: hash, Address: req.Address, Inventory: req.Inventory}
	if plan, _ := a.Directory().Provisioning(); plan.AutoApprove[mac] != "" {
		if p.Token, p.TokenSecret, err = a.newInstallToken(); err != nil {
			apiError(w, err)
			return
		}
		p.Name = plan.AutoApprove[mac]
	}
	who := "installer:" + mac
	if p.Name != "" {
		who = "allowlist"
	}
	if _, err := a.propose(directory.TypeMachine, who, clientAddr(r), p); err != nil {
		apiError(w, err)
		return
	}
	a.writePlan(w, mac, hash)
}

// handleInstallerPlan answers an installer's poll.
func (a *Agent) handleInstallerPlan(w http.ResponseWriter, r *http.Request) {
	mac, hash, err := a.installer(r, r.URL.Query().Get("mac"))
	if err != nil {
		apiError(w, err)
		return
	}
	a.writePlan(w, mac, hash)
}

func (a *Agent) writePlan(w http.ResponseWriter, mac, hash string) {
	m, ok := a.Directory().Machine(mac)
	if !ok {
		apiError(w, fmt.Errorf("machine %s: %w (report first)", mac, directory.ErrNotFound))
		return
	}
	if subtle.ConstantTimeCompare([]byte(m.KeyHash), []byte(hash)) != 1 {
		apiError(w, &refusedError{"another installer reported for " + mac + " since: this one stops"})
		return
	}
	plan := InstallPlan{State: m.State, Name: m.Name, Steps: m.Steps, Message: m.Error}
	switch m.State {
	case directory.MachineDiscovered:
		plan.Message = "waiting for an admin to approve this machine"
	case directory.MachineApproved, directory.MachineInstalling:
		plan.Token = m.JoinToken
		for _, mem := range a.Directory().Members() {
			if mem.Role != directory.MemberNode {
				continue
			}
			for _, addr := range mem.Addresses {
				// A link-local address (the interconnect's) means
				// nothing on the new machine's links.
				if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().IsLinkLocalUnicast() {
					continue
				}
				plan.Peers = append(plan.Peers, addr)
			}
		}
	}
	frontdoor.WriteJSON(w, http.StatusOK, plan)
}

func (a *Agent) handleInstallerStep(w http.ResponseWriter, r *http.Request) {
	var req InstallerStep
	if !decode(w, r, &req) {
		return
	}
	mac, hash, err := a.installer(r, req.MAC)
	if err != nil {
		apiError(w, err)
		return
	}
	if _, err := a.propose(directory.TypeMachine, "installer:"+mac, clientAddr(r), directory.MachinePayload{
		Op: directory.MachineOpStep, MAC: mac, KeyHash: hash, Step: req.Step, State: req.State, Output: req.Output, Error: req.Error,
	}); err != nil {
		apiError(w, err)
		return
	}
	a.writePlan(w, mac, hash)
}

// PXEReport is the provisioning server's word on a PXE boot it answered
// or refused.
type PXEReport struct {
	MAC      string `json:"mac"`
	Firmware string `json:"firmware,omitempty"`
	Output   string `json:"output,omitempty"`
	Error    string `json:"error,omitempty"`
}

// pxeBy records a PXE boot the serving node's provisioning server saw.
func (a *Agent) pxeBy(member string, p PXEReport) error {
	if p.Error == "" && p.Output == "" {
		return fmt.Errorf("a PXE report says what was answered or why not: %w", directory.ErrInvalid)
	}
	_, err := a.propose(directory.TypeMachine, "member:"+member, "", directory.MachinePayload{
		Op: directory.MachineOpPXE, MAC: p.MAC, Firmware: p.Firmware, Output: p.Output, Error: p.Error,
	})
	return err
}
