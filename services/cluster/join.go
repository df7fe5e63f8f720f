package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/passwd"
	"github.com/tandemhci/tandem/services/pki"
)

// Beacon is what a member tells anyone about itself: enough for a new
// member to find a cluster and check its CA against a token.
type Beacon struct {
	MemberID      string   `json:"member_id"`
	Name          string   `json:"name"`
	Role          string   `json:"role"`
	InCluster     bool     `json:"in_cluster"`
	ClusterID     string   `json:"cluster_id,omitempty"`
	CAFingerprint string   `json:"ca_fingerprint,omitempty"`
	Version       string   `json:"version,omitempty"`
	Addresses     []string `json:"addresses"`
}

func (a *Agent) beacon() Beacon {
	b := Beacon{MemberID: a.id.ID, Name: a.cfg.Name, Role: a.id.Role, Version: a.cfg.Version, Addresses: a.addresses()}
	if _, ca, err := a.live.Current(); err == nil && ca != nil {
		b.InCluster = true
		b.CAFingerprint = ca.Fingerprint()
	}
	if c, ok := a.Directory().Cluster(); ok {
		b.ClusterID = c.ID
	}
	return b
}

// Errors of bootstrapping and joining.
var (
	ErrInCluster     = errors.New("this member is already in a cluster")
	ErrBadSetupCode  = errors.New("wrong setup code (it is shown on this member's console)")
	ErrNoPeerToJoin  = errors.New("no member of the token's cluster found: give a peer address, or check the interconnect")
	ErrCannotSignNow = errors.New("the leader holds no CA key (a witness leads): try again in a moment")
)

func (a *Agent) checkSetupCode(code string) error {
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(code)), []byte(a.setupCode)) != 1 {
		return ErrBadSetupCode
	}
	return nil
}

// BootstrapRequest forms a new cluster with this member as its first.
type BootstrapRequest struct {
	SetupCode     string `json:"setup_code"`
	AdminName     string `json:"admin_name"`
	AdminPassword string `json:"admin_password"`
	ClusterIP     string `json:"cluster_ip,omitempty"` // e.g. 192.0.2.100/24
}

// BootstrapResponse says what was made.
type BootstrapResponse struct {
	ClusterID     string `json:"cluster_id"`
	CAFingerprint string `json:"ca_fingerprint"`
	JoinToken     string `json:"join_token"` // for the other node and the witness; valid 24 h
}

// tokenTTL is how long a join token from bootstrap or the API lasts.
const tokenTTL = 24 * time.Hour

