package vmm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// QEMU's side of fault tolerance (COLO, QEMU 7.2's docs/COLO-FT.txt and
// block-replication.txt): the secondary's wiring at start, and the QMP
// sequences that turn a running VM into COLO's primary, end COLO on the
// primary (the secondary is gone) and promote the secondary (the primary
// is gone). Every channel between the two QEMUs is a Unix socket in the
// VM's run folder, a server on its own QEMU; the manager joins the two
// ends through the front door (ft.go), so COLO needs no port of its own.

// ftSocket is the run-folder socket of one COLO channel.
func (p paths) ftSocket(name string) string { return filepath.Join(p.dir, "ft-"+name+".sock") }

// Channel names, as the primary's manager asks for them.
const (
	chanMigrate = "migrate" // the primary's checkpoints into the secondary's -incoming
	chanNBD     = "nbd"     // the primary's disk writes into the secondary's NBD server
	chanMirror  = "mirror"  // + NIC index: the packets the primary receives, to the secondary
	chanCompare = "compare" // + NIC index: the packets the secondary sends, to the primary's compare
)

// coloSecondary is how a secondary QEMU is wired: its disks are the
// volumes' local copies under COLO's active and hidden overlays (files in
// scratch), its NICs take the primary's packets from red0-N and send
// theirs to red1-N.
type coloSecondary struct {
	p       paths
	scratch string // the overlays' folder
}

func (s *coloSecondary) active(i int) string {
	return filepath.Join(s.scratch, fmt.Sprintf("active%d.qcow2", i))
}
func (s *coloSecondary) hidden(i int) string {
	return filepath.Join(s.scratch, fmt.Sprintf("hidden%d.qcow2", i))
}

// baseNode is the secondary's node of disk i's local copy: what the
// primary's replication writes to, by NBD, under that export name.
func baseNode(i int) string { return fmt.Sprintf("ft-base%d", i) }

// base is the secondary's node of disk i's local copy, a node of its own
// (a backing file defined in place would be opened read-only, and the
// primary's replication writes to it).
func (s *coloSecondary) base(i int, volume, nbdSocket string) map[string]any {
	return map[string]any{
		"driver": "raw", "node-name": baseNode(i),
		"file": map[string]any{"driver": "nbd", "export": volume,
			"server": map[string]any{"type": "unix", "path": nbdSocket}},
	}
}

// disk is the secondary's disk i: quorum (the device's node, as on the
// primary) over the replication filter over active over hidden over the
// local copy of the volume (base).
func (s *coloSecondary) disk(i int) map[string]any {
	return map[string]any{
		"driver": "quorum", "node-name": diskNode(i), "vote-threshold": 1, "read-pattern": "fifo",
		"children": []any{map[string]any{
			"driver": "replication", "node-name": fmt.Sprintf("ft-rep%d", i), "mode": "secondary", "top-id": diskNode(i),
			"file": map[string]any{
				"driver": "qcow2", "node-name": fmt.Sprintf("ft-active%d", i),
				"file": map[string]any{"driver": "file", "filename": s.active(i)},
				"backing": map[string]any{
					"driver": "qcow2", "node-name": fmt.Sprintf("ft-hidden%d", i),
					"file":    map[string]any{"driver": "file", "filename": s.hidden(i)},
					"backing": baseNode(i),
				},
			},
		}},
	}
}

// nicArgs wire the secondary's NIC i: red0-i brings the primary's
// received packets in, red1-i takes the guest's out to the compare, and
// the rewriter keeps TCP sequence numbers the primary's (it stays after
// a takeover: the connections it translates live on). virtio-net's
// packets carry a vnet header: every filter must expect it.
func (s *coloSecondary) nicArgs(i int) []string {
	return []string{
		"-chardev", fmt.Sprintf("socket,id=red0-%d,path=%s,server=on,wait=off", i, qemuOptionValue(s.p.ftSocket(fmt.Sprintf("red0-%d", i)))),
		"-chardev", fmt.Sprintf("socket,id=red1-%d,path=%s,server=on,wait=off", i, qemuOptionValue(s.p.ftSocket(fmt.Sprintf("red1-%d", i)))),
		"-object", fmt.Sprintf("filter-redirector,id=ft-f1-%d,netdev=net%d,queue=tx,indev=red0-%d,vnet_hdr_support=on", i, i, i),
		"-object", fmt.Sprintf("filter-redirector,id=ft-f2-%d,netdev=net%d,queue=rx,outdev=red1-%d,vnet_hdr_support=on", i, i, i),
		"-object", fmt.Sprintf("filter-rewriter,id=ft-rew%d,netdev=net%d,queue=all,vnet_hdr_support=on", i, i),
	}
}

