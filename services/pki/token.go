package pki

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// A join token lets a new member join: tdm1-<id>-<secret>-<ca>, where ca is
// the first 32 hex digits of the cluster CA's fingerprint. The joiner
// checks the CA it is shown against it before trusting anything, and
// proves it knows the secret without sending it: an HMAC over a fresh
// nonce, the time and what it asks for. The cluster keeps only the HMAC
// key, derived from the secret, and refuses a nonce it has seen.
const tokenPrefix = "tdm1"

// Token is a parsed join token.
type Token struct {
	ID     string
	Secret string
	CAPin  string // hex prefix of the CA fingerprint
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewToken makes a token for the CA.
func NewToken(ca *CA) (Token, error) {
	id := make([]byte, 5)
	secret := make([]byte, 20)
	if _, err := rand.Read(id); err != nil {
		return Token{}, err
	}
	if _, err := rand.Read(secret); err != nil {
		return Token{}, err
	}
	return Token{ID: b32.EncodeToString(id), Secret: b32.EncodeToString(secret), CAPin: ca.Fingerprint()[:32]}, nil
}

func (t Token) String() string {
	return strings.Join([]string{tokenPrefix, t.ID, t.Secret, t.CAPin}, "-")
}

// ParseToken reads a token, refusing anything malformed.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), "-")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return Token{}, fmt.Errorf("join token: want %s-<id>-<secret>-<ca>", tokenPrefix)
	}
	t := Token{ID: parts[1], Secret: parts[2], CAPin: parts[3]}
	if len(t.ID) != 8 || !isB32(t.ID) || len(t.Secret) != 32 || !isB32(t.Secret) {
		return Token{}, fmt.Errorf("join token: malformed id or secret")
	}
	if len(t.CAPin) != 32 {
		return Token{}, fmt.Errorf("join token: CA pin must be 32 hex digits")
	}
	if _, err := hex.DecodeString(t.CAPin); err != nil {
		return Token{}, fmt.Errorf("join token: CA pin: %w", err)
	}
	return t, nil
}

func isB32(s string) bool {
	_, err := b32.DecodeString(s)
	return err == nil
}

// Key is the HMAC key the cluster stores for the token.
func (t Token) Key() string {
	sum := sha256.Sum256([]byte("tandem-join-key\n" + t.Secret))
	return hex.EncodeToString(sum[:])
}

// MatchesCA reports whether the CA is the one the token was made for.
func (t Token) MatchesCA(ca *CA) bool {
	return strings.HasPrefix(ca.Fingerprint(), strings.ToLower(t.CAPin))
}

// JoinClaim is what a joining member asks for, bound by its proof.
type JoinClaim struct {
	TokenID   string
	Nonce     string // hex, fresh for every request
	Timestamp int64  // Unix seconds
	MemberID  string
	Role      string
	Name      string
	CSRSHA256 string
}

func (c JoinClaim) message() []byte {
	return []byte(strings.Join([]string{"tandem-join-v1", c.TokenID, c.Nonce, fmt.Sprint(c.Timestamp), c.MemberID, c.Role, c.Name, c.CSRSHA256}, "\n"))
}

// Prove computes the proof for a claim with the token.
func (t Token) Prove(c JoinClaim) string {
	key, _ := hex.DecodeString(t.Key())
	m := hmac.New(sha256.New, key)
	m.Write(c.message())
	return hex.EncodeToString(m.Sum(nil))
}

// VerifyProof checks a proof against the stored key and the time window.
func VerifyProof(keyHex string, c JoinClaim, proof string, now time.Time, window time.Duration) error {
	key, err := hex.DecodeString(keyHex)
	if err != nil {
		return fmt.Errorf("stored token key: %w", err)
	}
	got, err := hex.DecodeString(proof)
	if err != nil {
		return fmt.Errorf("proof: not hex")
	}
	m := hmac.New(sha256.New, key)
	m.Write(c.message())
	if !hmac.Equal(got, m.Sum(nil)) {
		return fmt.Errorf("wrong token")
	}
	if d := now.Sub(time.Unix(c.Timestamp, 0)); d > window || d < -window {
		return fmt.Errorf("request time %v is off by %v (clocks differ, or the request is replayed)", time.Unix(c.Timestamp, 0).UTC(), d.Round(time.Second))
	}
	if len(c.Nonce) < 32 {
		return fmt.Errorf("nonce too short")
	}
	return nil
}

// NewNonce returns a fresh nonce.
func NewNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CSRDigest is the hex SHA-256 a claim carries for its CSR.
func CSRDigest(csrPEM []byte) string {
	sum := sha256.Sum256(csrPEM)
	return hex.EncodeToString(sum[:])
}