// Bootstrap makes the cluster: its CA, this member's certificate, a raft
// configuration of one voter, the first admin and a join token.
func (a *Agent) Bootstrap(ctx context.Context, req BootstrapRequest, from string) (BootstrapResponse, error) {
	a.joinMu.Lock()
	defer a.joinMu.Unlock()
	if a.files.Exists() {
		return BootstrapResponse{}, ErrInCluster
	}
	if err := a.checkSetupCode(req.SetupCode); err != nil {
		return BootstrapResponse{}, err
	}
	if len(req.AdminPassword) < 8 {
		return BootstrapResponse{}, fieldError("admin_password", "at least 8 characters")
	}
	settings := map[string]string{}
	if req.ClusterIP != "" {
		if _, err := netip.ParsePrefix(req.ClusterIP); err != nil {
			return BootstrapResponse{}, fieldError("cluster_ip", "want address/prefix, e.g. 192.0.2.100/24")
		}
		settings[SettingClusterIP] = req.ClusterIP
	}
	hash, err := passwd.Hash(req.AdminPassword, passwd.Default())
	if err != nil {
		return BootstrapResponse{}, err
	}
	clusterID := "c-" + randomHex(6)
	ca, err := pki.NewCA(clusterID)
	if err != nil {
		return BootstrapResponse{}, err
	}
	key, csr, err := pki.NewKeyAndCSR(a.id, a.cfg.Name)
	if err != nil {
		return BootstrapResponse{}, err
	}
	names, ips := certNames(a.cfg.Name, a.addresses())
	certPEM, err := ca.Sign(csr, a.id, a.cfg.Name, names, ips)
	if err != nil {
		return BootstrapResponse{}, err
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		return BootstrapResponse{}, err
	}
	if err := a.files.Save(ca.PEM, certPEM, key, ca.Key); err != nil {
		return BootstrapResponse{}, fmt.Errorf("save the member certificate: %w", err)
	}
	a.live.Refresh()
	self := FormatAddress(a.id.ID, a.addresses())
	if err := a.startRaft(&raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(a.id.ID), Address: self, Suffrage: raft.Voter}}}, nil); err != nil {
		a.undoJoin()
		return BootstrapResponse{}, err
	}
	if err := a.waitLeaderReady(ctx, 15*time.Second); err != nil {
		a.undoJoin()
		return BootstrapResponse{}, fmt.Errorf("the new cluster elected no leader: %w", err)
	}
	_, err = a.propose(directory.TypeInit, req.AdminName, from, directory.InitPayload{
		Cluster:  directory.Cluster{ID: clusterID, CAFingerprint: ca.Fingerprint(), CAPEM: string(ca.PEM)},
		Admin:    directory.User{Name: req.AdminName, Role: directory.RoleAdmin, PasswordHash: hash},
		Member:   directory.Member{ID: a.id.ID, Name: a.cfg.Name, Role: a.id.Role, Addresses: a.addresses()},
		Token:    directory.JoinToken{ID: tok.ID, Key: tok.Key(), Expires: time.Now().Add(tokenTTL).UTC(), CreatedBy: req.AdminName},
		Settings: settings,
	})
	if err != nil {
		a.undoJoin()
		return BootstrapResponse{}, err
	}
	a.log.Info("cluster bootstrapped", "cluster", clusterID, "ca", ca.Fingerprint()[:16])
	return BootstrapResponse{ClusterID: clusterID, CAFingerprint: ca.Fingerprint(), JoinToken: tok.String()}, nil
}

// undoJoin forgets a half-made membership, so the member can try again.
func (a *Agent) undoJoin() {
	a.stopRaft()
	_ = os.RemoveAll(a.files.Dir)
	_ = os.RemoveAll(filepath.Join(a.cfg.DataDir, "raft"))
	a.live.Refresh()
}

// waitLeaderReady waits until this member leads with everything applied.
func (a *Agent) waitLeaderReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !a.leaderReady.Load() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// certNames are the host names and IPs a member certificate carries, so
// browsers and curl can check the front door by address too.
func certNames(name string, addrs []string) ([]string, []net.IP) {
	var ips []net.IP
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && !ip.IsLinkLocalUnicast() {
			ips = append(ips, net.IP(ip.AsSlice()))
		}
	}
	return []string{name}, ips
}

// JoinRequest asks this (new) member to join a cluster.
type JoinRequest struct {
	SetupCode string   `json:"setup_code"`
	Token     string   `json:"token"`
	Peers     []string `json:"peers,omitempty"` // host:port of members; empty: find one on the interconnect
}

// Join joins this member to the token's cluster through one of the peers,
// or through a member found on the interconnect.
func (a *Agent) Join(ctx context.Context, token string, peers []string) error {
	a.joinMu.Lock()
	defer a.joinMu.Unlock()
	if a.files.Exists() {
		return ErrInCluster
	}
	tok, err := pki.ParseToken(token)
	if err != nil {
		return fieldError("token", err.Error())
	}
	if len(peers) == 0 {
		peers = a.disco.find(ctx, tok)
	}
	if len(peers) == 0 {
		return ErrNoPeerToJoin
	}
	var errs []error
	for _, peer := range peers {
		err := a.joinVia(ctx, peer, tok)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", peer, err))
		var refused *refusedError
		if errors.As(err, &refused) {
			break // the cluster said no; another member would say the same
		}
	}
	return errors.Join(errs...)
}

