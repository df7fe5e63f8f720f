package installer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// client talks to the provisioning node: plain HTTP for the boot files
// (checked by their SHA-256 from the manifest), and the provisioning API
// over TLS pinned to the cluster CA the kernel command line names.
type client struct {
	host  string // host:port of the serving node's front door
	key   string // this boot's installer key
	mac   string
	plain *http.Client
	api   *http.Client
}

// errStop is an answer after which the installer must stop: another
// installer took over the machine, or provisioning was switched off.
type errStop struct{ msg string }

func (e *errStop) Error() string { return e.msg }

func newClient(host, key, mac string) *client {
	return &client{host: host, key: key, mac: mac, plain: &http.Client{Timeout: 10 * time.Minute}}
}

// pin fetches the CA certificate and trusts it only if its fingerprint
// is the one the kernel command line carries.
func (c *client) pin(ctx context.Context, fingerprint string) error {
	var pemBytes bytes.Buffer
	if err := c.fetch(ctx, "/boot/ca.crt", &pemBytes, 64<<10); err != nil {
		return err
	}
	ca, err := pki.ParseCertPEM(pemBytes.Bytes())
	if err != nil {
		return fmt.Errorf("the cluster CA: %w", err)
	}
	if got := pki.Fingerprint(ca); !strings.EqualFold(got, fingerprint) {
		return fmt.Errorf("the CA served has fingerprint %s, not the %s this installer was booted with: refusing to talk to it", got, fingerprint)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The node is reached by its provisioning address, which its
		// certificate does not name: the chain is checked against the
		// pinned CA instead of the name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
	c.api = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	return nil
}

// fetch GETs a boot file into w; more than limit bytes is an error.
func (c *client) fetch(ctx context.Context, path string, w io.Writer, limit int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.host+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.plain.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if n > limit {
		return fmt.Errorf("GET %s: more than the %d bytes expected", path, limit)
	}
	return nil
}

// call makes one API request with the installer's key.
func (c *client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+c.host+path, body)
	if err != nil {
		return err
	}
	req.Header.Set(cluster.HeaderMachineKey, c.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e frontdoor.ErrorBody
		_ = json.Unmarshal(b, &e)
		msg := fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, e.Error.Message)
		if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound {
			return &errStop{msg}
		}
		return errors.New(msg)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (c *client) report(ctx context.Context, r cluster.InstallerReport) (cluster.InstallPlan, error) {
	var p cluster.InstallPlan
	err := c.call(ctx, http.MethodPost, "/api/v1/provisioning/installer/report", r, &p)
	return p, err
}

func (c *client) plan(ctx context.Context) (cluster.InstallPlan, error) {
	var p cluster.InstallPlan
	err := c.call(ctx, http.MethodGet, "/api/v1/provisioning/installer/plan?mac="+url.QueryEscape(c.mac), nil, &p)
	return p, err
}

func (c *client) step(ctx context.Context, s cluster.InstallerStep) (cluster.InstallPlan, error) {
	var p cluster.InstallPlan
	s.MAC = c.mac
	err := c.call(ctx, http.MethodPost, "/api/v1/provisioning/installer/step", s, &p)
	return p, err
}
