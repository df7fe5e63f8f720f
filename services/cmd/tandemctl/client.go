package tandemctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Exit codes scripts can trust.
const (
	exitOK          = 0
	exitError       = 1 // the API refused or failed, for any other reason
	exitUsage       = 2 // wrong command line
	exitAuth        = 3 // not logged in, wrong credentials, role too low, locked out
	exitNotFound    = 4
	exitConflict    = 5 // exists already, changed meanwhile, refused by the cluster's state
	exitUnavailable = 6 // no answer, or the cluster cannot answer now (no leader, catching up)
)

// apiError is an answer of the API that is not a success.
type apiError struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *apiError) Error() string {
	msg := e.Message
	if e.Field != "" && !strings.HasPrefix(msg, e.Field) {
		msg = e.Field + ": " + msg
	}
	return fmt.Sprintf("%s (%d %s)", msg, e.Status, e.Code)
}

// exitCode is the exit code err deserves.
func exitCode(err error) int {
	var ae *apiError
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ae):
		switch {
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden || ae.Status == http.StatusTooManyRequests:
			return exitAuth
		case ae.Status == http.StatusNotFound:
			return exitNotFound
		case ae.Status == http.StatusConflict:
			return exitConflict
		case ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusBadGateway:
			return exitUnavailable
		}
		return exitError
	case errors.Is(err, errNoAnswer):
		return exitUnavailable
	case errors.Is(err, errNotLoggedIn):
		return exitAuth
	}
	return exitError
}

var (
	errNoAnswer    = errors.New("the cluster did not answer")
	errNotLoggedIn = errors.New("not logged in: run tandemctl login (or set TANDEM_TOKEN)")
)

// usageError is a wrong command line.
type usageError string

func (e usageError) Error() string { return string(e) }

// client calls the API of one cluster.
type client struct {
	server string // https://host[:port]
	token  string
	user   string // Basic credentials, for login
	pass   string
	hc     *http.Client
}

// newClient makes a client that trusts the cluster's CA (PEM) for any
// host name: the CLI talks to the cluster IP or a node address, which a
// member's certificate may not name, and the CA is what proves it is
// the cluster. Without a CA, insecure must be set.
func newClient(server, caPEM string, insecure bool) (*client, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return nil, usageError(fmt.Sprintf("server %q: want https://HOST[:PORT]", server))
	}
	if u.Scheme == "" {
		u.Scheme = "https"
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case caPEM != "":
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("the saved cluster CA is not a PEM certificate")
		}
		cfg.InsecureSkipVerify = true // checked below, without a host name
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if err != nil {
				return fmt.Errorf("the server is not of the cluster this CLI logged in to: %w", err)
			}
			return nil
		}
	case insecure:
		cfg.InsecureSkipVerify = true
	default:
		return nil, usageError("no cluster CA saved: log in first, or pass -insecure")
	}
	return &client{server: u.Scheme + "://" + u.Host, hc: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}}, nil
}

// do calls method path with in as JSON; a success is decoded into out
// (raw bytes when out is *[]byte). A 503 is retried for a few seconds:
// an election, a member catching up.
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.once(ctx, method, path, body, out)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		return err
	}
}

func (c *client) once(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.authorize(req.Header)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message, Field string } `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
			e.Error.Code, e.Error.Message = "http", strings.TrimSpace(string(b))
		}
		return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message, Field: e.Error.Field}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = b
		return nil
	}
	if len(b) == 0 {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (c *client) authorize(h http.Header) {
	switch {
	case c.token != "":
		h.Set("Authorization", "Bearer "+c.token)
	case c.user != "":
		req := &http.Request{Header: h}
		req.SetBasicAuth(c.user, c.pass)
	}
}

// fetchCA reads the cluster's CA from the server without trusting it yet,
// and returns it with its SHA-256 fingerprint for the user to check.
func fetchCA(ctx context.Context, server string) (caPEM, fingerprint string, err error) {
	c, err := newClient(server, "", true)
	if err != nil {
		return "", "", err
	}
	var b []byte
	if err := c.do(ctx, "GET", "/api/v1/cluster/ca", nil, &b); err != nil {
		return "", "", err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return "", "", errors.New("the server's CA is not a PEM certificate")
	}
	sum := sha256.Sum256(block.Bytes)
	return string(b), hex.EncodeToString(sum[:]), nil
}
