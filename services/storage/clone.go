package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/tandemhci/tandem/services/directory"
)

// A clone (a VM's disk made from a template's) is created empty on both
// nodes, primary where its source is primary; that primary copies the
// source in through the two NBD exports, so the copy is replicated like
// any write, then records the clone done in the directory. A copy cut
// short (a restart, a lost role) starts over: until the directory says
// Cloned, no VM uses the volume.

// startClone starts copying a clone's source in, unless it runs already.
func (c *copyState) startClone(ctx context.Context, dv directory.Volume) {
	c.mu.Lock()
	if c.cloning != "" {
		c.mu.Unlock()
		return
	}
	c.cloning = "starting"
	c.mu.Unlock()
	go func() {
		err := c.clone(ctx, dv)
		c.mu.Lock()
		c.cloning = ""
		c.mu.Unlock()
		if err != nil {
			c.setProblem("clone of " + dv.CloneFrom + ": " + err.Error())
			c.svc.log.Error("clone failed; it starts over", "volume", dv.Name, "source", dv.CloneFrom, "err", err)
		}
	}()
}

func (c *copyState) setCloning(s string) {
	c.mu.Lock()
	c.cloning = s
	c.mu.Unlock()
}

func (c *copyState) clone(ctx context.Context, dv directory.Volume) error {
	s := c.svc
	src := s.copyOf(dv.CloneFrom)
	if src == nil {
		return fmt.Errorf("no copy of %s on this node", dv.CloneFrom)
	}
	// Both exports must be served here: the source is primary here (the
	// cluster placed the clone so), this copy just became primary.
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, okSrc := s.lookupExport(dv.CloneFrom)
		_, okDst := s.lookupExport(dv.Name)
		if okSrc && okDst {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s or %s is not served on this node (is %s primary here?)", dv.CloneFrom, dv.Name, dv.CloneFrom)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	src.mu.Lock()
	srv := src.rv
	src.mu.Unlock()
	// One point in time of the source: its writes wait meanwhile.
	thaw, err := srv.Freeze()
	if err != nil {
		return fmt.Errorf("freeze %s: %w", dv.CloneFrom, err)
	}
	c.setCloning("copying from " + dv.CloneFrom)
	start := time.Now()
	_, err = s.qemuImg("convert", "-n", "-f", "raw", "-O", "raw", s.nbdURL(dv.CloneFrom), s.nbdURL(dv.Name))
	thaw()
	if err != nil {
		return err
	}
	c.setCloning("recording the clone")
	c.mu.Lock()
	rv := c.rv
	c.mu.Unlock()
	_, gen := rv.Role()
	for try := 0; ; try++ {
		err = s.cfg.Cluster.VolumeCloned(ctx, directory.VolumeClonedPayload{Name: dv.Name, ID: dv.ID, Generation: gen})
		if err == nil {
			break
		}
		if try == 10 {
			return fmt.Errorf("record the clone: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	s.log.Info("clone copied", "volume", dv.Name, "source", dv.CloneFrom, "bytes", dv.SizeBytes, "seconds", time.Since(start).Seconds())
	return nil
}
