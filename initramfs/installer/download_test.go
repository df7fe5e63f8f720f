package installer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/provision"
)

// TestDownload: the files are taken only as the manifest describes them;
// a bad manifest, a changed file or a longer one fails the step by name.
func TestDownload(t *testing.T) {
	kernel, initramfs := []byte("kernel bytes"), []byte(strings.Repeat("initramfs ", 1000))
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	good := provision.Manifest{Version: "v1", Files: []provision.ManifestFile{
		{Name: provision.FileKernel, Size: int64(len(kernel)), SHA256: sum(kernel)},
		{Name: provision.FileInitramfs, Size: int64(len(initramfs)), SHA256: sum(initramfs)},
	}}
	for _, tc := range []struct {
		name     string
		manifest provision.Manifest
		serve    []byte // what /boot/files/initramfs.cpio.zst answers
		err      string
	}{
		{name: "as described", manifest: good, serve: initramfs},
		{name: "changed on the way", manifest: good, serve: append([]byte("X"), initramfs[1:]...), err: "the manifest says"},
		{name: "longer than described", manifest: good, serve: append(initramfs, 'x'), err: "more than the"},
		{name: "no usable hash", manifest: provision.Manifest{Files: []provision.ManifestFile{{Name: provision.FileKernel, Size: 3, SHA256: "ab"}}}, err: "no usable size and SHA-256"},
		{name: "a file missing", manifest: provision.Manifest{Files: good.Files[:1]}, err: "lists no initramfs.cpio.zst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/boot/manifest.json":
					frontdoor.WriteJSON(w, 200, tc.manifest)
				case "/boot/files/" + provision.FileKernel:
					_, _ = w.Write(kernel)
				case "/boot/files/" + provision.FileInitramfs:
					_, _ = w.Write(tc.serve)
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			in := &Installer{
				cfg: Config{WorkDir: t.TempDir()}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				api: newClient(strings.TrimPrefix(srv.URL, "http://"), "k", "52:54:00:00:00:01"),
			}
			out, err := in.stepDownload(context.Background())
			if tc.err == "" {
				if err != nil || in.files == nil || !strings.Contains(out, "version v1") {
					t.Fatalf("%q %v", out, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
}
