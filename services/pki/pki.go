// Package pki is the cluster's certificate authority and join tokens.
//
// The first node makes the cluster CA when it bootstraps. Every member
// (node or witness) gets a certificate signed by it when it joins; the
// certificate names the member by a URI, tandem://node/<id> or
// tandem://witness/<id>, and that name is what peers check, never a host
// name or an address (addresses change with DHCP and the cluster IP
// moves). The CA's private key lives only on nodes, never on the witness.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Roles a member certificate can carry.
const (
	RoleNode    = "node"
	RoleWitness = "witness"
)

// Identity is who a certificate says its holder is.
type Identity struct {
	Role string // node or witness
	ID   string // the member's stable ID (its raft server ID)
}

func (i Identity) String() string { return i.Role + "/" + i.ID }

// URI is the identity as it appears in a certificate.
func (i Identity) URI() *url.URL {
	return &url.URL{Scheme: "tandem", Host: i.Role, Path: "/" + i.ID}
}

// ParseIdentityURI reads an identity from a certificate URI.
func ParseIdentityURI(u *url.URL) (Identity, error) {
	if u.Scheme != "tandem" || (u.Host != RoleNode && u.Host != RoleWitness) {
		return Identity{}, fmt.Errorf("%q is not a Tandem member URI", u)
	}
	id := strings.TrimPrefix(u.Path, "/")
	if err := CheckID(id); err != nil {
		return Identity{}, err
	}
	return Identity{Role: u.Host, ID: id}, nil
}

// CheckID accepts the member IDs Tandem makes: 1 to 64 of [a-z0-9-].
func CheckID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("member ID %q: want 1 to 64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("member ID %q: only a-z, 0-9 and - are allowed", id)
		}
	}
	return nil
}

// IdentityOf returns the member identity of a verified certificate.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	for _, u := range cert.URIs {
		if id, err := ParseIdentityURI(u); err == nil {
			return id, nil
		}
	}
	return Identity{}, errors.New("certificate names no Tandem member")
}

// CA is the cluster's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey // nil on members that only verify (the witness)
	PEM  []byte
}

// NewCA makes a CA for a new cluster.
func NewCA(clusterID string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Tandem cluster " + clusterID, Organization: []string{"Tandem"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pemBlock("CERTIFICATE", der)}, nil
}

// Fingerprint is the hex SHA-256 of the CA certificate: what join tokens
// carry, so a joining member can tell the real cluster from an impostor.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint is the hex SHA-256 of a certificate's DER bytes.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// NewKeyAndCSR makes a member's private key and a signing request naming
// its identity.
func NewKeyAndCSR(id Identity, name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := CSRFor(key, id, name)
	return key, csr, err
}

// CSRFor makes a signing request for a key the member has already: a
// certificate issued again, with other names.
func CSRFor(key *ecdsa.PrivateKey, id Identity, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
		URIs:    []*url.URL{id.URI()},
	}, key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE REQUEST", der), nil
}

// Sign issues a member certificate for a CSR. The identity is the one the
// cluster decided on, not whatever the CSR asks for; host names and IPs
// are added so browsers and curl can verify the front door too.
func (ca *CA) Sign(csrPEM []byte, id Identity, name string, dnsNames []string, ips []net.IP) ([]byte, error) {
	if ca.Key == nil {
		return nil, errors.New("this member holds no CA key")
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("signing request: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("signing request: %w", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.URI().String() {
		return nil, fmt.Errorf("signing request names %v, want %s", csr.URIs, id.URI())
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Tandem " + id.Role}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE", der), nil
}

// VerifyMember checks that a certificate chain was issued by the CA for a
// member, and returns the member's identity.
func (ca *CA) VerifyMember(chain []*x509.Certificate) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: ca.Pool(), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return Identity{}, fmt.Errorf("certificate not issued by this cluster: %w", err)
	}
	return IdentityOf(chain[0])
}

// Files are a member's TLS material on disk.
type Files struct{ Dir string }

// Paths of the files in Dir.
func (f Files) CACert() string   { return filepath.Join(f.Dir, "ca.crt") }
func (f Files) CAKey() string    { return filepath.Join(f.Dir, "ca.key") }
func (f Files) NodeCert() string { return filepath.Join(f.Dir, "member.crt") }
func (f Files) NodeKey() string  { return filepath.Join(f.Dir, "member.key") }

// Exists reports whether the member has joined (has a certificate).
func (f Files) Exists() bool {
	_, err := os.Stat(f.NodeCert())
	return err == nil
}

// Save writes the member's material; caKey is nil for a witness.
func (f Files) Save(caPEM, certPEM []byte, key *ecdsa.PrivateKey, caKey *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return err
	}
	keyPEM, err := MarshalKey(key)
	if err != nil {
		return err
	}
	type file struct {
		path string
		data []byte
	}
	// The certificate last: its presence means "joined".
	writes := []file{{f.CACert(), caPEM}, {f.NodeKey(), keyPEM}}
	if caKey != nil {
		caKeyPEM, err := MarshalKey(caKey)
		if err != nil {
			return err
		}
		writes = append(writes, file{f.CAKey(), caKeyPEM})
	}
	writes = append(writes, file{f.NodeCert(), certPEM})
	for _, w := range writes {
		if err := WriteFileAtomic(w.path, w.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// LoadCA reads the CA certificate and, if present, its key.
func (f Files) LoadCA() (*CA, error) {
	certPEM, err := os.ReadFile(f.CACert())
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.CACert(), err)
	}
	ca := &CA{Cert: cert, PEM: certPEM}
	if keyPEM, err := os.ReadFile(f.CAKey()); err == nil {
		if ca.Key, err = ParseKeyPEM(keyPEM); err != nil {
			return nil, fmt.Errorf("%s: %w", f.CAKey(), err)
		}
	}
	return ca, nil
}

// LoadKeyPair reads the member's certificate and key.
func (f Files) LoadKeyPair() (tls.Certificate, error) {
	return tls.LoadX509KeyPair(f.NodeCert(), f.NodeKey())
}

// ParseCertPEM reads one PEM certificate.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// MarshalKey encodes an EC private key as PEM.
func MarshalKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// ParseKeyPEM reads an EC private key.
func ParseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial would still
		// give a valid certificate.
		return big.NewInt(1)
	}
	return n
}

// WriteFileAtomic writes data to a temporary file, syncs it and renames it
// into place, so a power cut leaves the old file or the new one.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
