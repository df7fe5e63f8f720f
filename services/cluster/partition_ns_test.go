package cluster_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
)

// kvInput and kvOutput are one register operation on a label.
type kvInput struct {
	Put   bool
	Key   string
	Value string
}

type kvOutput struct {
	Value   string
	Unknown bool // a write whose answer never came: it may or may not have happened
}

// kvModel is a set of registers, one per key: every read must see the
// last write before it in some order consistent with real time.
var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(kvInput).Key
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(kvInput), output.(kvOutput)
		if in.Put {
			return true, in.Value
		}
		return out.Value == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		if in.Put {
			return fmt.Sprintf("put(%s, %s) unknown=%v", in.Key, in.Value, out.Unknown)
		}
		return fmt.Sprintf("get(%s) -> %q", in.Key, out.Value)
	},
}

// history records operations from many clients.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	acked int
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

// client runs operations against one host until ctx ends.
func (h *history) client(ctx context.Context, t *testing.T, c *clustertest.Cluster, id int, host string) {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	keys := []string{"k1", "k2", "k3"}
	for seq := 0; ctx.Err() == nil; seq++ {
		in := kvInput{Key: keys[rng.IntN(len(keys))], Put: rng.IntN(2) == 0}
		if in.Put {
			in.Value = fmt.Sprintf("c%d-%d", id, seq)
		}
		octx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		call := h.now()
		var out kvOutput
		var code int
		var err error
		if in.Put {
			code, err = c.Do(octx, c.ClientNS, "PUT", host, "/api/v1/labels/"+in.Key, map[string]string{"value": in.Value}, nil)
		} else {
			var l cluster.Label
			code, err = c.Do(octx, c.ClientNS, "GET", host, "/api/v1/labels/"+in.Key, nil, &l)
			out.Value = l.Value
			if code == http.StatusNotFound {
				err = nil // no write yet: the register is empty
			}
		}
		cancel()
		ret := h.now()
		switch {
		case err == nil:
			h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret}, in.Put)
		case in.Put && code != http.StatusBadRequest:
			// Timed out, cut, or a member that forwarded it lost the
			// leader's answer: the write may still commit, at any time
			// after it was sent.
			h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: kvOutput{Unknown: true}, Return: 1 << 62}, false)
		}
		if err != nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (h *history) add(op porcupine.Operation, ackedWrite bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
	if ackedWrite {
		h.acked++
	}
}

// scenario cuts the cluster one way and heals it.
type scenario struct {
	name string
	cut  func(c *clustertest.Cluster)
}

func TestPartitionsStayLinearizable(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Firewall: true})
	c.Form()
	scenarios := []scenario{
		{"A-W link cut", func(c *clustertest.Cluster) { c.Cut(c.A, c.W) }},
		{"B-W link cut", func(c *clustertest.Cluster) { c.Cut(c.B, c.W) }},
		{"A-B cut (interconnect and management)", func(c *clustertest.Cluster) { c.Cut(c.A, c.B) }},
		{"interconnect alone cut", func(c *clustertest.Cluster) { c.InterconnectDown() }},
		{"witness isolated", func(c *clustertest.Cluster) { c.Isolate(c.W) }},
		{"node A isolated", func(c *clustertest.Cluster) { c.Isolate(c.A) }},
		{"node B isolated", func(c *clustertest.Cluster) { c.Isolate(c.B) }},
		{"A cannot send to B (one way)", func(c *clustertest.Cluster) { c.CutOneWay(c.A, c.B) }},
		{"W cannot send to A (one way)", func(c *clustertest.Cluster) { c.CutOneWay(c.W, c.A) }},
		{"leader isolated", func(c *clustertest.Cluster) {
			if l := c.Leader(context.Background()); l != nil {
				c.Isolate(l)
			}
		}},
	}

	h := &history{start: time.Now()}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Clients on both sides: through A, through B, and through the cluster IP.
	for i, host := range []string{c.A.IP, c.B.IP, clustertest.ClusterIP, clustertest.ClusterIP} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.client(ctx, t, c, i, host)
		}()
	}
	for _, sc := range scenarios {
		time.Sleep(2 * time.Second)
		sc.cut(c)
		time.Sleep(4 * time.Second)
		c.Heal()
		c.WaitHealthy(30 * time.Second)
		t.Logf("%s: healed", sc.name)
	}
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()

	res, info := porcupine.CheckOperationsVerbose(kvModel, h.ops, time.Minute)
	t.Logf("%d operations, %d acknowledged writes, linearizability: %v", len(h.ops), h.acked, res)
	if res != porcupine.Ok {
		path := t.TempDir() + "/history.html"
		_ = porcupine.VisualizePath(kvModel, info, path)
		t.Errorf("the history is not linearizable (%v); visualisation in %s", res, path)
	}
	if h.acked < 50 {
		t.Errorf("only %d acknowledged writes: the workload did not run", h.acked)
	}
	holds := c.ClusterIPHolds()
	if bad := clustertest.Overlaps(holds); len(bad) > 0 {
		t.Errorf("two nodes held the cluster IP at once:\n%s", bad)
	}
	t.Logf("the cluster IP changed hands %d times, never held twice", len(holds))
}
