package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fakeModules(t *testing.T) string {
	dir := t.TempDir()
	dep := `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/nls/nls_iso8859-1.ko:
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/watchdog/iTCO_wdt.ko:
`
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/tty/serial/8250/8250.ko\n"), 0o644)
	return dir
}

func TestModuleClosure(t *testing.T) {
	ms, err := readModuleSet(fakeModules(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ms.closure([]string{"ext4", "virtio-net", "8250", "iTCO_wdt"}, "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Each module after what it depends on, in the order asked.
	want := "kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/fs/ext4/ext4.ko kernel/net/core/failover.ko kernel/drivers/net/virtio_net.ko kernel/drivers/watchdog/iTCO_wdt.ko"
	if strings.Join(got, " ") != want {
		t.Errorf("closure\n got %v\nwant %v", got, want)
	}
}

func TestModuleClosureNamesTheBoardKey(t *testing.T) {
	ms, _ := readModuleSet(fakeModules(t))
	// nls_iso8859-1 mixes - and _: the boot-time loader cannot find it.
	_, err := ms.closure([]string{"ext4", "nosuch", "nls_iso8859_1"}, "board/x/board.yaml")
	for _, want := range []string{`board/x/board.yaml: modules[1]: kernel 6.1.0-56-amd64 has no module "nosuch"`, `modules[2]`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
}

func TestStagedModulesDepFormat(t *testing.T) {
	src := t.TempDir()
	modDir := filepath.Join(src, "lib/modules", kernelRelease)
	os.MkdirAll(modDir, 0o755)
	fm := fakeModules(t)
	for _, f := range []string{"modules.dep", "modules.builtin"} {
		b, _ := os.ReadFile(filepath.Join(fm, f))
		os.WriteFile(filepath.Join(modDir, f), b, 0o644)
	}
	for _, m := range []string{"kernel/fs/ext4/ext4.ko", "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko"} {
		os.MkdirAll(filepath.Dir(filepath.Join(modDir, m)), 0o755)
		os.WriteFile(filepath.Join(modDir, m), []byte("ko"), 0o644)
	}
	stage := t.TempDir()
	n, err := stageModules(src, stage, []string{"ext4"}, "b.yaml")
	if err != nil || n != 4 {
		t.Fatalf("staged %d: %v", n, err)
	}
	dep, _ := os.ReadFile(filepath.Join(stage, "lib/modules", kernelRelease, "modules.dep"))
	want := "kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n"
	if string(dep) != want {
		t.Errorf("modules.dep\n%q\nwant\n%q", dep, want)
	}
}
