package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Live is a member's TLS material as it is on disk now: the front door
// and the cluster agent are separate processes, and the agent writes the
// files when the member bootstraps or joins. Live rereads them when the
// certificate file changes (checked at most once a second).
type Live struct {
	files Files

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	pair    *tls.Certificate
	ca      *CA
	err     error
}

// NewLive watches the member material in files.
func NewLive(files Files) *Live { return &Live{files: files} }

// Current returns the member's certificate and the cluster CA, or nils
// before the member has joined a cluster.
func (l *Live) Current() (*tls.Certificate, *CA, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Before the member has joined, look every time: the certificate must
	// be served from the moment it is written.
	if l.pair != nil && time.Since(l.checked) < time.Second {
		return l.pair, l.ca, l.err
	}
	l.checked = time.Now()
	st, err := os.Stat(l.files.NodeCert())
	if errors.Is(err, os.ErrNotExist) {
		l.pair, l.ca, l.err, l.modTime = nil, nil, nil, time.Time{}
		return nil, nil, nil
	}
	if err != nil {
		return l.pair, l.ca, err
	}
	if st.ModTime().Equal(l.modTime) && l.pair != nil {
		return l.pair, l.ca, l.err
	}
	pair, err := l.files.LoadKeyPair()
	if err != nil {
		l.err = fmt.Errorf("member certificate: %w", err)
		return l.pair, l.ca, l.err
	}
	ca, err := l.files.LoadCA()
	if err != nil {
		l.err = fmt.Errorf("cluster CA: %w", err)
		return l.pair, l.ca, l.err
	}
	l.pair, l.ca, l.err, l.modTime = &pair, ca, nil, st.ModTime()
	return l.pair, l.ca, nil
}

// Refresh forgets the cache, for the process that just wrote the files.
func (l *Live) Refresh() {
	l.mu.Lock()
	l.checked = time.Time{}
	l.mu.Unlock()
}

// PeerIdentity verifies a peer's certificate chain against the cluster CA
// and returns who it is. With no CA yet, or no certificate, it returns
// an empty identity and no error: the peer is simply not a member.
func (l *Live) PeerIdentity(chain []*x509.Certificate) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, nil
	}
	_, ca, err := l.Current()
	if err != nil || ca == nil {
		return Identity{}, err
	}
	return ca.VerifyMember(chain)
}

// ClientTLS is the TLS configuration for dialling another member: it
// presents this member's certificate and accepts only a peer whose
// certificate the cluster CA issued, to the expected member when one is
// given (host names and addresses are not what identifies members).
func (l *Live) ClientTLS(expect *Identity) (*tls.Config, error) {
	pair, ca, err := l.Current()
	if err != nil {
		return nil, err
	}
	if pair == nil || ca == nil {
		return nil, errors.New("this member has not joined a cluster")
	}
	return &tls.Config{
		Certificates:       []tls.Certificate{*pair},
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
		InsecureSkipVerify: true, // verified below: by CA and member identity, not host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := ca.VerifyMember(cs.PeerCertificates)
			if err != nil {
				return err
			}
			if expect != nil && id != *expect {
				return fmt.Errorf("peer is %s, expected %s", id, *expect)
			}
			return nil
		},
	}, nil
}

// PinnedTLS is the TLS configuration for a member that has not joined
// yet: it trusts only a peer whose certificate the given CA issued.
func PinnedTLS(ca *CA) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
		InsecureSkipVerify: true, // verified below against the pinned CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := ca.VerifyMember(cs.PeerCertificates)
			return err
		},
	}
}

// WaitIdentity waits until the member has a certificate (it has
// bootstrapped or joined a cluster) and returns who it is. A node service
// that talks to other members starts with it.
func WaitIdentity(ctx context.Context, live *Live, log *slog.Logger) (Identity, error) {
	logged := false
	for {
		live.Refresh()
		if cert, _, err := live.Current(); err == nil && cert != nil && cert.Leaf != nil {
			if id, err := IdentityOf(cert.Leaf); err == nil {
				return id, nil
			}
		}
		if !logged {
			log.Info("waiting for this node to join a cluster")
			logged = true
		}
		select {
		case <-ctx.Done():
			return Identity{}, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
