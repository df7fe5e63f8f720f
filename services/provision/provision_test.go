package provision

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
)

func TestPlanHere(t *testing.T) {
	plan := &directory.Provisioning{Enabled: true, Node: "node-a", Mode: directory.ProvisionDHCP, Address: "192.168.77.1/24"}
	members := []directory.Member{{ID: "n1", Name: "node-a"}, {ID: "n2", Name: "node-b"}}
	off := *plan
	off.Enabled = false
	for _, tc := range []struct {
		name string
		view cluster.LocalView
		here bool
	}{
		{"named", cluster.LocalView{InCluster: true, Self: "n1", Members: members, Provisioning: plan}, true},
		{"another node", cluster.LocalView{InCluster: true, Self: "n2", Members: members, Provisioning: plan}, false},
		{"off", cluster.LocalView{InCluster: true, Self: "n1", Members: members, Provisioning: &off}, false},
		{"no plan", cluster.LocalView{InCluster: true, Self: "n1", Members: members}, false},
		{"not in a cluster", cluster.LocalView{Self: "n1", Members: members, Provisioning: plan}, false},
	} {
		if _, here := planHere(tc.view); here != tc.here {
			t.Errorf("%s: here=%v", tc.name, here)
		}
	}
	moved := *plan
	moved.AutoApprove = map[string]string{"52:54:00:00:00:01": "x"}
	if !sameNetwork(*plan, moved) {
		t.Error("a changed allowlist restarts the network")
	}
	moved.RangeEnd = "192.168.77.9"
	if sameNetwork(*plan, moved) {
		t.Error("a changed range does not restart the network")
	}
}

// TestBootHandler: the scripts, the files with their manifest, and the
// refusals.
func TestBootHandler(t *testing.T) {
	src := t.TempDir()
	for name, body := range map[string]string{FileKernel: "kernel bytes", FileInitramfs: "initramfs bytes", "version": "v1\n"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := t.TempDir()
	s, err := New(Config{
		Cluster: cluster.NewLocalClient(filepath.Join(data, "none.sock")), Interface: "prov0", DataDir: data, Socket: filepath.Join(data, "p.sock"),
		Loaders: fstest.MapFS{}, Port: 443, Console: []string{"console=ttyS0,115200"}, CACert: filepath.Join(data, "ca.crt"),
		Installer: func(dir string) error {
			for _, n := range []string{FileKernel, FileInitramfs, "version"} {
				b, _ := os.ReadFile(filepath.Join(src, n))
				if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		b, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(b)
	}
	if code, body := get("/boot/ipxe"); code != 404 || !strings.Contains(body, "not_serving") {
		t.Errorf("not serving: %d %s", code, body)
	}
	s.serving = &served{addr: netip.MustParseAddr("192.168.77.1"), caFingerprint: "ab12", diskBoot: map[string]bool{"52:54:00:7a:02:03": true}}
	if code, body := get("/boot/ipxe/52-54-00-7a-02-09"); code != 503 {
		t.Errorf("script before the files are ready: %d %s", code, body)
	}
	if _, err := s.files.prepare(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		code int
		want []string
	}{
		{"/boot/ipxe", 200, []string{"#!ipxe", "chain http://192.168.77.1:443/boot/ipxe/${mac:hexhyp}"}},
		{"/boot/ipxe/52-54-00-7A-02-09", 200, []string{"kernel http://192.168.77.1:443/boot/files/vmlinuz initrd=initramfs.cpio.zst console=ttyS0,115200 panic=10 tandem.mode=install tandem.provision=192.168.77.1:443 tandem.ca=ab12 BOOTIF=01-52-54-00-7a-02-09",
			"initrd http://192.168.77.1:443/boot/files/initramfs.cpio.zst"}},
		{"/boot/ipxe/52-54-00-7a-02-03", 200, []string{"exit"}},
		{"/boot/ipxe/nonsense", 400, []string{"bad_mac"}},
		{"/boot/files/vmlinuz", 200, []string{"kernel bytes"}},
		{"/boot/files/version", 404, []string{"no such boot file"}},
		{"/boot/files/..%2fleases.jsonl", 404, nil},
		{"/boot/manifest.json", 200, []string{`"version":"v1"`, `"name":"initramfs.cpio.zst","size":15`}},
		{"/boot/ca.crt", 503, []string{"no_ca"}},
	} {
		code, body := get(tc.path)
		if code != tc.code {
			t.Errorf("GET %s: %d %s, want %d", tc.path, code, body, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: %q missing in\n%s", tc.path, w, body)
			}
		}
	}
	if code, _ := get("/boot/ipxe/52-54-00-7a-02-09"); code != http.StatusOK {
		t.Error("script")
	}
}
