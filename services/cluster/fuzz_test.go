package cluster

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/memberconn"
	"github.com/tandemhci/tandem/services/pki"
)

func TestParseAddress(t *testing.T) {
	id, addrs, err := ParseAddress("n-1a2b@[fe80::1%ic0]:443,10.0.0.11:443")
	if err != nil || id != "n-1a2b" || len(addrs) != 2 || addrs[0] != "[fe80::1%ic0]:443" {
		t.Errorf("ParseAddress = %q %q %v", id, addrs, err)
	}
	for _, bad := range []string{"", "n-1", "@10.0.0.1:443", "N-1@10.0.0.1:443", "n-1@10.0.0.1", "n-1@10.0.0.1:443,", "n-1@"} {
		if _, _, err := ParseAddress(raft.ServerAddress(bad)); err == nil {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
	if got := FormatAddress("n-1", []string{"a:1", "b:2"}); got != "n-1@a:1,b:2" {
		t.Errorf("FormatAddress = %q", got)
	}
}

func FuzzParseAddress(f *testing.F) {
	f.Add("n-1a2b@[fe80::1%ic0]:443,10.0.0.11:443")
	f.Add("w-1@10.0.0.13:443")
	f.Fuzz(func(t *testing.T, s string) {
		id, addrs, err := ParseAddress(raft.ServerAddress(s))
		if err != nil {
			return
		}
		// What parses formats back to the same member and addresses.
		id2, addrs2, err := ParseAddress(FormatAddress(id, addrs))
		if err != nil || id2 != id || strings.Join(addrs2, ",") != strings.Join(addrs, ",") {
			t.Fatalf("round trip of %q: %q %q %v", s, id2, addrs2, err)
		}
	})
}

func FuzzIdentityFromHeader(f *testing.F) {
	f.Add("node/n-1")
	f.Add("witness/w-1")
	f.Add("root/n-1")
	f.Fuzz(func(t *testing.T, h string) {
		id, err := memberconn.IdentityFromHeader(h)
		if err != nil {
			return
		}
		if id.String() != h || pki.CheckID(id.ID) != nil {
			t.Fatalf("%q parsed as %v", h, id)
		}
	})
}

// FuzzRequestBodies feeds every body the cluster API and join path decode.
func FuzzRequestBodies(f *testing.F) {
	f.Add([]byte(`{"token_id":"abcdefgh","nonce":"00","timestamp":1,"member_id":"n-1","role":"node","name":"a","csr":"x","proof":"00","addresses":["a:1"]}`))
	f.Add([]byte(`{"setup_code":"1234-5678","admin_name":"admin","admin_password":"12345678","cluster_ip":"10.0.0.1/24"}`))
	f.Add([]byte(`{"set":{"cluster.ip":"10.0.0.1/24"},"unset":["ntp.servers"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&JoinClaimRequest{}, &BootstrapRequest{}, &JoinRequest{}, &ForceRequest{},
			&directory.SettingsPayload{}, &directory.MemberUpdatePayload{}, &auditRequest{}} {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("POST", "/x", bytes.NewReader(body))
			if decode(w, r, v) {
				if req, ok := v.(*JoinClaimRequest); ok {
					_ = pki.VerifyProof(strings.Repeat("00", 32), req.claim(), req.Proof, time.Now(), time.Minute)
				}
			} else if w.Code/100 != 4 {
				t.Fatalf("refused body answered %d", w.Code)
			}
		}
	})
}

// FuzzFrontdoorRouting sends arbitrary requests through the front door's
// router (with the agent behind it): it answers, never panics, and never
// lets a client's identity header through.
func FuzzFrontdoorRouting(f *testing.F) {
	a, err := New(Config{Role: pki.RoleNode, Name: "fuzz", DataDir: f.TempDir(), Addresses: func() []string { return []string{"127.0.0.1:443"} }})
	if err != nil {
		f.Fatal(err)
	}
	src, err := frontdoor.NewTLSSource(pki.Files{Dir: f.TempDir()}, f.TempDir(), a.log)
	if err != nil {
		f.Fatal(err)
	}
	var seen []string
	probe := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get(frontdoor.HeaderMember)+r.Header.Get(frontdoor.HeaderRefused))
		a.Handler().ServeHTTP(w, r)
	})
	fd, err := frontdoor.New(frontdoor.Config{TLS: src, Auditor: probe, Routes: []frontdoor.Route{
		{Upgrade: frontdoor.UpgradeRaft, Member: true, Backend: probe},
		{Prefix: "/api/v1/", Backend: probe},
	}})
	if err != nil {
		f.Fatal(err)
	}
	h := fd.Handler()
	f.Add("GET", "/api/v1/cluster/beacon", "", "", "")
	f.Add("POST", "/api/v1/cluster/join-request", frontdoor.UpgradeRaft, "node/n-evil", "{}")
	f.Add("GET", "/raft", frontdoor.UpgradeRaft, "", "")
	f.Fuzz(func(t *testing.T, method, path, upgrade, member, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t") || strings.ContainsAny(method, " /\r\n\t") || method == "" {
			return
		}
		seen = seen[:0]
		r := httptest.NewRequest("GET", "/", strings.NewReader(body))
		r.Method, r.URL.Path, r.RequestURI = method, path, path
		r.Header.Set("Upgrade", upgrade)
		r.Header.Set(frontdoor.HeaderMember, member)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		for _, s := range seen {
			if member != "" && strings.HasPrefix(s, member) {
				t.Fatalf("a client's identity header reached the backend: %q", s)
			}
		}
	})
}

// FuzzUpgradeResponse feeds the answer a dialling member reads after its
// Upgrade request.
func FuzzUpgradeResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tandem-raft/1\r\n\r\nrest"))
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"))
	f.Add([]byte("HTTP/1.1 101 OK\r\nUpgrade: h2c\r\n\r\n"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		client, server := net.Pipe()
		go func() {
			server.Write(answer)
			server.Close()
		}()
		client.SetDeadline(time.Now().Add(time.Second))
		up, err := memberconn.ReadUpgrade(client, frontdoor.UpgradeRaft)
		if err == nil {
			// The bytes after the answer are the stream's.
			io.Copy(io.Discard, up)
		}
		client.Close()
	})
}