// JoinClaimRequest is what a joining member sends to a member.
type JoinClaimRequest struct {
	TokenID   string   `json:"token_id"`
	Nonce     string   `json:"nonce"`
	Timestamp int64    `json:"timestamp"`
	MemberID  string   `json:"member_id"`
	Role      string   `json:"role"`
	Name      string   `json:"name"`
	CSR       string   `json:"csr"`
	Proof     string   `json:"proof"`
	Addresses []string `json:"addresses"`
}

func (c JoinClaimRequest) claim() pki.JoinClaim {
	return pki.JoinClaim{TokenID: c.TokenID, Nonce: c.Nonce, Timestamp: c.Timestamp, MemberID: c.MemberID,
		Role: c.Role, Name: c.Name, CSRSHA256: pki.CSRDigest([]byte(c.CSR))}
}

// JoinClaimResponse carries the new member's certificate.
type JoinClaimResponse struct {
	ClusterID string `json:"cluster_id"`
	CAPEM     string `json:"ca_pem"`
	CertPEM   string `json:"cert_pem"`
	CAKeyPEM  string `json:"ca_key_pem,omitempty"` // nodes only: any node may sign later joins
}

// refusedError is the cluster refusing a join (as opposed to the network
// failing).
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return "refused: " + e.msg }

// joinVia runs the join handshake with one peer.
func (a *Agent) joinVia(ctx context.Context, peer string, tok pki.Token) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// 1. The peer's CA must be the token's.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}}
	var caPEM []byte
	if err := getBody(ctx, insecure, "https://"+urlHost(peer)+"/api/v1/cluster/ca", &caPEM); err != nil {
		return fmt.Errorf("fetch the cluster CA: %w", err)
	}
	caCert, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return fmt.Errorf("the peer's CA: %w", err)
	}
	ca := &pki.CA{Cert: caCert, PEM: caPEM}
	if !tok.MatchesCA(ca) {
		return &refusedError{"the peer's cluster CA does not match the token: another cluster, or an impostor"}
	}
	// 2. A key and a request for this member's certificate, bound to the
	// token by the proof.
	key, csr, err := pki.NewKeyAndCSR(a.id, a.cfg.Name)
	if err != nil {
		return err
	}
	req := JoinClaimRequest{TokenID: tok.ID, Nonce: pki.NewNonce(), Timestamp: time.Now().Unix(), MemberID: a.id.ID,
		Role: a.id.Role, Name: a.cfg.Name, CSR: string(csr), Addresses: a.addresses()}
	req.Proof = tok.Prove(req.claim())
	pinned := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.PinnedTLS(ca)}}
	var resp JoinClaimResponse
	if err := postJSON(ctx, pinned, "https://"+urlHost(peer)+"/api/v1/cluster/join-request", req, &resp); err != nil {
		return err
	}
	// 3. The certificate must be the CA's, for this member.
	cert, err := pki.ParseCertPEM([]byte(resp.CertPEM))
	if err != nil {
		return fmt.Errorf("member certificate: %w", err)
	}
	if id, err := ca.VerifyMember([]*x509.Certificate{cert}); err != nil || id != a.id {
		return fmt.Errorf("the certificate received is for %v (%v), not for this member", id, err)
	}
	var caKey *ecdsa.PrivateKey // the witness keeps none
	if resp.CAKeyPEM != "" && a.id.Role == pki.RoleNode {
		if caKey, err = pki.ParseKeyPEM([]byte(resp.CAKeyPEM)); err != nil {
			return fmt.Errorf("CA key: %w", err)
		}
	}
	if err := a.files.Save(caPEM, []byte(resp.CertPEM), key, caKey); err != nil {
		return fmt.Errorf("save the member certificate: %w", err)
	}
	a.live.Refresh()
	if err := a.startRaft(nil, nil); err != nil {
		a.undoJoin()
		return err
	}
	a.log.Info("joined the cluster", "cluster", resp.ClusterID, "via", peer)
	return nil
}

