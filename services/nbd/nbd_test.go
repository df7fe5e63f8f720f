package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// memDisk is a block device in memory, for testing the protocol alone.
type memDisk struct {
	mu      sync.Mutex
	data    []byte
	flushes int
	fuas    int
}

func (m *memDisk) Size() int64 { return int64(len(m.data)) }
func (m *memDisk) ReadAt(p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.data[off:])
	return nil
}
func (m *memDisk) WriteAt(p []byte, off int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	if fua {
		m.fuas++
	}
	return nil
}
func (m *memDisk) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushes++
	return nil
}
func (m *memDisk) Trim(off, n int64) error { return m.WriteZeroes(off, n, false) }
func (m *memDisk) WriteZeroes(off, n int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}

func serve(t *testing.T, exp Export) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{
		Lookup: func(name string) (Export, bool) { return exp, name == exp.Name },
		Names:  func() []string { return []string{exp.Name} },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock
}

func qemuIO(t *testing.T, uri string, cmds ...string) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("needs qemu-io (qemu-utils)")
	}
	args := []string{"-f", "raw", uri}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
	}
	return string(out)
}

// TestQEMUClient drives the server with QEMU's own NBD client.
func TestQEMUClient(t *testing.T) {
	disk := &memDisk{data: make([]byte, 8<<20)}
	sock := serve(t, Export{Name: "vol", Backend: disk, MinBlock: 4096})
	uri := "nbd+unix:///vol?socket=" + sock
	out := qemuIO(t, uri,
		"write -P 0xab 0 1M",
		"write -f -P 0xcd 1M 64k", // FUA
		"aio_write -P 0x11 2M 4k", "aio_write -P 0x22 3M 4k", "aio_flush",
		"flush",
		"read -P 0xab 0 1M",
		"read -P 0xcd 1M 64k",
		"read -P 0x11 2M 4k",
		"write -z 0 64k",
		"read -P 0 0 64k",
		"discard 4M 1M",
	)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	if !bytes.Equal(disk.data[3<<20:3<<20+4096], bytes.Repeat([]byte{0x22}, 4096)) {
		t.Error("the asynchronous write did not land")
	}
	if disk.flushes == 0 || disk.fuas == 0 {
		t.Errorf("flushes %d, FUA writes %d: QEMU's flush and FUA did not reach the backend", disk.flushes, disk.fuas)
	}
	// Past the end: QEMU refuses before sending; qemu-img info reads the
	// size the server announced.
	info, err := exec.Command("qemu-img", "info", "--output=json", uri).CombinedOutput()
	if err != nil || !strings.Contains(string(info), `"virtual-size": 8388608`) {
		t.Errorf("qemu-img info: %v\n%s", err, info)
	}
}

// client is a hand-made NBD client for what QEMU never sends.
type client struct {
	t *testing.T
	c net.Conn
}

func dial(t *testing.T, sock, export string) *client {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	hello := make([]byte, 18)
	if _, err := c.Read(hello); err != nil {
		t.Fatal(err)
	}
	_ = binary.Write(c, binary.BigEndian, uint32(clientFlagFixedNewstyle|clientFlagNoZeroes))
	// NBD_OPT_EXPORT_NAME: no block sizes, so unaligned requests are fine.
	_ = binary.Write(c, binary.BigEndian, uint64(magicOpt))
	_ = binary.Write(c, binary.BigEndian, uint32(optExportName))
	_ = binary.Write(c, binary.BigEndian, uint32(len(export)))
	c.Write([]byte(export))
	var size uint64
	var flags uint16
	if err := binary.Read(c, binary.BigEndian, &size); err != nil {
		t.Fatal(err)
	}
	_ = binary.Read(c, binary.BigEndian, &flags)
	return &client{t: t, c: c}
}

func (cl *client) request(typ uint16, off uint64, length uint32, payload []byte) uint32 {
	cl.t.Helper()
	var h [requestSize]byte
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], 77)
	binary.BigEndian.PutUint64(h[16:], off)
	binary.BigEndian.PutUint32(h[24:], length)
	cl.c.Write(append(h[:], payload...))
	var r [16]byte
	if _, err := cl.c.Read(r[:]); err != nil {
		cl.t.Fatal(err)
	}
	if binary.BigEndian.Uint32(r[0:]) != magicSimpleReply || binary.BigEndian.Uint64(r[8:]) != 77 {
		cl.t.Fatalf("reply %x", r)
	}
	errno := binary.BigEndian.Uint32(r[4:])
	if errno == 0 && typ == cmdRead {
		buf := make([]byte, length)
		if _, err := cl.c.Read(buf); err != nil {
			cl.t.Fatal(err)
		}
	}
	return errno
}

