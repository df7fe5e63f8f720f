package provision

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/pki"
)

// BenchmarkBootHTTP fetches an installer's initramfs (32 MiB) the way a
// machine does: plain HTTP to the front door's port, passed on to this
// service's socket.
func BenchmarkBootHTTP(b *testing.B) {
	dir := b.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	initramfs := make([]byte, 32<<20)
	_, _ = rand.Read(initramfs)
	s, err := New(Config{
		Cluster: cluster.NewLocalClient(filepath.Join(dir, "none.sock")), Interface: "prov0", DataDir: dir,
		Socket: filepath.Join(dir, "provision.sock"), Loaders: fstest.MapFS{}, Port: 443, Logger: log,
		Installer: func(to string) error {
			for name, data := range map[string][]byte{FileKernel: []byte("k"), FileInitramfs: initramfs, fileVersion: []byte("bench")} {
				if err := os.WriteFile(filepath.Join(to, name), data, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.files.prepare(); err != nil {
		b.Fatal(err)
	}
	s.serving = &served{addr: netip.MustParseAddr("127.0.0.1"), diskBoot: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock, err := frontdoor.ListenSocket(s.cfg.Socket)
	if err != nil {
		b.Fatal(err)
	}
	go frontdoor.ServeSocket(ctx, sock, s.Handler(), log)
	src, err := frontdoor.NewTLSSource(pki.Files{Dir: filepath.Join(dir, "tls")}, filepath.Join(dir, "self"), log)
	if err != nil {
		b.Fatal(err)
	}
	fd, err := frontdoor.New(frontdoor.Config{TLS: src, Logger: log, Routes: []frontdoor.Route{
		{Name: "boot", Prefix: "/boot/", Method: "GET", Plain: true, Backend: frontdoor.UnixBackend(s.cfg.Socket, log)},
	}})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go fd.Serve(ctx, ln)
	url := "http://" + ln.Addr().String() + "/boot/files/" + FileInitramfs
	b.SetBytes(int64(len(initramfs)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(initramfs)) || resp.StatusCode != 200 {
			b.Fatal(resp.Status, n, err)
		}
	}
}
