package cluster

import (
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/directory"
)

func TestJudgeTask(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	task := func(kind, want string) directory.Task {
		return directory.Task{ID: "t1", Kind: kind, Target: "web", Want: want, State: directory.TaskRunning, Created: t0, Deadline: t0.Add(time.Minute)}
	}
	rt := func(state, problem string) *runtime { return &runtime{State: state, Problem: problem} }
	vm := directory.VM{Name: "web", Node: "n-a", Running: true}
	stopped := vm
	stopped.Running = false
	ft := vm
	ft.FT, ft.FTState = true, "syncing"
	protected := ft
	protected.FTState = "protected"
	moving := vm
	moving.MigrateTo = "n-b"
	moved := vm
	moved.Node = "n-b"
	tests := []struct {
		name  string
		task  directory.Task
		facts taskFacts
		state string
		msg   string
	}{
		{"start: QEMU not up yet", task("vm.start", "n-a"), taskFacts{now: t0, vm: vm, vmExists: true}, directory.TaskRunning, "starting"},
		{"start: running", task("vm.start", "n-a"), taskFacts{now: t0, vm: vm, vmExists: true, runtime: rt("running", "")}, directory.TaskDone, "running"},
		{"start: QEMU refused", task("vm.start", "n-a"), taskFacts{now: t0, vm: vm, vmExists: true, runtime: rt("stopped", "no kernel x")}, directory.TaskFailed, "no kernel x"},
		{"start: stopped meanwhile", task("vm.start", "n-a"), taskFacts{now: t0, vm: stopped, vmExists: true}, directory.TaskFailed, "stopped meanwhile"},
		{"start: too long", task("vm.start", "n-a"), taskFacts{now: t0.Add(2 * time.Minute), vm: vm, vmExists: true, runtime: rt("paused", "")}, directory.TaskFailed, "timed out after 1m0s: QEMU is paused"},
		{"stop: shutting down", task("vm.stop", ""), taskFacts{now: t0, vm: stopped, vmExists: true, runtime: rt("running", "")}, directory.TaskRunning, "shutting down"},
		{"stop: off", task("vm.stop", ""), taskFacts{now: t0, vm: stopped, vmExists: true, runtime: rt("stopped", "")}, directory.TaskDone, "stopped"},
		{"stop: deleted", task("vm.stop", ""), taskFacts{now: t0}, directory.TaskFailed, "the VM was deleted"},
		{"migrate: copying", task("vm.migrate", "n-b"), taskFacts{now: t0, vm: moving, vmExists: true}, directory.TaskRunning, "copying memory and disks"},
		{"migrate: moved", task("vm.migrate", "n-b"), taskFacts{now: t0, vm: moved, vmExists: true}, directory.TaskDone, "moved"},
		{"migrate: given up", task("vm.migrate", "n-b"), taskFacts{now: t0, vm: vm, vmExists: true}, directory.TaskFailed, "the migration ended without moving the VM; see its history"},
		{"ft: syncing", task("vm.ft", ""), taskFacts{now: t0, vm: ft, vmExists: true}, directory.TaskRunning, "syncing"},
		{"ft: protected", task("vm.ft", ""), taskFacts{now: t0, vm: protected, vmExists: true}, directory.TaskDone, "protected"},
		{"ft: off again", task("vm.ft", ""), taskFacts{now: t0, vm: vm, vmExists: true}, directory.TaskFailed, "fault tolerance was switched off"},
		{"maintenance: moving", task("node.maintenance", "on"), taskFacts{now: t0, member: directory.Member{ID: "n-a", Maintenance: true}, onNode: 2}, directory.TaskRunning, "2 VM(s) to move"},
		{"maintenance: empty", task("node.maintenance", "on"), taskFacts{now: t0, member: directory.Member{ID: "n-a", Maintenance: true}}, directory.TaskDone, "no VM runs on the node"},
		{"maintenance: left meanwhile", task("node.maintenance", "on"), taskFacts{now: t0, member: directory.Member{ID: "n-a"}, onNode: 1}, directory.TaskFailed, "maintenance was switched off meanwhile"},
		{"maintenance off: returning", task("node.maintenance", "off"), taskFacts{now: t0, member: directory.Member{ID: "n-a"}, returning: 1}, directory.TaskRunning, "1 VM(s) to move back"},
	}
	for _, tt := range tests {
		state, _, msg := judgeTask(tt.task, tt.facts)
		if state != tt.state || msg != tt.msg {
			t.Errorf("%s: %s %q, want %s %q", tt.name, state, msg, tt.state, tt.msg)
		}
	}
	// FT's progress is the VM manager's, short of the first checkpoint.
	f := taskFacts{now: t0, vm: ft, vmExists: true, runtime: &runtime{State: "running"}}
	f.runtime.FT = &struct {
		Progress float64 `json:"progress_percent"`
	}{Progress: 40}
	if _, p, _ := judgeTask(task("vm.ft", ""), f); p != 38 {
		t.Errorf("ft progress %v, want 38", p)
	}
}