// acceptJoin checks a join claim on the leader and, if it holds, adds
// the member: its directory record (the nonce recorded with it), its
// certificate, and a raft non-voter the leader promotes once it answers.
func (a *Agent) acceptJoin(ctx context.Context, req JoinClaimRequest, from string) (JoinClaimResponse, error) {
	r := a.r()
	if r == nil {
		return JoinClaimResponse{}, ErrNotInCluster
	}
	tokRec, ok := a.Directory().Token(req.TokenID)
	if !ok {
		return JoinClaimResponse{}, &refusedError{"unknown join token"}
	}
	if err := pki.VerifyProof(tokRec.Key, req.claim(), req.Proof, time.Now(), 5*time.Minute); err != nil {
		return JoinClaimResponse{}, &refusedError{err.Error()}
	}
	if a.Directory().NonceUsed(req.Nonce) {
		return JoinClaimResponse{}, &refusedError{"join request replayed"}
	}
	if req.Role != pki.RoleNode && req.Role != pki.RoleWitness {
		return JoinClaimResponse{}, fieldError("role", "node or witness")
	}
	if err := pki.CheckID(req.MemberID); err != nil {
		return JoinClaimResponse{}, fieldError("member_id", err.Error())
	}
	if len(req.Addresses) == 0 || len(req.Addresses) > 8 {
		return JoinClaimResponse{}, fieldError("addresses", "1 to 8 host:port addresses")
	}
	for _, ad := range req.Addresses {
		if _, _, err := net.SplitHostPort(ad); err != nil || strings.ContainsAny(ad, "@,") {
			return JoinClaimResponse{}, fieldError("addresses", fmt.Sprintf("%q is not host:port", ad))
		}
	}
	if _, exists := a.Directory().Member(req.MemberID); exists {
		return JoinClaimResponse{}, &refusedError{"member " + req.MemberID + " is already in the cluster"}
	}
	// A member with this name but another ID is the same machine after
	// its disk was wiped, unless it still answers: then it is someone
	// else taking its name.
	var replaces string
	if old, ok := a.Directory().MemberByName(req.Name); ok {
		if pr, ok := a.probes.get(old.ID); ok && pr.Err == "" && time.Since(pr.At) < 10*time.Second {
			return JoinClaimResponse{}, &refusedError{fmt.Sprintf("a member named %s (%s) is alive: remove it first", req.Name, old.ID)}
		}
		replaces = old.ID
	}
	_, ca, err := a.live.Current()
	if err != nil || ca == nil {
		return JoinClaimResponse{}, fmt.Errorf("cluster CA: %v", err)
	}
	if ca.Key == nil {
		return JoinClaimResponse{}, ErrCannotSignNow
	}
	id := pki.Identity{Role: req.Role, ID: req.MemberID}
	names, ips := certNames(req.Name, req.Addresses)
	certPEM, err := ca.Sign([]byte(req.CSR), id, req.Name, names, ips)
	if err != nil {
		return JoinClaimResponse{}, fieldError("csr", err.Error())
	}
	_, err = a.propose(directory.TypeMemberJoin, "member:"+req.Name, from, directory.MemberJoinPayload{
		Member:  directory.Member{ID: req.MemberID, Name: req.Name, Role: req.Role, Addresses: req.Addresses},
		TokenID: req.TokenID, Nonce: req.Nonce, NonceExpires: time.Now().Add(15 * time.Minute).UTC(), Replaces: replaces,
	})
	if err != nil {
		return JoinClaimResponse{}, err
	}
	if replaces != "" {
		if err := r.RemoveServer(raft.ServerID(replaces), 0, 10*time.Second).Error(); err != nil {
			a.log.Warn("removing the replaced member from raft", "member", replaces, "err", err)
		}
	}
	// Raft takes the member once it answers with the certificate it is
	// about to receive (reconcileMembership): replicating to it before
	// then would fail and back off for seconds.
	a.log.Info("member joined", "member", req.Name, "id", req.MemberID, "role", req.Role, "replaces", replaces)
	resp := JoinClaimResponse{CAPEM: string(ca.PEM), CertPEM: string(certPEM)}
	if c, ok := a.Directory().Cluster(); ok {
		resp.ClusterID = c.ID
	}
	if req.Role == pki.RoleNode {
		keyPEM, err := pki.MarshalKey(ca.Key)
		if err != nil {
			return JoinClaimResponse{}, err
		}
		resp.CAKeyPEM = string(keyPEM)
	}
	return resp, nil
}

