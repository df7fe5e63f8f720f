package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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
	addr := startServer(t, fstest.MapFS{"undionly.kpxe": {Data: big}, "ipxe/snponly.efi": {Data: []byte("efi")}})
	c, err := tftp.NewClient(addr)
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

// startServer serves files on a loopback port until the test ends.
func startServer(tb testing.TB, files fs.FS) string {
	tb.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{Listen: conn.LocalAddr().String(), Files: files, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	return conn.LocalAddr().String()
}

// FuzzRequest sends whatever the fuzzer makes to a real server as a
// request packet (truncated frames, no NUL, long and escaping names,
// unknown options and opcodes) and checks that the server answers a
// good request afterwards and never sends a file outside its set.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"\x00\x01undionly.kpxe\x00octet\x00",
		"\x00\x01undionly.kpxe\x00octet\x00blksize\x001428\x00tsize\x000\x00windowsize\x008\x00",
		"\x00\x01../../etc/passwd\x00octet\x00",
		"\x00\x01undionly.kpxe",
		"\x00\x01\x00\x00",
		"\x00\x02upload\x00octet\x00",
		"\x00\x09x\x00",
		"\x00",
		"\x00\x01" + strings.Repeat("a", 600) + "\x00octet\x00",
		"\x00\x01undionly.kpxe\x00octet\x00blksize\x00-1\x00",
	} {
		f.Add([]byte(s))
	}
	addr := startServer(f, fstest.MapFS{"undionly.kpxe": {Data: []byte("ipxe loader")}, "secret/key": {Data: []byte("k")}})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(pkt); err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		buf := make([]byte, 70000)
		// Answers come from the transfer's own port: read on a listener.
		_, _ = c.Read(buf)
		// The server still serves.
		cl, err := tftp.NewClient(addr)
		if err != nil {
			t.Fatal(err)
		}
		cl.SetTimeout(time.Second)
		wt, err := cl.Receive("undionly.kpxe", "octet")
		if err != nil {
			t.Fatalf("after %q the server no longer serves: %v", pkt, err)
		}
		var b bytes.Buffer
		if _, err := wt.WriteTo(&b); err != nil || b.String() != "ipxe loader" {
			t.Fatalf("after %q: %q %v", pkt, b.String(), err)
		}
	})
}

// BenchmarkTFTP fetches an iPXE loader's worth of bytes (snponly.efi is
// 174 KB) over loopback, with the block sizes ROMs ask for.
func BenchmarkTFTP(b *testing.B) {
	loader := make([]byte, 174_000)
	_, _ = rand.Read(loader)
	addr := startServer(b, fstest.MapFS{"snponly.efi": {Data: loader}})
	for _, blk := range []int{512, 1428} {
		b.Run("blksize="+strconv.Itoa(blk), func(b *testing.B) {
			c, err := tftp.NewClient(addr)
			if err != nil {
				b.Fatal(err)
			}
			c.SetBlockSize(blk)
			b.SetBytes(int64(len(loader)))
			for i := 0; i < b.N; i++ {
				wt, err := c.Receive("snponly.efi", "octet")
				if err != nil {
					b.Fatal(err)
				}
				if n, err := wt.WriteTo(io.Discard); err != nil || n != int64(len(loader)) {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// TestRealClients fetches a loader with three real TFTP clients: curl
// (blksize), busybox's tftp (blksize, tsize) and atftp, which also asks
// for a window (RFC 7440) that the server does not grant: the transfer
// falls back to one block at a time, as RFC 2347 says.
func TestRealClients(t *testing.T) {
	loader := make([]byte, 300_000)
	_, _ = rand.Read(loader)
	addr := startServer(t, fstest.MapFS{"undionly.kpxe": {Data: loader}})
	host, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
	}{
		{"curl", []string{"curl", "-sS", "--tftp-blksize", "1428", "-o", "OUT", "tftp://" + addr + "/undionly.kpxe"}},
		{"busybox", []string{"busybox", "tftp", "-g", "-b", "1428", "-r", "undionly.kpxe", "-l", "OUT", host, port}},
		{"atftp", []string{"atftp", "--option", "blksize 1428", "--option", "tsize 0", "--option", "windowsize 8", "-g", "-r", "undionly.kpxe", "-l", "OUT", host, port}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.args[0]); err != nil {
				t.Fatalf("%s is not installed (scripts/deps.sh installs it): %v", c.args[0], err)
			}
			out := filepath.Join(dir, c.name)
			args := slices.Clone(c.args)
			for i := range args {
				args[i] = strings.ReplaceAll(args[i], "OUT", out)
			}
			if msg, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, msg)
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, loader) {
				t.Errorf("%s fetched %d bytes (%v), want the %d of the file", c.name, len(got), err, len(loader))
			}
		})
	}
}
