package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/services/directory"
)

// The board-level fence: the board file's command, which powers a node
// off through its BMC. The leader runs it for a node it has not reached
// for fenceAfter (the node's own bound for stopping its VMs); when it
// exits 0 the node is off, and its HA VMs restart at once rather than
// after its watchdog's timeout. A command that fails changes nothing:
// the node is lost only after its full fence wait, as without one.

// Settings the fence command reads.
const (
	settingFenceBMC      = "fence.bmc." // + node name: its BMC's address
	settingFenceUser     = "fence.user"
	settingFencePassword = "fence.password"
)

// BoardFence is the board file's fence (board.Fence).
type BoardFence struct {
	Command []string
	Timeout time.Duration
}

// fenceRun is one run of the fence command for a node.
type fenceRun struct {
	started time.Time
	done    bool
	off     bool // the command confirmed the node off
	result  string
}

// boardFences tracks the runs, one per node at a time.
type boardFences struct {
	mu   sync.Mutex
	runs map[string]*fenceRun // by member ID
}

func newBoardFences() *boardFences { return &boardFences{runs: map[string]*fenceRun{}} }

// confirmedOff reports whether the board's fence has powered m off since
// last contact; it starts the command when none ran since.
func (a *Agent) confirmedOff(m directory.Member, lastContact time.Time) bool {
	f := a.cfg.BoardFence
	if f == nil || len(f.Command) == 0 {
		return false
	}
	bf := a.boardFences
	bf.mu.Lock()
	defer bf.mu.Unlock()
	run := bf.runs[m.ID]
	if run != nil && run.started.After(lastContact) {
		return run.done && run.off
	}
	if run != nil && !run.done {
		return false // one at a time
	}
	run = &fenceRun{started: time.Now()}
	bf.runs[m.ID] = run
	go a.runFence(m, run)
	return false
}

func (a *Agent) runFence(m directory.Member, run *fenceRun) {
	f := a.cfg.BoardFence
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	settings := a.Directory().Settings()
	bmc := settings[settingFenceBMC+m.Name]
	argv := make([]string, len(f.Command))
	fill := strings.NewReplacer("{node}", m.Name, "{bmc}", bmc)
	var err error
	for i, arg := range f.Command {
		if strings.Contains(arg, "{bmc}") && bmc == "" {
			err = fmt.Errorf("the fence command needs node %s's BMC address: set %s%s", m.Name, settingFenceBMC, m.Name)
		}
		argv[i] = fill.Replace(arg)
	}
	var out bytes.Buffer
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "TANDEM_FENCE_NODE="+m.Name, "TANDEM_FENCE_BMC="+bmc,
			"TANDEM_FENCE_USER="+settings[settingFenceUser], "TANDEM_FENCE_PASSWORD="+settings[settingFencePassword])
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		cancel()
	}
	took := time.Since(run.started)
	result := fmt.Sprintf("%s confirmed off by the board's fence in %.1fs", m.Name, took.Seconds())
	if err != nil {
		result = fmt.Sprintf("the board's fence did not power %s off (%v; %s): its HA VMs wait for its fence bound", m.Name, err, strings.TrimSpace(lastLine(out.String())))
		a.log.Error("board fence failed", "node", m.Name, "err", err, "output", out.String())
	} else {
		a.log.Warn("board fence: node powered off", "node", m.Name, "seconds", took.Seconds())
	}
	a.boardFences.mu.Lock()
	run.done, run.off, run.result = true, err == nil, result
	a.boardFences.mu.Unlock()
	res := "ok"
	if err != nil {
		res = "failed"
	}
	_, _ = a.propose(directory.TypeAudit, "ha", "", directory.AuditPayload{Action: "ha.fence", Target: m.Name, Result: res, Detail: result})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
