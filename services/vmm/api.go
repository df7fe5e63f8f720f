package vmm

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandemhci/tandem/services/apidoc"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
)

// VMStatus is a VM's state on this node.
type VMStatus struct {
	Name       string    `json:"name"`
	Node       string    `json:"node"`
	State      string    `json:"state"` // QEMU's run state, or stopped
	PID        int       `json:"pid,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	Generation int64     `json:"generation,omitempty"` // of the definition it runs
	Accel      string    `json:"accel,omitempty"`
	Problem    string    `json:"problem,omitempty"`
	// The hardware it runs, and the edits of its definition that apply
	// only when it next starts.
	CPUs      int      `json:"cpus,omitempty"`
	MemoryMiB int      `json:"memory_mib,omitempty"`
	Disks     int      `json:"disks,omitempty"`
	NICs      int      `json:"nics,omitempty"`
	Pending   []string `json:"pending,omitempty"`
	// FT is the VM's fault tolerance, for an FT VM.
	FT *FTStatus `json:"ft,omitempty"`
}

// Handler serves the VM manager's API: the runtime side of the VMs this
// node runs (the definitions are the cluster agent's /api/v1/vms).
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	apidoc.Register(mux, m.routes(), m.cfg.Cluster.Guard)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), frontdoor.UpgradeMigration) {
			if strings.HasPrefix(r.URL.Path, ftPathPrefix) {
				m.serveFT(w, r)
				return
			}
			m.serveMigration(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// APIRoutes describes the VM manager's endpoints, for the API's
// document: the same list Handler serves, without handlers.
func APIRoutes() []apidoc.Route {
	routes := (&Manager{}).routes()
	for i := range routes {
		routes[i].Handler = nil
	}
	return routes
}

// routes is every endpoint of the VM manager. Those about one VM run on
// the node that runs it (onNode forwards), or on the one ?node= names.
func (m *Manager) routes() []apidoc.Route {
	viewer, operator := apidoc.Viewer, apidoc.Operator
	node := []apidoc.Param{{Name: "node", Description: "the node (name or member ID) to ask, if not the VM's"}}
	return []apidoc.Route{
		{Method: "GET", Path: "/api/v1/vmm/vms", Access: viewer, Summary: "The VMs a node runs (this one, or ?node=), as they run", Query: node, Response: []VMStatus{}, Handler: m.onNamedNode(m.handleList)},
		{Method: "GET", Path: "/api/v1/vmm/vms/{name}", Access: viewer, Summary: "A VM as it runs", Query: node, Response: VMStatus{}, Handler: m.onNode(m.handleStatus)},
		{Method: "GET", Path: "/api/v1/vmm/vms/{name}/history", Access: viewer, Summary: "A VM's events on its node", Query: node, Response: []Event{}, Handler: m.onNode(m.handleHistory)},
		{Method: "GET", Path: "/api/v1/vmm/vms/{name}/serial.log", Access: viewer, Summary: "The end of a VM's serial output (text)", Query: node, Handler: m.onNode(m.handleSerialLog), Status: http.StatusOK},
		{Method: "POST", Path: "/api/v1/vmm/vms/{name}/reset", Access: operator, Summary: "Hard-reset a VM", Handler: m.onNode(m.handleReset)},
		{Method: "POST", Path: "/api/v1/vmm/vms/{name}/reboot", Access: operator, Summary: "Reboot a VM (ACPI shutdown, then start with its current definition)", Response: map[string]string{}, Status: http.StatusAccepted, Handler: m.onNode(m.handleReboot)},
		{Method: "GET", Path: "/api/v1/vmm/stats", Access: viewer, Summary: "A node's use of CPU, memory, network and disks, and its VMs', every 2 s for the last 10 minutes", Query: append(node, apidoc.Param{Name: "since", Description: "RFC 3339: only samples after it"}), Response: Stats{}, Handler: m.onNamedNode(m.handleStats)},
		{Method: "GET", Path: "/api/v1/vmm/metrics", Access: viewer, Summary: "A node's newest sample in Prometheus's text format", Query: node, Handler: m.onNamedNode(m.handleMetrics), Status: http.StatusOK},
		{Method: "GET", Path: "/api/v1/vmm/vms/{name}/console/{kind}", Access: operator, Websocket: true, Summary: "A VM's console: serial (raw bytes) or vnc (RFB), as a websocket", Handler: m.onNode(m.handleConsole)},
	}
}

// onNamedNode runs the handler on the node ?node= names (default: this
// one), forwarding the request there.
func (m *Manager) onNamedNode(next http.HandlerFunc) http.HandlerFunc {
	return m.cfg.Dialer.OnNamed(func() (string, []memberconn.Peer) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.view.Self, m.view.Peers()
	}, next)
}

// onNode runs the handler on the node the directory places the VM on,
// or on the one named by ?node= (a name or member ID): a request that
// reached another node is forwarded there, once.
func (m *Manager) onNode(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		m.mu.Lock()
		view := m.view
		m.mu.Unlock()
		vm, ok := findVM(view.VMs, name)
		if !ok {
			frontdoor.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no VM %q", name))
			return
		}
		target := vm.Node
		if asked := r.URL.Query().Get("node"); asked != "" {
			target = ""
			for _, mem := range view.Members {
				if mem.ID == asked || mem.Name == asked {
					target = mem.ID
				}
			}
			if target == "" {
				frontdoor.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no node %q", asked))
				return
			}
		} else if in := m.instance(name); in != nil && !in.isSecondary() {
			target = view.Self // it runs here (or is still being stopped here)
		}
		if target == "" || target == view.Self {
			next(w, r)
			return
		}
		for _, mem := range view.Members {
			if mem.ID == target {
				m.cfg.Dialer.Forward(w, r, mem.ID, mem.Name, mem.Addresses)
				return
			}
		}
		frontdoor.WriteError(w, http.StatusConflict, "no_node", fmt.Sprintf("VM %s is placed on %s, which is not a member", name, vm.Node))
	}
}

func (m *Manager) status(name string) VMStatus {
	m.mu.Lock()
	view := m.view
	problem := m.problems[name]
	m.mu.Unlock()
	self := view.Self
	st := VMStatus{Name: name, Node: self, State: "stopped", Problem: problem}
	if in := m.instance(name); in != nil {
		status, _, _ := in.state()
		run := in.definition()
		st.State, st.PID, st.Started, st.Generation = status, in.pid, in.started, run.Generation
		st.CPUs, st.MemoryMiB, st.Disks, st.NICs = run.CPUs, run.MemoryMiB, len(run.Disks), len(run.NICs)
		if want, ok := findVM(view.VMs, name); ok {
			st.Pending = pendingEdits(run, want)
		}
		st.Accel = m.acc.Get(context.Background()).Name()
	}
	if vm, ok := findVM(view.VMs, name); ok {
		st.FT = m.ftStatus(vm, m.instance(name))
	}
	return st
}

// runningHere is the VM's QEMU on this node, or a 409 answered.
func (m *Manager) runningHere(w http.ResponseWriter, name string) (*instance, bool) {
	in := m.instance(name)
	if in == nil {
		frontdoor.WriteError(w, http.StatusConflict, "not_running", errNotRunning.Error())
	}
	return in, in != nil
}

func (m *Manager) handleList(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	var names []string
	for _, vm := range m.view.VMs {
		if vm.Node == m.view.Self || m.vms[vm.Name] != nil {
			names = append(names, vm.Name)
		}
	}
	m.mu.Unlock()
	out := []VMStatus{}
	for _, n := range names {
		out = append(out, m.status(n))
	}
	frontdoor.WriteJSON(w, http.StatusOK, out)
}

func (m *Manager) handleStatus(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, m.status(r.PathValue("name")))
}

func (m *Manager) handleHistory(w http.ResponseWriter, r *http.Request) {
	frontdoor.WriteJSON(w, http.StatusOK, m.history.events(r.PathValue("name")))
}

func (m *Manager) handleSerialLog(w http.ResponseWriter, r *http.Request) {
	in, ok := m.runningHere(w, r.PathValue("name"))
	if !ok {
		return
	}
	f, err := os.Open(in.p.serialLog())
	if err != nil {
		frontdoor.WriteError(w, http.StatusNotFound, "no_log", err.Error())
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.Copy(w, f)
}

func (m *Manager) handleReset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	in, ok := m.runningHere(w, name)
	if !ok {
		return
	}
	if err := in.raw.SystemReset(); err != nil {
		frontdoor.WriteError(w, http.StatusBadGateway, "qmp", "QEMU refused the reset: "+err.Error())
		return
	}
	m.history.add(name, "reset", "hard reset by "+cluster.Actor(r))
	w.WriteHeader(http.StatusNoContent)
}

// handleReboot shuts the guest down (ACPI, then power-off after the
// shutdown timeout) and starts it again on this node with its current
// definition, which applies pending edits: Proxmox's reboot. The answer
// comes at once; the history tells how it went.
func (m *Manager) handleReboot(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	in, ok := m.runningHere(w, name)
	if !ok {
		return
	}
	in.mu.Lock()
	busy := in.incoming || in.migrating
	in.mu.Unlock()
	if busy {
		frontdoor.WriteError(w, http.StatusConflict, "migrating", fmt.Sprintf("VM %s is migrating: reboot it when it has arrived", name))
		return
	}
	// Marked as stopping, its end is neither a crash nor the user's
	// power-off: the reconcile loop starts it again.
	if !in.beginStop() {
		frontdoor.WriteError(w, http.StatusConflict, "stopping", fmt.Sprintf("VM %s is already shutting down", name))
		return
	}
	m.history.add(name, "reboot", "asked by "+cluster.Actor(r))
	go func() {
		how := in.stop(false, m.cfg.ShutdownTimeout)
		m.history.add(name, "stopped", how+"; starting again")
		m.log.Info("VM rebooting", "vm", name, "how", how)
		m.poke()
	}()
	frontdoor.WriteJSON(w, http.StatusAccepted, map[string]string{"vm": name, "action": "reboot"})
}

var upgrader = websocket.Upgrader{
	ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10,
	Subprotocols: []string{"binary"}, // noVNC asks for it
	// The front door is the origin of every page of the console; a page
	// elsewhere cannot carry the user's credentials here.
	CheckOrigin: func(r *http.Request) bool { return true },
}

// handleConsole bridges a websocket to the VM's serial port ("serial") or
// its VNC server ("vnc"), both Unix sockets only this node can reach.
func (m *Manager) handleConsole(w http.ResponseWriter, r *http.Request) {
	in, ok := m.runningHere(w, r.PathValue("name"))
	if !ok {
		return
	}
	var sock string
	switch r.PathValue("kind") {
	case "serial":
		sock = in.p.serial()
	case "vnc":
		sock = in.p.vnc()
	default:
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", "consoles are serial and vnc")
		return
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		frontdoor.WriteError(w, http.StatusBadGateway, "console", err.Error())
		return
	}
	defer c.Close()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		ws.Close()
	}()
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}
