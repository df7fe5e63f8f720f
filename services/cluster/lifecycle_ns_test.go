package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
)

// writer keeps writing labels through the cluster IP and remembers the
// last acknowledged value of each, to check none is lost. A write whose
// answer never came may still have been applied after it, so the values
// tried after the last acknowledged one are accepted too.
type writer struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	last       map[string]string
	laterTried map[string][]string
}

func (w *writer) run(ctx context.Context, c *clustertest.Cluster) {
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("w%d", i%5)
		val := fmt.Sprintf("v%d", i)
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.Do(octx, c.ClientNS, "PUT", clustertest.ClusterIP, "/api/v1/labels/"+key, map[string]string{"value": val}, nil)
		cancel()
		w.mu.Lock()
		if err != nil {
			w.laterTried[key] = append(w.laterTried[key], val)
		} else {
			w.last[key] = val
			w.laterTried[key] = nil
		}
		w.mu.Unlock()
		if err != nil {
			w.failed.Add(1)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		w.ok.Add(1)
	}
}

// check reads every key back: each must hold its last acknowledged value.
func (w *writer) check(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, want := range w.last {
		var l cluster.Label
		_, err := c.Do(context.Background(), c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/labels/"+k, nil, &l)
		if err != nil || (l.Value != want && !slices.Contains(w.laterTried[k], l.Value)) {
			t.Errorf("label %s = %q (%v): the last acknowledged write was %q, unanswered ones after it %v", k, l.Value, err, want, w.laterTried[k])
		}
	}
}

func TestLifecycle(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Firewall: true})
	c.Form()
	ctx := context.Background()

	t.Run("RollingRestartUnderLoad", func(t *testing.T) {
		w := &writer{last: map[string]string{}, laterTried: map[string][]string{}}
		lctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { w.run(lctx, c); close(done) }()
		for _, m := range c.Members() {
			time.Sleep(time.Second)
			m.Kill()
			m.Start()
			c.WaitHealthy(30 * time.Second)
		}
		time.Sleep(time.Second)
		stop()
		<-done
		t.Logf("rolling restart of all three: %d writes acknowledged, %d failed (while a leader was being replaced)", w.ok.Load(), w.failed.Load())
		if w.ok.Load() < 100 {
			t.Errorf("only %d writes went through", w.ok.Load())
		}
		w.check(t, c)
	})

	t.Run("WitnessLossAndReturn", func(t *testing.T) {
		c.W.PowerOff()
		// Two nodes still make a quorum of three: writes go on, the
		// cluster says it is degraded.
		var h cluster.Health
		waitFor(t, 15*time.Second, "the witness reported unreachable", func() bool {
			var err error
			h, err = c.Health(ctx)
			return err == nil && strings.Contains(strings.Join(h.Degraded, ";"), "witness witness")
		}, func() string { return fmt.Sprintf("%+v", h) })
		if _, err := c.Do(ctx, c.ClientNS, "PUT", clustertest.ClusterIP, "/api/v1/labels/nowitness", map[string]string{"value": "1"}, nil); err != nil {
			t.Errorf("write without the witness: %v", err)
		}
		c.W.PowerOn()
		c.WaitHealthy(30 * time.Second)
	})

	t.Run("LeaderPowerLoss", func(t *testing.T) {
		leader := c.Leader(ctx)
		cut := time.Now()
		leader.PowerOff()
		waitFor(t, 15*time.Second, "the cluster IP answering after a power loss", func() bool {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			var s cluster.Status
			_, err := c.Do(cctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/cluster/status", nil, &s)
			return err == nil && s.State == "Leader" && s.Member.Name != leader.Name
		}, func() string { return "" })
		t.Logf("%s lost power: the cluster IP answered again after %v", leader.Name, time.Since(cut).Round(time.Millisecond))
		if _, err := c.Do(ctx, c.ClientNS, "PUT", clustertest.ClusterIP, "/api/v1/labels/afterpowerloss", map[string]string{"value": "1"}, nil); err != nil {
			t.Errorf("write after the power loss: %v", err)
		}
		leader.PowerOn()
		c.WaitHealthy(30 * time.Second)
	})

	t.Run("WipedNodeRejoins", func(t *testing.T) {
		var before cluster.Status
		if _, err := c.DoRetry(ctx, c.ClientNS, "GET", c.B.IP, "/api/v1/cluster/status", nil, &before); err != nil {
			t.Fatal(err)
		}
		var tok struct{ Token string }
		if _, err := c.Do(ctx, c.ClientNS, "POST", clustertest.ClusterIP, "/api/v1/cluster/tokens", nil, &tok); err != nil {
			t.Fatal(err)
		}
		c.B.Wipe()
		c.B.Start()
		c.WaitLeader(20 * time.Second)
		// The old node-b is unreachable (its disk is gone): the new one
		// takes its name and its place.
		waitFor(t, 30*time.Second, "the wiped node rejoining", func() bool {
			_, err := c.Do(ctx, c.ClientNS, "POST", c.B.IP, "/api/v1/cluster/join", cluster.JoinRequest{SetupCode: c.B.SetupCode(), Token: tok.Token}, nil)
			return err == nil
		}, func() string { return quietLog(c.B.Log()) })
		h := c.WaitHealthy(30 * time.Second)
		var after cluster.Status
		if _, err := c.DoRetry(ctx, c.ClientNS, "GET", c.B.IP, "/api/v1/cluster/status", nil, &after); err != nil {
			t.Fatal(err)
		}
		if after.Member.MemberID == before.Member.MemberID {
			t.Error("the wiped node kept its member ID")
		}
		for _, m := range h.Members {
			if m.ID == before.Member.MemberID {
				t.Errorf("the old node-b (%s) is still a member", m.ID)
			}
		}
	})

	t.Run("ForcedSingleNodeAndUndo", func(t *testing.T) {
		survivor, peer := c.A, c.B
		var start cluster.Status
		if _, err := c.DoRetry(ctx, c.ClientNS, "GET", survivor.IP, "/api/v1/cluster/status", nil, &start); err != nil {
			t.Fatal(err)
		}
		peer.PowerOff()
		c.W.PowerOff()
		// Alone, the survivor cannot commit.
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.Do(octx, c.ClientNS, "PUT", survivor.IP, "/api/v1/labels/alone", map[string]string{"value": "no"}, nil)
		cancel()
		if err == nil {
			t.Fatal("a lone node committed a write")
		}
		// Forcing needs the exact confirmation.
		if code, _ := c.Do(ctx, c.ClientNS, "POST", survivor.IP, "/api/v1/cluster/force-single", cluster.ForceRequest{Confirm: "yes"}, nil); code != 400 {
			t.Errorf("force without the confirmation: %d", code)
		}
		var st cluster.Status
		if _, err := c.Do(ctx, c.ClientNS, "POST", survivor.IP, "/api/v1/cluster/force-single",
			cluster.ForceRequest{Confirm: cluster.ForceConfirmation, Reason: "node-b and the witness lost in a power cut"}, &st); err != nil {
			t.Fatalf("force: %v\n%s", err, quietLog(survivor.Log()))
		}
		if !st.Forced.On || st.State != "Leader" {
			t.Errorf("after forcing: %+v", st)
		}
		if _, err := c.Do(ctx, c.ClientNS, "PUT", survivor.IP, "/api/v1/labels/alone", map[string]string{"value": "yes"}, nil); err != nil {
			t.Errorf("write in forced mode: %v", err)
		}
		// The others return: they are re-added, the mode is lifted, and
		// nothing written alone is lost.
		c.W.PowerOn()
		peer.PowerOn()
		h := c.WaitHealthy(60 * time.Second)
		if h.Forced {
			t.Error("forced mode not lifted")
		}
		var l cluster.Label
		if _, err := c.Do(ctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/labels/alone", nil, &l); err != nil || l.Value != "yes" {
			t.Errorf("the forced-mode write: %+v %v", l, err)
		}
		var audit []directory.AuditEntry
		if _, err := c.Do(ctx, c.ClientNS, "GET", clustertest.ClusterIP, fmt.Sprintf("/api/v1/audit?since=%d&limit=1000", start.AppliedIndex), nil, &audit); err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range audit {
			actions = append(actions, e.Action)
		}
		all := strings.Join(actions, " ")
		for _, want := range []string{"cluster.force-single", "cluster.force-single.lifted"} {
			if !strings.Contains(all, want+" ") && !strings.HasSuffix(all, want) {
				t.Errorf("audit log lacks %s: %s", want, all)
			}
		}
	})
}
