package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/pin/tftp/v3"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"undionly.kpxe", "undionly.kpxe", true},
		{"/snponly.efi", "snponly.efi", true},
		{"ipxe/snponly.efi", "ipxe/snponly.efi", true},
		{"", "", false},
		{"/", "", false},
		{"../etc/passwd", "", false},
		{"ipxe/../../etc/passwd", "", false},
		{"./undionly.kpxe", "", false},
		{"ipxe//x", "", false},
		{"ipxe\\..\\x", "", false},
		{"undionly.kpxe\x00.txt", "", false},
		{"bad\nname", "", false},
		{strings.Repeat("a", 200), "", false},
	}
	for _, tt := range tests {
		got, err := CleanName(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("CleanName(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestServe fetches files over real UDP on loopback with pin/tftp's
// client: with block size and transfer size negotiated, by a plain
// name and with a leading slash; a traversal, a missing file and a
// write are refused, and the server goes on serving.
func TestServe(t *testing.T) {
	big := make([]byte, 300_000)
	_, _ = rand.Read(big)
	files := fstest.MapFS{"undionly.kpxe": {Data: big}, "ipxe/snponly.efi": {Data: []byte("efi")}}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listen: conn.LocalAddr().String(), Files: files, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c, err := tftp.NewClient(conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	c.SetBlockSize(1428)
	c.RequestTSize(true)
	get := func(name string) ([]byte, int64, error) {
		wt, err := c.Receive(name, "octet")
		if err != nil {
			return nil, 0, err
		}
		size, _ := wt.(tftp.IncomingTransfer).Size()
		var b bytes.Buffer
		_, err = wt.WriteTo(&b)
		return b.Bytes(), size, err
	}
	for _, name := range []string{"undionly.kpxe", "/undionly.kpxe"} {
		got, size, err := get(name)
		if err != nil || !bytes.Equal(got, big) || size != int64(len(big)) {
			t.Errorf("%s: %d bytes, tsize %d, %v", name, len(got), size, err)
		}
	}
	for _, name := range []string{"../undionly.kpxe", "ipxe/../undionly.kpxe", "missing.efi", "ipxe"} {
		if _, _, err := get(name); err == nil {
			t.Errorf("%s was served", name)
		}
	}
	rf, err := c.Send("upload.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
	}
	if err == nil {
		t.Error("a write was accepted")
	}
	if got, _, err := get("ipxe/snponly.efi"); err != nil || string(got) != "efi" {
		t.Errorf("after the refusals: %q %v", got, err)
	}
}

// FuzzCleanName: whatever the name, no panic, and what is accepted is a
// plain path inside the files.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "/a/b", "../x", "a\x00b", "a\\b", "..", "a/./b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := CleanName(name)
		if err != nil {
			return
		}
		if !fs.ValidPath(clean) || strings.Contains(clean, "..") && strings.Contains("/"+clean+"/", "/../") || strings.ContainsAny(clean, "\\\x00") {
			t.Fatalf("CleanName(%q) accepted %q", name, clean)
		}
	})
}
