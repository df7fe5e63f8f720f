package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
)

func TestFormWriteReadFailover(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Firewall: true})
	c.Form()
	ctx := context.Background()

	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Members) != 3 {
		t.Fatalf("members %+v", h.Members)
	}
	for _, m := range h.Members {
		if m.Suffrage != "Voter" || !m.Reachable {
			t.Errorf("member %+v", m)
		}
	}

	// Writes through the cluster IP and through either node; reads are
	// consistent wherever they are asked.
	for i, host := range []string{clustertest.ClusterIP, c.A.IP, c.B.IP} {
		var l cluster.Label
		val := "v" + string(rune('0'+i))
		if _, err := c.Do(ctx, c.ClientNS, "PUT", host, "/api/v1/labels/site", map[string]string{"value": val}, &l); err != nil {
			t.Fatalf("write via %s: %v", host, err)
		}
		for _, reader := range []string{c.A.IP, c.B.IP, c.W.IP} {
			var got cluster.Label
			if _, err := c.Do(ctx, c.ClientNS, "GET", reader, "/api/v1/labels/site", nil, &got); err != nil || got.Value != val {
				t.Errorf("read via %s after writing %s via %s: %+v %v", reader, val, host, got, err)
			}
		}
	}

	// The leader's agent dies; the other node takes over, cluster IP too.
	leader := c.Leader(ctx)
	if leader == nil || leader.Role != "node" {
		t.Fatalf("leader %v", leader)
	}
	killed := time.Now()
	leader.KillAgent()
	var newLeader *clustertest.Member
	// The witness may win the election first; it hands over to a node.
	waitFor(t, 10*time.Second, "another node leading", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		newLeader = c.Leader(cctx)
		return newLeader != nil && newLeader != leader && newLeader.Role == "node"
	}, func() string {
		return "witness:\n" + quietLog(c.W.Log()) + "\nsurviving node:\n" + quietLog(c.A.Log()+c.B.Log())
	})
	elected := time.Since(killed)
	waitFor(t, 10*time.Second, "the cluster IP answering from the new leader", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var s cluster.Status
		_, err := c.Do(cctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/cluster/status", nil, &s)
		return err == nil && s.Member.Name == newLeader.Name && s.State == "Leader"
	}, func() string { return "new leader's log:\n" + quietLog(newLeader.Log()) })
	t.Logf("leader %s killed: %s elected after %v, cluster IP answering after %v", leader.Name, newLeader.Name, elected.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	// Nothing removed the address from the dead agent's node: its
	// lifetime did, within a couple of seconds.
	waitFor(t, 4*time.Second, "the killed leader's cluster IP to expire", func() bool {
		out, _ := leader.NS.Command("ip", "-4", "addr", "show", "dev", leader.LAN).Output()
		return !strings.Contains(string(out), clustertest.ClusterIP+"/")
	}, func() string { return "" })
	t.Logf("the killed leader's cluster IP expired %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	var got cluster.Label
	if _, err := c.Do(ctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/labels/site", nil, &got); err != nil || got.Value != "v2" {
		t.Errorf("after failover: %+v %v", got, err)
	}
	if _, err := c.Do(ctx, c.ClientNS, "PUT", clustertest.ClusterIP, "/api/v1/labels/after", map[string]string{"value": "x"}, nil); err != nil {
		t.Errorf("write after failover: %v", err)
	}
	// The old leader's agent returns as a follower.
	leader.Kill()
	leader.Start()
	c.WaitHealthy(30 * time.Second)
	if strings.Contains(c.A.Log()+c.B.Log(), "panic") {
		t.Error("a process panicked")
	}
}

// waitFor is nstest.WaitFor with more to say on failure.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, explain func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, explain())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func quietLog(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "component=raft") || strings.Contains(l, "level=ERROR") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 40 {
		keep = keep[len(keep)-40:]
	}
	return strings.Join(keep, "\n")
}