// localSocket is where the secondary's manager joins a channel the
// primary's manager opens.
func (s *coloSecondary) localSocket(channel string) (string, bool) {
	switch {
	case channel == chanMigrate:
		return s.p.incoming(), true
	case channel == chanNBD:
		return s.p.ftSocket("nbd"), true
	case strings.HasPrefix(channel, chanMirror):
		return s.p.ftSocket("red0-" + strings.TrimPrefix(channel, chanMirror)), true
	case strings.HasPrefix(channel, chanCompare):
		return s.p.ftSocket("red1-" + strings.TrimPrefix(channel, chanCompare)), true
	}
	return "", false
}

// makeOverlays creates the active and hidden overlays of every disk,
// empty, as large as the volume.
func (s *coloSecondary) makeOverlays(qemuImg string, sizes []int64) error {
	if err := os.RemoveAll(s.scratch); err != nil {
		return err
	}
	if err := os.MkdirAll(s.scratch, 0o700); err != nil {
		return err
	}
	for i, size := range sizes {
		for _, f := range []string{s.active(i), s.hidden(i)} {
			out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", f, fmt.Sprint(size)).CombinedOutput()
			if err != nil {
				return fmt.Errorf("COLO overlay %s: %v: %s", filepath.Base(f), err, strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
}

// serveReplication opens the secondary's NBD server to the primary's
// disk writes, once its copies are writable here.
func (in *instance) serveReplication(p paths, disks int) error {
	if err := in.qmp("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": p.ftSocket("nbd")}}}, nil); err != nil {
		return err
	}
	for i := 0; i < disks; i++ {
		if err := in.qmp("nbd-server-add", map[string]any{"device": baseNode(i), "writable": true}, nil); err != nil {
			return err
		}
	}
	return nil
}

// primaryReplication is the node of disk i's replication on the
// primary (a former secondary still has its own, ft-rep<i>, in the
// quorum).
func primaryReplication(i int) string { return fmt.Sprintf("ft-out%d", i) }

// joinColoDisks readies a running VM's disks for COLO, the guest paused
// by the caller: each disk's quorum gets the replication child, so its
// writes go to the secondary's copy too.
func (in *instance) joinColoDisks(p paths, disks int) error {
	for i := 0; i < disks; i++ {
		node := primaryReplication(i)
		if err := in.qmp("blockdev-add", map[string]any{"driver": "replication", "node-name": node, "mode": "primary",
			"file": map[string]any{"driver": "nbd", "export": baseNode(i),
				"server": map[string]any{"type": "unix", "path": p.ftSocket(chanNBD + "-out")}}}, nil); err != nil {
			return err
		}
		if err := in.qmp("x-blockdev-change", map[string]any{"parent": diskNode(i), "node": node}, nil); err != nil {
			_ = in.qmp("blockdev-del", map[string]any{"node-name": node}, nil)
			return err
		}
	}
	return nil
}

// joinColoNICs gives each NIC of a primary in COLO the mirror of what
// it receives and the compare of what it sends. They join once COLO
// runs: a compare in place during the first copy of the memory holds
// every answer of the guest until the secondary runs (seconds of stall
// for its clients). The secondary misses the packets of that moment;
// the first difference in the guests' output brings it in step.
func (in *instance) joinColoNICs(p paths, nics int) error {
	objects, err := in.objects()
	if err != nil {
		return err
	}
	for i := 0; i < nics; i++ {
		server := func(id, name string) error {
			return in.qmp("chardev-add", map[string]any{"id": id, "backend": map[string]any{"type": "socket", "data": map[string]any{
				"addr": map[string]any{"type": "unix", "data": map[string]any{"path": p.ftSocket(name)}}, "server": true, "wait": false}}}, nil)
		}
		client := func(id, name string) error {
			return in.qmp("chardev-add", map[string]any{"id": id, "backend": map[string]any{"type": "socket", "data": map[string]any{
				"addr": map[string]any{"type": "unix", "data": map[string]any{"path": p.ftSocket(name)}}, "server": false}}}, nil)
		}
		n := fmt.Sprint(i)
		// A former secondary keeps its rewriter: the new filters go
		// before it, where they see the packets as the guest does.
		filter := func(props map[string]any) error {
			props["netdev"], props["vnet_hdr_support"] = "net"+n, true
			if objects["ft-rew"+n] {
				props["insert"], props["position"] = "before", "id=ft-rew"+n
			}
			return in.qmp("object-add", props, nil)
		}
		steps := []func() error{
			func() error { return server("ft-mirror"+n, chanMirror+n) },
			func() error { return server("ft-compare"+n, chanCompare+n) },
			func() error { return server("ft-pin"+n, "pin"+n) },
			func() error { return client("ft-pin-c"+n, "pin"+n) },
			func() error { return server("ft-pout"+n, "pout"+n) },
			func() error { return client("ft-pout-c"+n, "pout"+n) },
			func() error {
				return filter(map[string]any{"qom-type": "filter-mirror", "id": "ft-m" + n, "queue": "tx", "outdev": "ft-mirror" + n})
			},
			func() error {
				return filter(map[string]any{"qom-type": "filter-redirector", "id": "ft-redin" + n, "queue": "rx", "indev": "ft-pout" + n})
			},
			func() error {
				return filter(map[string]any{"qom-type": "filter-redirector", "id": "ft-redout" + n, "queue": "rx", "outdev": "ft-pin" + n})
			},
			func() error {
				return in.qmp("object-add", map[string]any{"qom-type": "iothread", "id": "ft-io" + n}, nil)
			},
			func() error {
				return in.qmp("object-add", map[string]any{"qom-type": "colo-compare", "id": "ft-cmp" + n, "primary_in": "ft-pin-c" + n,
					"secondary_in": "ft-compare" + n, "outdev": "ft-pout-c" + n, "iothread": "ft-io" + n, "vnet_hdr_support": true}, nil)
			},
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
	}
	return nil
}

// leaveColo ends COLO on the primary (the secondary is gone or the
// pairing was ended): QEMU is told the heartbeat is lost, the
// replication children leave the quorums and the network plumbing goes.
// It goes on after a failed step: whatever it can remove, it removes.
func (in *instance) leaveColo(disks, nics int, inColo bool) error {
	var errs []error
	if inColo {
		errs = append(errs, in.qmp("x-colo-lost-heartbeat", nil, nil))
	}
	for i := 0; i < disks; i++ {
		if err := in.qmp("x-blockdev-change", map[string]any{"parent": diskNode(i), "child": "children.1"}, nil); err != nil {
			if !strings.Contains(err.Error(), "not exist") && !strings.Contains(err.Error(), "doesn't have child") {
				errs = append(errs, err)
			}
			continue
		}
		errs = append(errs, in.qmp("blockdev-del", map[string]any{"node-name": primaryReplication(i)}, nil))
	}
	for i := 0; i < nics; i++ {
		n := fmt.Sprint(i)
		// The compare goes before the redirector it sends through, so
		// the packets it still holds leave rather than being dropped.
		for _, id := range []string{"ft-redout" + n, "ft-cmp" + n, "ft-redin" + n, "ft-m" + n, "ft-io" + n} {
			errs = append(errs, ignoreMissing(in.qmp("object-del", map[string]any{"id": id}, nil)))
		}
		for _, id := range []string{"ft-mirror" + n, "ft-compare" + n, "ft-pin" + n, "ft-pin-c" + n, "ft-pout" + n, "ft-pout-c" + n} {
			errs = append(errs, ignoreMissing(in.qmp("chardev-remove", map[string]any{"id": id}, nil)))
		}
	}
	return errors.Join(errs...)
}

// takeOver promotes a secondary whose primary is gone: its NBD server
// stops, QEMU is told the heartbeat is lost (it commits the overlays
// into the local copies and runs the guest on), and the NICs' redirectors
// go, so the guest's packets leave by its own tap.
func (in *instance) takeOver(nics int) error {
	var errs []error
	errs = append(errs, ignoreMissing(in.qmp("nbd-server-stop", nil, nil)))
	if err := in.qmp("x-colo-lost-heartbeat", nil, nil); err != nil {
		return fmt.Errorf("the secondary did not take over: %w", err)
	}
	for i := 0; i < nics; i++ {
		n := fmt.Sprint(i)
		for _, id := range []string{"ft-f2-" + n, "ft-f1-" + n} {
			errs = append(errs, ignoreMissing(in.qmp("object-del", map[string]any{"id": id}, nil)))
		}
		for _, id := range []string{"red1-" + n, "red0-" + n} {
			errs = append(errs, ignoreMissing(in.qmp("chardev-remove", map[string]any{"id": id}, nil)))
		}
	}
	return errors.Join(errs...)
}

// overlaysCommitted says whether a former secondary's COLO overlays are
// gone: after a takeover QEMU commits them into the local copies in a
// job of its own that query-block-jobs does not show, and a new pairing
// of this VM must wait for it (its replication would write under a
// chain that is being folded). A VM that never was a secondary has no
// qcow2 node at all.
func (in *instance) overlaysCommitted() (bool, error) {
	var nodes []struct {
		Node   string `json:"node-name"`
		Driver string `json:"drv"`
	}
	if err := in.qmp("query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return false, err
	}
	for _, n := range nodes {
		if n.Driver == "qcow2" && strings.HasPrefix(n.Node, "ft-") {
			return false, nil
		}
	}
	return true, nil
}

// objects lists the ids of the user-created objects (filters, iothreads).
func (in *instance) objects() (map[string]bool, error) {
	var props []struct {
		Name string `json:"name"`
	}
	if err := in.qmp("qom-list", map[string]any{"path": "/objects"}, &props); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, p := range props {
		out[p.Name] = true
	}
	return out, nil
}

// ignoreMissing drops the error of removing what is not there.
func ignoreMissing(err error) error {
	if err != nil && (strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "DeviceNotFound")) {
		return nil
	}
	return err
}
