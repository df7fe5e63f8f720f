package qemubox

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/nstest/netns"
)

// TestGuestIP is where the box's test guest answers on the site network.
const TestGuestIP = LANPrefix + "50"

// TestGuestBootOptions make the test guest's kernel boot a quarter
// faster under TCG (3.7 s to 2.8 s; a QEMU inside a TCG node multiplies
// both by some sixty): no kernel messages on the emulated UART but
// errors, and no self-tests of crypto algorithms the guest never uses.
const TestGuestBootOptions = "quiet cryptomgr.notests"

// CreateTestGuest defines the test guest (images/testguest, shipped in
// the image) as an HA VM with a replicated disk, started on node, unless
// it exists.
func (b *Box) CreateTestGuest(ctx context.Context, cr Credentials, name, node string) (directory.VM, error) {
	api := b.ClusterAPI(cr)
	var vm directory.VM
	if _, err := api.Do(ctx, "GET", "/api/v1/vms/"+name, nil, &vm); err == nil {
		return vm, nil
	}
	if _, err := api.Do(ctx, "POST", "/api/v1/volumes", map[string]any{"name": name + "-disk", "size_bytes": 16 << 20, "node": node}, nil); err != nil &&
		!strings.Contains(err.Error(), "exists") {
		return vm, err
	}
	_, err := api.Do(ctx, "POST", "/api/v1/vms", map[string]any{
		"name": name, "description": "Tandem's test guest: GET / counts, the count is kept on its disk",
		"cpus": 1, "memory_mib": 128, "ha": true, "start": true, "node": node,
		"disks": []map[string]any{{"volume": name + "-disk"}},
		"nics":  []map[string]any{{"network": "lan"}},
		"boot": map[string]any{"kernel": "testguest/vmlinux", "initrd": "testguest/initrd.gz",
			"cmdline": TestGuestBootOptions + " tandem.ip=" + TestGuestIP + "/24 tandem.gw=" + HostIP},
	}, &vm)
	return vm, err
}

// GuestCount asks the test guest's counter from the site network.
func (b *Box) GuestCount(ctx context.Context, timeout time.Duration) (int, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.Dial(ctx, b.site.ns, network, addr)
		},
		DisableKeepAlives: true,
	}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+TestGuestIP+"/", nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(body), "count ")))
	if err != nil {
		return 0, fmt.Errorf("the guest answered %q", body)
	}
	return n, nil
}

// WaitGuest waits until the test guest answers and returns its count.
func (b *Box) WaitGuest(ctx context.Context, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := b.GuestCount(ctx, 2*time.Second)
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("the test guest did not answer at %s within %v: %w", TestGuestIP, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