// reconcileMembership brings the raft configuration to the directory's
// members: a member in the directory but not in raft (it just joined, or
// it was left out while a node was forced to go on alone) becomes a
// non-voter once it answers the leader with its member certificate, and a
// non-voter becomes a voter once it has applied the log (within a few
// entries of the leader's commit index).
func (a *Agent) reconcileMembership(r *raft.Raft) {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	suffrage := map[string]raft.ServerSuffrage{}
	for _, s := range f.Configuration().Servers {
		suffrage[string(s.ID)] = s.Suffrage
	}
	commit := r.CommitIndex()
	for _, m := range a.Directory().Members() {
		if m.ID == a.id.ID || len(m.Addresses) == 0 {
			continue
		}
		pr, ok := a.probes.get(m.ID)
		if !ok || pr.Err != "" || time.Since(pr.At) > 2*time.Second {
			continue
		}
		addr := FormatAddress(m.ID, m.Addresses)
		s, inConfig := suffrage[m.ID]
		switch {
		case !inConfig:
			if err := r.AddNonvoter(raft.ServerID(m.ID), addr, 0, 10*time.Second).Error(); err != nil {
				a.log.Warn("adding a member to raft", "member", m.Name, "err", err)
				continue
			}
			a.log.Info("member added to raft as a non-voter", "member", m.Name)
		case s == raft.Nonvoter && pr.Applied > 0 && pr.Applied+16 >= commit:
			if err := r.AddVoter(raft.ServerID(m.ID), addr, 0, 10*time.Second).Error(); err != nil {
				a.log.Warn("promoting a member to voter", "member", m.Name, "err", err)
				continue
			}
			a.log.Info("member promoted to voter", "member", m.Name, "applied", pr.Applied, "commit", commit)
		}
	}
}

func getBody(ctx context.Context, c *http.Client, url string, out *[]byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, apiMessage(b))
	}
	*out = b
	return nil
}

func postJSON(ctx context.Context, c *http.Client, url string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return &refusedError{apiMessage(b)}
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%s: %s", resp.Status, apiMessage(b))
	}
	return json.Unmarshal(b, out)
}

// urlHost writes a host:port for a URL: an IPv6 zone (fe80::1%ic0) is
// escaped as %25 there.
func urlHost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || !strings.Contains(host, "%") {
		return addr
	}
	return "[" + strings.Replace(host, "%", "%25", 1) + "]:" + port
}

// apiMessage extracts the message of an API error body.
func apiMessage(b []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return strings.TrimSpace(string(b))
}

// joinFromFile joins with the token and peers the installer left in
// JoinFile, retrying while the cluster cannot be reached; a refusal (the
// token spent or expired) ends it, and an admin joins the node by hand.
func (a *Agent) joinFromFile(ctx context.Context) {
	b, err := os.ReadFile(a.cfg.JoinFile)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		a.log.Error("the installer's join", "file", a.cfg.JoinFile, "err", err)
		return
	}
	var req JoinRequest
	if err := json.Unmarshal(b, &req); err != nil {
		a.log.Error("the installer's join: the file does not parse; join this node by hand", "file", a.cfg.JoinFile, "err", err)
		return
	}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := a.Join(ctx, req.Token, req.Peers)
		if err == nil || errors.Is(err, ErrInCluster) {
			a.log.Info("joined the cluster with the installer's token", "attempts", attempt)
			if err := os.Remove(a.cfg.JoinFile); err != nil {
				a.log.Warn("the installer's join file stays", "err", err)
			}
			return
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			a.log.Error("the cluster refused the installer's join; join this node by hand", "err", err)
			return
		}
		a.log.Warn("joining with the installer's token: trying again", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
}
