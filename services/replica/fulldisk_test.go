package replica

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/tandemhci/tandem/services/nbd"
)

// TestFullDisk: the primary's disk fills up under a thin volume. The
// write that does not fit fails with ENOSPC (QEMU then pauses the VM);
// every block stays readable with its old or new data, nothing
// acknowledged is lost, and after room is made the volume goes on and
// the copies agree again.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small file system")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "tandem-full", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	// The primary's copy: 32 MiB, thin, on a 12 MiB file system.
	a := newNodeIn(t, dir, "a", 32<<20, 7)
	b := newNode(t, "b", 32<<20, 7)
	if err := a.vol.Promote(1, false); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b, false)
	waitInSync(t, a, b)

	chunk := 1 << 20
	acked := map[int64]byte{}
	var full error
	for i := 0; i < 32; i++ {
		off := int64(i * chunk)
		p := bytes.Repeat([]byte{byte(i + 1)}, chunk)
		if err := a.vol.WriteAt(p, off, false); err != nil {
			full = err
			break
		}
		acked[off] = byte(i + 1)
	}
	if full == nil {
		t.Fatal("32 MiB fitted on a 12 MiB file system")
	}
	if !errors.Is(full, syscall.ENOSPC) || nbd.ErrnoOf(full) != uint32(nbd.ENOSPC) {
		t.Fatalf("a full disk gave %v, want ENOSPC", full)
	}
	t.Logf("disk full after %d MiB: %v", len(acked), full)
	// Everything acknowledged reads back; the failed write's range reads
	// as something (old or new), not a checksum error.
	got := make([]byte, chunk)
	for off, v := range acked {
		if err := a.vol.ReadAt(got, off); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{v}, chunk)) {
			t.Fatalf("acknowledged write at %d: %v", off, err)
		}
	}
	failedAt := int64(len(acked) * chunk)
	if err := a.vol.ReadAt(got, failedAt); err != nil {
		t.Fatalf("the range of the failed write is unreadable: %v", err)
	}
	// Room is made: writes go on, and the copies agree.
	if err := os.WriteFile(filepath.Join(dir, "filler"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v %s", err, out)
	}
	if err := a.vol.WriteAt(bytes.Repeat([]byte{0xEE}, chunk), failedAt, true); err != nil {
		t.Fatalf("write after making room: %v", err)
	}
	waitInSync(t, a, b)
	if err := a.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	a.close(t)
	b.close(t)
	sameFiles(t, a.data(), b.data())
}
