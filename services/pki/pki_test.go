package pki

import (
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

// issue makes a member certificate from ca for id.
func issue(t *testing.T, ca *CA, id Identity) *x509.Certificate {
	t.Helper()
	_, csr, err := NewKeyAndCSR(id, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csr, id, "node-a", []string{"node-a"}, []net.IP{net.IPv4(10, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestIssueAndVerifyMember(t *testing.T) {
	ca, err := NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Role: RoleNode, ID: "n-1234"}
	cert := issue(t, ca, id)
	got, err := ca.VerifyMember([]*x509.Certificate{cert})
	if err != nil || got != id {
		t.Fatalf("VerifyMember = %v, %v; want %v", got, err, id)
	}

	// A certificate from another cluster's CA is refused.
	other, _ := NewCA("c2")
	if _, err := ca.VerifyMember([]*x509.Certificate{issue(t, other, id)}); err == nil {
		t.Error("a foreign certificate was accepted")
	}
	if _, err := ca.VerifyMember(nil); err == nil {
		t.Error("no certificate was accepted")
	}
}

func TestSignRefusesAnotherIdentity(t *testing.T) {
	ca, _ := NewCA("c1")
	_, csr, _ := NewKeyAndCSR(Identity{Role: RoleNode, ID: "n-1"}, "a")
	// The CSR names n-1; the cluster decided the member is n-2.
	if _, err := ca.Sign(csr, Identity{Role: RoleNode, ID: "n-2"}, "a", nil, nil); err == nil {
		t.Error("signed a CSR naming another member")
	}
	if _, err := ca.Sign([]byte("junk"), Identity{Role: RoleNode, ID: "n-1"}, "a", nil, nil); err == nil {
		t.Error("signed junk")
	}
	verifyOnly := &CA{Cert: ca.Cert, PEM: ca.PEM}
	if _, err := verifyOnly.Sign(csr, Identity{Role: RoleNode, ID: "n-1"}, "a", nil, nil); err == nil {
		t.Error("signed without a CA key")
	}
}

func TestCheckID(t *testing.T) {
	for _, ok := range []string{"a", "n-1234", strings.Repeat("x", 64)} {
		if err := CheckID(ok); err != nil {
			t.Errorf("CheckID(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A", "a/b", "a.b", strings.Repeat("x", 65), "a b"} {
		if err := CheckID(bad); err == nil {
			t.Errorf("CheckID(%q) accepted", bad)
		}
	}
}

func TestFilesRoundTrip(t *testing.T) {
	ca, _ := NewCA("c1")
	id := Identity{Role: RoleNode, ID: "n-1"}
	key, csr, _ := NewKeyAndCSR(id, "a")
	certPEM, _ := ca.Sign(csr, id, "a", nil, nil)
	f := Files{Dir: t.TempDir()}
	if f.Exists() {
		t.Fatal("exists before saving")
	}
	if err := f.Save(ca.PEM, certPEM, key, ca.Key); err != nil {
		t.Fatal(err)
	}
	got, err := f.LoadCA()
	if err != nil || got.Key == nil || got.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("LoadCA: %v %v", got, err)
	}
	if _, err := f.LoadKeyPair(); err != nil {
		t.Fatal(err)
	}
	// A witness saves no CA key.
	w := Files{Dir: t.TempDir()}
	if err := w.Save(ca.PEM, certPEM, key, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.LoadCA(); got.Key != nil {
		t.Error("witness has a CA key")
	}
}

func TestTokenProof(t *testing.T) {
	ca, _ := NewCA("c1")
	tok, err := NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseToken(tok.String())
	if err != nil || parsed != tok {
		t.Fatalf("ParseToken(%s) = %v, %v", tok, parsed, err)
	}
	if !tok.MatchesCA(ca) {
		t.Error("token does not match its CA")
	}
	other, _ := NewCA("c2")
	if tok.MatchesCA(other) {
		t.Error("token matches a foreign CA")
	}

	now := time.Now()
	claim := JoinClaim{TokenID: tok.ID, Nonce: NewNonce(), Timestamp: now.Unix(), MemberID: "n-2", Role: RoleNode, Name: "b", CSRSHA256: CSRDigest([]byte("csr"))}
	proof := tok.Prove(claim)
	if err := VerifyProof(tok.Key(), claim, proof, now, 5*time.Minute); err != nil {
		t.Fatalf("good proof refused: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(c *JoinClaim)
		proof string
		now   time.Time
		want  string
	}{
		{"another member ID", func(c *JoinClaim) { c.MemberID = "n-3" }, proof, now, "wrong token"},
		{"another role", func(c *JoinClaim) { c.Role = RoleWitness }, proof, now, "wrong token"},
		{"another CSR", func(c *JoinClaim) { c.CSRSHA256 = CSRDigest([]byte("x")) }, proof, now, "wrong token"},
		{"proof not hex", func(*JoinClaim) {}, "zz", now, "not hex"},
		{"old request", func(*JoinClaim) {}, proof, now.Add(10 * time.Minute), "off by"},
	}
	for _, tt := range tests {
		c := claim
		tt.edit(&c)
		err := VerifyProof(tok.Key(), c, tt.proof, tt.now, 5*time.Minute)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	wrong, _ := NewToken(ca)
	if err := VerifyProof(wrong.Key(), claim, proof, now, 5*time.Minute); err == nil {
		t.Error("proof verified with another token's key")
	}
}

func TestParseTokenRefusesMalformed(t *testing.T) {
	for _, s := range []string{"", "tdm1", "tdm2-aaaaaaaa-" + strings.Repeat("a", 32) + "-" + strings.Repeat("0", 32),
		"tdm1-aaaa-" + strings.Repeat("a", 32) + "-" + strings.Repeat("0", 32),
		"tdm1-aaaaaaaa-" + strings.Repeat("a", 32) + "-" + strings.Repeat("g", 32),
		"tdm1-aaaaaaa1-" + strings.Repeat("a", 32) + "-" + strings.Repeat("0", 32)} {
		if _, err := ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) accepted", s)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	ca, _ := NewCA("c1")
	tok, _ := NewToken(ca)
	f.Add(tok.String())
	f.Add("tdm1---")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		// Whatever parses prints back to something that parses the same.
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("round trip of %q: %v %v", s, again, err)
		}
	})
}
