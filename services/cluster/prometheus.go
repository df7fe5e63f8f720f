package cluster

import (
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/metrics"
)

// handleMetrics answers this member's raft state and the directory's
// records (members, VMs, volumes) in Prometheus's text format: one part
// of a node's /metrics.
func (a *Agent) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var t metrics.Text
	st := a.LocalStatus()
	self := st.Member.Name
	t.Family("tandem_raft_leader", "gauge", "1 when this member leads the cluster.")
	t.Value("tandem_raft_leader", metrics.Bool(st.State == raft.Leader.String()), "member", self)
	t.Family("tandem_raft_term", "counter", "The raft term this member is in.")
	t.Value("tandem_raft_term", float64(st.Term), "member", self)
	t.Family("tandem_raft_commit_index", "counter", "The last raft index this member knows committed.")
	t.Value("tandem_raft_commit_index", float64(st.CommitIndex), "member", self)
	t.Family("tandem_raft_applied_index", "counter", "The last raft index this member applied.")
	t.Value("tandem_raft_applied_index", float64(st.AppliedIndex), "member", self)
	if rf := a.r(); rf != nil && rf.State() != raft.Leader {
		if lc := rf.LastContact(); !lc.IsZero() {
			t.Family("tandem_raft_last_contact_seconds", "gauge", "Since this follower last heard the leader.")
			t.Value("tandem_raft_last_contact_seconds", time.Since(lc).Seconds(), "member", self)
		}
	}
	d := a.Directory()
	t.Family("tandem_cluster_member", "gauge", "The cluster's members (1 each), with maintenance as a label.")
	for _, m := range d.Members() {
		maint := "false"
		if m.Maintenance {
			maint = "true"
		}
		t.Value("tandem_cluster_member", 1, "member", m.Name, "role", m.Role, "maintenance", maint)
	}
	vms := d.VMs()
	t.Family("tandem_vm_running_wanted", "gauge", "1 when a VM is meant to run.")
	for _, vm := range vms {
		t.Value("tandem_vm_running_wanted", metrics.Bool(vm.Running), "vm", vm.Name, "node", a.memberName(vm.Node))
	}
	t.Family("tandem_vm_ft_protected", "gauge", "1 when a fault-tolerant VM is protected (its secondary in step).")
	for _, vm := range vms {
		if vm.FT || vm.FTState != "" {
			t.Value("tandem_vm_ft_protected", metrics.Bool(vm.FTState == "protected"), "vm", vm.Name)
		}
	}
	t.Family("tandem_volume_size_bytes", "gauge", "A volume's size.")
	vols := d.Volumes()
	for _, v := range vols {
		t.Value("tandem_volume_size_bytes", float64(v.SizeBytes), "volume", v.Name, "primary", a.memberName(v.Primary))
	}
	t.Family("tandem_volume_copy_outdated", "gauge", "1 when a node's copy of a volume is not up to date.")
	for _, v := range vols {
		for node, c := range v.Copies {
			t.Value("tandem_volume_copy_outdated", metrics.Bool(c != directory.CopyUpToDate), "volume", v.Name, "node", a.memberName(node))
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, t.String())
}
