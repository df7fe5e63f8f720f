package boottest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/images/qemubox"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/storage"
)

// guestMessage is what the test guest prints on its serial port.
const guestMessage = "TANDEM-GUEST-BOOTED"

// guestMBR is the smallest guest there is: a boot sector that writes
// itself to its disk's second sector through the BIOS (so the guest's
// write goes down QEMU's NBD client into the replicated volume), then
// prints guestMessage on COM1 and halts. It boots in a second even under
// TCG inside TCG.
func guestMBR() []byte {
	code := []byte{
		0xFA,       // cli
		0x31, 0xC0, // xor ax, ax
		0x8E, 0xD8, // mov ds, ax
		0x8E, 0xC0, // mov es, ax
		0x8E, 0xD0, // mov ss, ax
		0xBC, 0x00, 0x7C, // mov sp, 0x7c00
		0xFB,             // sti
		0xBB, 0x00, 0x7C, // mov bx, 0x7c00: the sector to write is this one
		0xB8, 0x01, 0x03, // mov ax, 0x0301: write one sector
		0xB9, 0x02, 0x00, // mov cx, 0x0002: cylinder 0, sector 2
		0xB6, 0x00, // mov dh, 0: head 0 (dl is still the boot drive)
		0xCD, 0x13, // int 0x13
		0xBA, 0xF8, 0x03, // mov dx, 0x3f8: COM1
		0xBE, 0x2B, 0x7C, // mov si, message (0x7c00 + 43)
		0xAC,       // lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz halt
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp lodsb
		0xF4,       // halt: hlt
		0xEB, 0xFD, // jmp halt
	}
	mbr := make([]byte, 512)
	copy(mbr, code)
	copy(mbr[len(code):], guestMessage+"\r\n\x00")
	mbr[510], mbr[511] = 0x55, 0xAA
	return mbr
}

// vmFromReplicatedVolume makes a volume with node-a primary, puts the
// guest on it through the API, boots it with the image's own QEMU on
// node-a over NBD, and then reads node-b's copy: the guest's own write is
// there.
func vmFromReplicatedVolume(t *testing.T, ctx context.Context, box *qemubox.Box, creds qemubox.Credentials) {
	t.Helper()
	api := box.ClusterAPI(creds)
	a, b := box.Nodes[0], box.Nodes[1]
	var v directory.Volume
	if _, err := api.Do(ctx, "POST", "/api/v1/volumes", map[string]any{"name": "guest", "size_bytes": 16 << 20, "node": a.Name}, &v); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, a.API(creds), "guest primary on "+a.Name+", peer connected", func(s storage.VolumeStatus) bool {
		return s.Replica.Role == "primary" && s.Replica.Peer == "connected"
	})
	mbr := guestMBR()
	if code, body, err := api.Raw(ctx, "PUT", "/api/v1/storage/volumes/guest/image?format=raw", bytes.NewReader(mbr)); err != nil || code != 200 {
		t.Fatalf("upload the guest: %d %s %v", code, body, err)
	}

	con := a.Console()
	start := time.Now()
	out, err := con.Run("qemu-system-x86_64 -machine pc -m 16 -nodefaults -no-user-config -display none -serial file:/tmp/guest.log "+
		"-drive file=nbd+unix:///guest?socket=/run/tandem/nbd.sock,format=raw,if=virtio -daemonize -pidfile /tmp/guest.pid", time.Minute)
	if err != nil {
		t.Fatalf("start the guest: %v %s", err, out)
	}
	for {
		out, err = con.Run("cat /tmp/guest.log", 30*time.Second)
		if err == nil && strings.Contains(out, guestMessage) {
			break
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("the guest did not boot from the volume: %v\n%s", err, out)
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("guest booted from the replicated volume on %s in %.1fs", a.Name, time.Since(start).Seconds())
	if out, err := con.Run("kill $(cat /tmp/guest.pid)", 30*time.Second); err != nil {
		t.Fatalf("stop the guest: %v %s", err, out)
	}

	// The guest's write is on node-b's copy: make node-b primary (the VM
	// is stopped) and read the volume there.
	if _, err := api.Do(ctx, "POST", "/api/v1/volumes/guest/primary", map[string]any{"node": b.Name}, nil); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, b.API(creds), "guest primary on "+b.Name, func(s storage.VolumeStatus) bool { return s.Replica.Role == "primary" })
	code, img, err := b.API(creds).Raw(ctx, "GET", "/api/v1/storage/volumes/guest/image?format=raw", nil)
	if err != nil || code != 200 {
		t.Fatalf("export from %s: %d %v %s", b.Name, code, err, img[:min(len(img), 300)])
	}
	if len(img) != 16<<20 || !bytes.Equal(img[:512], mbr) || !bytes.Equal(img[512:1024], mbr) {
		t.Fatalf("%s's copy does not hold the guest and the sector it wrote (%d bytes)", b.Name, len(img))
	}
}

// waitVolume polls a node's storage status of the volume "guest".
func waitVolume(t *testing.T, ctx context.Context, api qemubox.APIClient, what string, cond func(storage.VolumeStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last []storage.VolumeStatus
	var err error
	for time.Now().Before(deadline) {
		last = nil
		_, err = api.Do(ctx, "GET", "/api/v1/storage/volumes", nil, &last)
		for _, s := range last {
			if s.Name == "guest" && cond(s) {
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("waited for %s: %+v %v", what, last, fmt.Sprint(err))
}
