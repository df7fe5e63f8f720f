package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// joinRequest makes a join claim for a new member with the token.
func joinRequest(t *testing.T, tok pki.Token, id, name string) cluster.JoinClaimRequest {
	t.Helper()
	_, csr, err := pki.NewKeyAndCSR(pki.Identity{Role: pki.RoleNode, ID: id}, name)
	if err != nil {
		t.Fatal(err)
	}
	req := cluster.JoinClaimRequest{TokenID: tok.ID, Nonce: pki.NewNonce(), Timestamp: time.Now().Unix(), MemberID: id,
		Role: pki.RoleNode, Name: name, CSR: string(csr), Addresses: []string{"10.77.0.99:443"}}
	req.Proof = tok.Prove(pki.JoinClaim{TokenID: req.TokenID, Nonce: req.Nonce, Timestamp: req.Timestamp, MemberID: id,
		Role: req.Role, Name: name, CSRSHA256: pki.CSRDigest(csr)})
	return req
}

// raw sends a body as is and returns the status and answer.
func raw(t *testing.T, c *clustertest.Cluster, host, method, path string, body []byte, cfg *tls.Config, hdr map[string]string) (int, string) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{InsecureSkipVerify: true}
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.ClientNS.DialContext, TLSClientConfig: cfg}}
	req, _ := http.NewRequest(method, "https://"+host+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBadInputIsRefused(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Firewall: true})
	c.Form()
	ctx := context.Background()
	tok, err := pki.ParseToken(c.Token)
	if err != nil {
		t.Fatal(err)
	}
	var start cluster.Status
	if _, err := c.DoRetry(ctx, c.ClientNS, "GET", clustertest.ClusterIP, "/api/v1/cluster/status", nil, &start); err != nil {
		t.Fatal(err)
	}

	post := func(host string, v any) (int, string) {
		b, _ := json.Marshal(v)
		return raw(t, c, host, "POST", "/api/v1/cluster/join-request", b, nil, nil)
	}

	t.Run("WrongToken", func(t *testing.T) {
		wrong := tok
		wrong.Secret = strings.Repeat("a", 32)
		code, body := post(c.B.IP, joinRequest(t, wrong, "n-intruder1", "intruder"))
		if code != http.StatusForbidden || !strings.Contains(body, "wrong token") {
			t.Errorf("%d %s", code, body)
		}
	})

	t.Run("ReplayedJoin", func(t *testing.T) {
		req := joinRequest(t, tok, "n-replay1", "replay")
		if code, body := post(clustertest.ClusterIP, req); code != http.StatusOK {
			t.Fatalf("first join: %d %s", code, body)
		}
		// The same request again, as an eavesdropper would send it.
		code, body := post(c.A.IP, req)
		if code != http.StatusForbidden || !strings.Contains(body, "replayed") {
			t.Errorf("replay: %d %s", code, body)
		}
		// An admin removes the member that joined.
		if _, err := c.DoRetry(ctx, c.ClientNS, "DELETE", clustertest.ClusterIP, "/api/v1/cluster/members/n-replay1", nil, nil); err != nil {
			t.Errorf("remove: %v", err)
		}
	})

	t.Run("MalformedAndOversizedBodies", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body []byte
			code int
		}{
			{"not JSON", []byte("{join me"), http.StatusBadRequest},
			{"unknown field", []byte(`{"token_id":"x","admin":true}`), http.StatusBadRequest},
			{"trailing data", []byte(`{"token_id":"x"} {}`), http.StatusBadRequest},
			{"oversized", append([]byte(`{"csr":"`), bytes.Repeat([]byte("A"), 100<<10)...), http.StatusRequestEntityTooLarge},
			{"wrong type", []byte(`{"timestamp":"yesterday"}`), http.StatusBadRequest},
		} {
			code, body := raw(t, c, c.A.IP, "POST", "/api/v1/cluster/join-request", tc.body, nil, nil)
			if code != tc.code || !strings.Contains(body, `"error"`) {
				t.Errorf("%s: %d %s", tc.name, code, body)
			}
		}
		code, body := raw(t, c, c.A.IP, "POST", "/api/v1/cluster/bootstrap", []byte(`{"setup_code":"0000-0000","admin_name":"x","admin_password":"12345678"}`), nil, nil)
		if code != http.StatusConflict || !strings.Contains(body, "already in a cluster") {
			t.Errorf("bootstrap of a member: %d %s", code, body)
		}
	})

	t.Run("ForeignCertificate", func(t *testing.T) {
		// A member certificate from another cluster's CA is no member's.
		ca, _ := pki.NewCA("other")
		id := pki.Identity{Role: pki.RoleNode, ID: "n-foreign"}
		key, csr, _ := pki.NewKeyAndCSR(id, "foreign")
		certPEM, _ := ca.Sign(csr, id, "foreign", nil, nil)
		keyPEM, _ := pki.MarshalKey(key)
		pair, _ := tls.X509KeyPair(certPEM, keyPEM)
		cfg := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}}
		code, body := raw(t, c, c.A.IP, "GET", "/raft", nil, cfg, map[string]string{"Connection": "Upgrade", "Upgrade": frontdoor.UpgradeRaft})
		if code != http.StatusForbidden || !strings.Contains(body, "not_a_member") {
			t.Errorf("raft with a foreign certificate: %d %s", code, body)
		}
		code, _ = raw(t, c, c.A.IP, "GET", "/api/v1/cluster/members/self", nil, cfg, nil)
		if code != http.StatusForbidden {
			t.Errorf("member endpoint with a foreign certificate: %d", code)
		}
	})

	t.Run("ClaimingAnotherMembersIdentity", func(t *testing.T) {
		// node-b's own certificate, claiming to be the witness.
		live := pki.NewLive(pki.Files{Dir: filepath.Join(c.B.Dir, "cluster", "tls")})
		cfg, err := live.ClientTLS(nil)
		if err != nil {
			t.Fatal(err)
		}
		var w cluster.Status
		c.DoRetry(ctx, c.ClientNS, "GET", c.W.IP, "/api/v1/cluster/status", nil, &w)
		code, body := raw(t, c, c.A.IP, "GET", "/api/v1/cluster/members/self", nil, cfg, map[string]string{frontdoor.HeaderClaim: "witness/" + w.Member.MemberID})
		if code != http.StatusForbidden || !strings.Contains(body, "identity_mismatch") {
			t.Errorf("false claim: %d %s", code, body)
		}
		// A member updating another member's record is refused as well.
		var a cluster.Status
		c.DoRetry(ctx, c.ClientNS, "GET", c.A.IP, "/api/v1/cluster/status", nil, &a)
		upd, _ := json.Marshal(directory.MemberUpdatePayload{ID: a.Member.MemberID, Addresses: []string{"10.66.6.6:443"}})
		code, body = raw(t, c, clustertest.ClusterIP, "POST", "/api/v1/cluster/members/self", upd, cfg, nil)
		if code != http.StatusForbidden {
			t.Errorf("updating another member's record: %d %s", code, body)
		}
	})

	t.Run("GarbageOnARaftStream", func(t *testing.T) {
		live := pki.NewLive(pki.Files{Dir: filepath.Join(c.B.Dir, "cluster", "tls")})
		cfg, _ := live.ClientTLS(nil)
		conn, err := c.ClientNS.DialContext(ctx, "tcp", c.A.IP+":443")
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(conn, cfg)
		defer tc.Close()
		fmt.Fprintf(tc, "GET /raft HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", frontdoor.UpgradeRaft)
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		// An RPC type raft does not know, then noise.
		tc.Write([]byte{0xff, 0x13, 0x37})
		tc.Write(bytes.Repeat([]byte{0xde, 0xad}, 10000))
		time.Sleep(500 * time.Millisecond)
	})

	// Through all of it the cluster kept serving, and the refusals are in
	// the audit log.
	c.WaitHealthy(20 * time.Second)
	if _, err := c.Do(ctx, c.ClientNS, "PUT", clustertest.ClusterIP, "/api/v1/labels/still", map[string]string{"value": "serving"}, nil); err != nil {
		t.Errorf("write after the bad input: %v", err)
	}
	var audit []directory.AuditEntry
	if _, err := c.DoRetry(ctx, c.ClientNS, "GET", clustertest.ClusterIP, fmt.Sprintf("/api/v1/audit?since=%d", start.AppliedIndex), nil, &audit); err != nil {
		t.Fatal(err)
	}
	var refusals []string
	for _, e := range audit {
		if e.Result == "refused" {
			refusals = append(refusals, e.Detail)
		}
	}
	joined := strings.Join(refusals, "\n")
	for _, want := range []string{"wrong token", "replayed", "not issued by this cluster", "claims to be witness/"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no audit record of the refusal %q; refusals:\n%s", want, joined)
		}
	}
}
