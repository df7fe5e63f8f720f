package directory

import (
	"fmt"
	"slices"
	"time"
)

// Task is a long operation the API accepted (a VM starting, migrating,
// becoming fault tolerant, a node entering maintenance), followed by the
// leader until it is done, has failed or timed out. Tasks live in the
// directory so that a new leader goes on following them, and every
// change of one reaches the consoles as an event.
type Task struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`   // vm.start, vm.stop, vm.migrate, vm.ft, node.maintenance
	Target   string    `json:"target"` // the VM's name or the node's member ID
	User     string    `json:"user"`
	State    string    `json:"state"` // running, done, failed
	Progress float64   `json:"progress_percent"`
	Message  string    `json:"message,omitempty"`
	Want     string    `json:"want,omitempty"` // what done means, for its kind (a node, on or off)
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Deadline time.Time `json:"deadline"`
}

// Task states.
const (
	TaskRunning = "running"
	TaskDone    = "done"
	TaskFailed  = "failed"
)

// maxTasks bounds the tasks kept: the oldest finished go first.
const maxTasks = 500

// TaskPutPayload creates a task, or changes a running one's state,
// progress and message.
type TaskPutPayload struct {
	Task Task `json:"task"`
}

func (d *Directory) applyTaskPut(index uint64, env Envelope) func(TaskPutPayload) (string, error) {
	return func(p TaskPutPayload) (string, error) {
		t := p.Task
		if t.ID == "" || t.Kind == "" {
			return "", fmt.Errorf("a task needs an ID and a kind: %w", ErrInvalid)
		}
		if t.State != TaskRunning && t.State != TaskDone && t.State != TaskFailed {
			return "", fmt.Errorf("task state %q: %w", t.State, ErrInvalid)
		}
		if err := checkText("task message", t.Message, 1024); err != nil {
			return "", err
		}
		old, exists := d.s.Tasks[t.ID]
		switch {
		case exists && old.State != TaskRunning:
			return "", fmt.Errorf("task %s is %s already: %w", t.ID, old.State, ErrConflict)
		case exists:
			// Only its course changes.
			kept := *old
			kept.State, kept.Progress, kept.Message = t.State, t.Progress, t.Message
			t = kept
		default:
			t.Created = env.Time
			d.pruneTasks()
		}
		t.Progress = min(max(t.Progress, 0), 100)
		t.Updated = env.Time
		d.s.Tasks[t.ID] = &t
		return t.ID, nil
	}
}

// pruneTasks makes room for one more task.
func (d *Directory) pruneTasks() {
	if len(d.s.Tasks) < maxTasks {
		return
	}
	var finished []*Task
	for _, t := range d.s.Tasks {
		if t.State != TaskRunning {
			finished = append(finished, t)
		}
	}
	slices.SortFunc(finished, func(a, b *Task) int { return a.Updated.Compare(b.Updated) })
	for _, t := range finished {
		if len(d.s.Tasks) < maxTasks {
			return
		}
		delete(d.s.Tasks, t.ID)
	}
}

// Task returns a task.
func (d *Directory) Task(id string) (Task, bool) {
	return get(d, func(s *state) map[string]*Task { return s.Tasks }, id)
}

// Tasks returns every task, newest first.
func (d *Directory) Tasks() []Task {
	ts := list(d, func(s *state) map[string]*Task { return s.Tasks })
	slices.SortStableFunc(ts, func(a, b Task) int { return b.Created.Compare(a.Created) })
	return ts
}