func TestBadRequestsGetErrnos(t *testing.T) {
	disk := &memDisk{data: make([]byte, 1<<20)}
	sock := serve(t, Export{Name: "vol", Backend: disk, MinBlock: 4096})
	ro := serve(t, Export{Name: "ro", Backend: &memDisk{data: make([]byte, 1<<20)}, ReadOnly: true})
	cl := dial(t, sock, "vol")
	tests := []struct {
		name    string
		typ     uint16
		off     uint64
		length  uint32
		payload []byte
		want    Errno
	}{
		{"read past the end", cmdRead, 1 << 20, 4096, nil, EINVAL},
		{"read wrapping around", cmdRead, ^uint64(0) - 10, 4096, nil, EINVAL},
		{"write past the end", cmdWrite, 1<<20 - 2, 4, []byte{1, 2, 3, 4}, ENOSPC},
		{"read too large", cmdRead, 0, MaxRequest + 1, nil, EINVAL},
		{"unknown command", 99, 0, 0, nil, EINVAL},
		{"unaligned write without the block size told", cmdWrite, 3, 5, []byte("hello"), 0},
		{"trim past the end", cmdTrim, 0, 2 << 20, nil, ENOSPC},
	}
	for _, tt := range tests {
		if got := cl.request(tt.typ, tt.off, tt.length, tt.payload); got != uint32(tt.want) {
			t.Errorf("%s: errno %d, want %d", tt.name, got, tt.want)
		}
	}
	if string(disk.data[3:8]) != "hello" {
		t.Error("the unaligned write did not land")
	}
	// The connection survived all of it.
	if got := cl.request(cmdFlush, 0, 0, nil); got != 0 {
		t.Errorf("flush after bad requests: errno %d", got)
	}
	if got := dial(t, ro, "ro").request(cmdWrite, 0, 4, []byte("nope")); got != uint32(EPERM) {
		t.Errorf("write to a read-only export: errno %d, want EPERM", got)
	}
}

func TestParseGo(t *testing.T) {
	mk := func(name string, infos ...uint16) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		b = append(b, name...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
		for _, i := range infos {
			b = binary.BigEndian.AppendUint16(b, i)
		}
		return b
	}
	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"name and infos", mk("vol", infoBlockSize, infoName), true},
		{"empty name", mk(""), true},
		{"too short", []byte{0, 0}, false},
		{"name longer than the data", append(binary.BigEndian.AppendUint32(nil, 100), "ab\x00\x00"...), false},
		{"infos cut short", mk("vol", 1, 2)[:11], false},
		{"name length overflowing", binary.BigEndian.AppendUint32(nil, 0xffffffff), false},
	}
	for _, tt := range tests {
		_, err := parseGo(tt.data)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	var h [requestSize]byte
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	f.Add(h[:])
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseRequest(b)
		if err == nil && len(b) < requestSize {
			t.Fatalf("parsed %+v from %d bytes", req, len(b))
		}
	})
}

// FuzzServeConn feeds arbitrary client bytes (handshake and requests) to
// a server: it must answer or hang up, never panic or write out of range.
func FuzzServeConn(f *testing.F) {
	seed := binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle)
	seed = binary.BigEndian.AppendUint64(seed, magicOpt)
	seed = binary.BigEndian.AppendUint32(seed, optExportName)
	seed = binary.BigEndian.AppendUint32(seed, 3)
	seed = append(seed, "vol"...)
	req := make([]byte, requestSize)
	binary.BigEndian.PutUint32(req[0:], magicRequest)
	binary.BigEndian.PutUint16(req[6:], cmdWrite)
	binary.BigEndian.PutUint32(req[24:], 4)
	f.Add(append(append(seed, req...), 1, 2, 3, 4))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, in []byte) {
		disk := &memDisk{data: make([]byte, 64<<10)}
		s := New(Config{Lookup: func(name string) (Export, bool) {
			return Export{Name: "vol", Backend: disk}, name == "vol"
		}})
		srv, cl := net.Pipe()
		done := make(chan struct{})
		go func() {
			_ = s.ServeConn(context.Background(), srv)
			close(done)
		}()
		go func() {
			buf := make([]byte, 64<<10)
			for {
				if _, err := cl.Read(buf); err != nil {
					return
				}
			}
		}()
		_ = cl.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = cl.Write(in)
		cl.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server did not end after the client hung up")
		}
	})
}
