package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// Long operations answer at once (the directory holds what is wanted)
// and are followed as tasks: the answer's Location header names
// /api/v1/tasks/<id>, whose state, progress and message the leader
// keeps current (watchTasks) until the operation is done, failed or
// timed out. The consoles see each change on the events websocket.

// Task kinds, and how long each may take before it has failed.
var taskTimeouts = map[string]time.Duration{
	"vm.start":         5 * time.Minute,
	"vm.stop":          3 * time.Minute, // the guest's ACPI shutdown, then the power-off
	"vm.migrate":       30 * time.Minute,
	"vm.ft":            30 * time.Minute, // the first copy of memory and disks
	"node.maintenance": 30 * time.Minute,
}

// startTask records a task for what the request just asked, and names
// it in the answer's headers.
func (a *Agent) startTask(w http.ResponseWriter, r *http.Request, kind, target, want, message string) {
	t := directory.Task{
		ID: randomHex(8), Kind: kind, Target: target, User: actor(r), State: directory.TaskRunning,
		Want: want, Message: message, Deadline: time.Now().Add(taskTimeouts[kind]).UTC(),
	}
	if _, err := a.propose(directory.TypeTaskPut, actor(r), clientAddr(r), directory.TaskPutPayload{Task: t}); err != nil {
		// The operation itself is committed: it goes on untracked.
		a.log.Warn("task not recorded", "kind", kind, "target", target, "err", err)
		return
	}
	w.Header().Set("Location", "/api/v1/tasks/"+t.ID)
	w.Header().Set("X-Tandem-Task", t.ID)
}

func (a *Agent) handleTasks(w http.ResponseWriter, r *http.Request) {
	tasks := a.Directory().Tasks()
	if st := r.URL.Query().Get("state"); st != "" {
		kept := tasks[:0:0]
		for _, t := range tasks {
			if t.State == st {
				kept = append(kept, t)
			}
		}
		tasks = kept
	}
	writePage(w, r, tasks)
}

func (a *Agent) handleTask(w http.ResponseWriter, r *http.Request) {
	t, ok := a.Directory().Task(r.PathValue("id"))
	if !ok {
		apiError(w, fmt.Errorf("task %s: %w", r.PathValue("id"), directory.ErrNotFound))
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, t)
}

// runtime is how a VM runs, as its node's VM manager says.
type runtime struct {
	State   string `json:"state"`
	Problem string `json:"problem"`
	FT      *struct {
		Progress float64 `json:"progress_percent"`
	} `json:"ft"`
}

// taskFacts is what a task's course is judged from.
type taskFacts struct {
	now       time.Time
	vm        directory.VM
	vmExists  bool
	runtime   *runtime // nil: the node did not answer
	member    directory.Member
	onNode    int // VMs (and FT secondaries) still running on the node
	returning int // VMs on their way back to the node after its maintenance
}

// judgeTask says where a task stands: its state, progress and message.
func judgeTask(t directory.Task, f taskFacts) (string, float64, string) {
	done := func(msg string) (string, float64, string) { return directory.TaskDone, 100, msg }
	failed := func(msg string) (string, float64, string) { return directory.TaskFailed, t.Progress, msg }
	if t.Kind != "node.maintenance" && !f.vmExists {
		return failed("the VM was deleted")
	}
	vm, rt := f.vm, f.runtime
	var progress float64 // where a running task stands, and what it is at
	var msg string
	switch t.Kind {
	case "vm.start":
		switch {
		case !vm.Running:
			return failed("stopped meanwhile")
		case rt != nil && rt.State == "running":
			return done("running")
		case rt != nil && rt.Problem != "":
			return failed(rt.Problem)
		case rt != nil && rt.State != "" && rt.State != "stopped":
			progress, msg = 50, "QEMU is "+rt.State
		default:
			progress, msg = 10, "starting"
		}
	case "vm.stop":
		switch {
		case vm.Running:
			return failed("started again meanwhile")
		case rt != nil && (rt.State == "stopped" || rt.State == ""):
			return done("stopped")
		default:
			progress, msg = 50, "shutting down"
		}
	case "vm.migrate":
		switch {
		case vm.MigrateTo == "" && vm.Node == t.Want:
			return done("moved")
		case vm.MigrateTo == "":
			return failed("the migration ended without moving the VM; see its history")
		default:
			progress, msg = 50, "copying memory and disks"
		}
	case "vm.ft":
		switch {
		case !vm.FT:
			return failed("fault tolerance was switched off")
		case vm.FTState == "protected":
			return done("protected")
		case !vm.Running:
			return failed("the VM stopped")
		default:
			msg = "syncing"
			if vm.FTReason != "" {
				msg = vm.FTReason
			}
			if rt != nil && rt.FT != nil {
				progress = rt.FT.Progress * 0.95 // the last 5%: the first checkpoint
			}
		}
	case "node.maintenance":
		on := t.Want == "on"
		switch {
		case f.member.ID == "":
			return failed("the node left the cluster")
		case f.member.Maintenance != on:
			return failed("maintenance was switched " + map[bool]string{true: "on", false: "off"}[f.member.Maintenance] + " meanwhile")
		case on && f.onNode == 0:
			return done("no VM runs on the node")
		case !on && f.returning == 0:
			return done("done")
		case on:
			msg = fmt.Sprintf("%d VM(s) to move", f.onNode)
			progress = t.Progress
		default:
			msg = fmt.Sprintf("%d VM(s) to move back", f.returning)
			progress = t.Progress
		}
	default:
		return failed("unknown task kind " + t.Kind)
	}
	if f.now.After(t.Deadline) {
		return failed(fmt.Sprintf("timed out after %v: %s", t.Deadline.Sub(t.Created).Round(time.Second), msg))
	}
	return directory.TaskRunning, progress, msg
}

// watchTasks follows the running tasks while this member leads.
func (a *Agent) watchTasks(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for _, t := range a.Directory().Tasks() {
			if t.State != directory.TaskRunning {
				continue
			}
			state, progress, msg := judgeTask(t, a.taskFacts(ctx, t))
			if state == t.State && msg == t.Message && progress-t.Progress < 5 {
				continue
			}
			t.State, t.Progress, t.Message = state, progress, msg
			if _, err := a.propose(directory.TypeTaskPut, "leader", "", directory.TaskPutPayload{Task: t}); err != nil && ctx.Err() == nil {
				a.log.Warn("task not updated", "task", t.ID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// taskFacts gathers what judging a task needs: the directory's records
// and, for a VM, what its node's VM manager says.
func (a *Agent) taskFacts(ctx context.Context, t directory.Task) taskFacts {
	d := a.Directory()
	f := taskFacts{now: time.Now()}
	if t.Kind == "node.maintenance" {
		f.member, _ = d.Member(t.Target)
		for _, vm := range d.VMs() {
			if vm.Running && (vm.Node == t.Target || vm.FTSecondary == t.Target) {
				f.onNode++
			}
			if vm.MigrateTo == t.Target {
				f.returning++
			}
		}
		return f
	}
	f.vm, f.vmExists = d.VM(t.Target)
	if !f.vmExists || f.vm.Node == "" || (t.Kind != "vm.start" && t.Kind != "vm.stop" && t.Kind != "vm.ft") {
		return f
	}
	m, ok := d.Member(f.vm.Node)
	if !ok {
		return f
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var rt runtime
	if err := a.memberCall(cctx, m, "GET", "/api/v1/vmm/vms/"+url.PathEscape(t.Target)+"?node="+url.QueryEscape(m.ID), nil, &rt); err == nil {
		f.runtime = &rt
	}
	return f
}
