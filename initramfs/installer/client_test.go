package installer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// frontDoor runs a real front door with a member certificate of a new CA:
// /boot/ca.crt in plain HTTP, and the installer's plan over TLS.
func frontDoor(t *testing.T) (addr string, ca *pki.CA) {
	t.Helper()
	ca, err := pki.NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	id := pki.Identity{Role: pki.RoleNode, ID: "n-a"}
	files := pki.Files{Dir: t.TempDir()}
	key, csr, _ := pki.NewKeyAndCSR(id, "node-a")
	cert, err := ca.Sign(csr, id, "node-a", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := files.Save(ca.PEM, cert, key, ca.Key); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := frontdoor.NewTLSSource(files, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := frontdoor.New(frontdoor.Config{TLS: src, Logger: log, Routes: []frontdoor.Route{
		{Name: "boot", Prefix: "/boot/", Plain: true, Backend: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, files.CACert())
		})},
		{Name: "api", Prefix: "/api/", Backend: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(cluster.HeaderMachineKey) != strings.Repeat("k", 64) {
				frontdoor.WriteError(w, http.StatusForbidden, "refused", "no key")
				return
			}
			frontdoor.WriteJSON(w, http.StatusOK, cluster.InstallPlan{State: "discovered"})
		})},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = fd.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), ca
}

// TestPinnedAPI: the installer talks to the API only through TLS chained
// to the CA whose fingerprint it was booted with.
func TestPinnedAPI(t *testing.T) {
	addr, ca := frontDoor(t)
	ctx := context.Background()
	c := newClient(addr, strings.Repeat("k", 64), "52:54:00:00:00:01")
	if err := c.pin(ctx, ca.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if p, err := c.plan(ctx); err != nil || p.State != "discovered" {
		t.Fatalf("plan over the pinned TLS: %+v %v", p, err)
	}
	// Another key is refused by the API: the installer stops asking.
	other := newClient(addr, strings.Repeat("x", 64), "52:54:00:00:00:01")
	if err := other.pin(ctx, ca.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	var stop *errStop
	if _, err := other.plan(ctx); err == nil || !errors.As(err, &stop) {
		t.Errorf("a refused key: %v", err)
	}
	// A fingerprint the served CA does not have: nothing is trusted.
	wrong := newClient(addr, strings.Repeat("k", 64), "52:54:00:00:00:01")
	if err := wrong.pin(ctx, strings.Repeat("ab", 32)); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("a wrong fingerprint was accepted: %v", err)
	}
	// The right fingerprint, but a server whose certificate another CA
	// signed (an impostor with a copy of the CA certificate).
	impostor, _ := frontDoor(t)
	c.host = impostor
	if _, err := c.plan(ctx); err == nil {
		t.Error("an impostor's certificate was accepted")
	}
}
