package frontdoor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tandemhci/tandem/services/pki"
)

// TLSSource serves the member certificate once the member has joined a
// cluster, and a self-signed one before. It also tells members from
// everyone else by their client certificates.
type TLSSource struct {
	live *pki.Live
	self tls.Certificate
	log  *slog.Logger
}

// NewTLSSource watches the member material in files; selfDir keeps the
// self-signed certificate used before joining.
func NewTLSSource(files pki.Files, selfDir string, log *slog.Logger) (*TLSSource, error) {
	self, err := loadOrCreateSelfSigned(selfDir, log)
	if err != nil {
		return nil, fmt.Errorf("frontdoor: %w", err)
	}
	return &TLSSource{live: pki.NewLive(files), self: self, log: log}, nil
}

// ServerConfig asks clients for a certificate but does not require one:
// browsers have none, members do. Only HTTP/1.1 is offered, which Upgrade
// needs.
func (t *TLSSource) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			pair, _, err := t.live.Current()
			if err != nil {
				t.log.Warn("member certificate unusable; serving the self-signed one", "err", err)
			}
			if pair != nil {
				return pair, nil
			}
			return &t.self, nil
		},
	}
}

// PeerIdentity is the verified member identity of a connection's client,
// or "" for a client that is not a member.
func (t *TLSSource) PeerIdentity(cs *tls.ConnectionState) (string, error) {
	if cs == nil {
		return "", nil
	}
	id, err := t.live.PeerIdentity(cs.PeerCertificates)
	if err != nil || id.ID == "" {
		return "", err
	}
	return id.String(), nil
}

// loadOrCreateSelfSigned returns the certificate in dir, making a new one
// when there is none or the one there does not load (a damaged file must
// not keep the front door down).
func loadOrCreateSelfSigned(dir string, log *slog.Logger) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, "self.crt"), filepath.Join(dir, "self.key")
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err == nil {
		return cert, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		log.Warn("self-signed certificate unusable; making a new one", "dir", dir, "err", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"Tandem node, not yet in a cluster"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{host, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	keyPEM, err := pki.MarshalKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pemCert(der)
	if err := pki.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := pki.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	log.Info("made a self-signed TLS certificate", "dir", dir)
	return tls.X509KeyPair(certPEM, keyPEM)
}
