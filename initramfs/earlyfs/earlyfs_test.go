package earlyfs

import (
	"bufio"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMounts(t *testing.T) {
	in := `rootfs / rootfs rw 0 0
proc /proc proc rw,nosuid 0 0
cgroup /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
/dev/vda5 /data\040dir ext4 rw 0 0
tmpfs /run tmpfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
`
	got, err := parseMounts(bufio.NewScanner(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/": "rootfs", "/proc": "proc", "/sys/fs/cgroup": "cgroup2", "/sys/fs/cgroup/memory": "cgroup",
		"/data dir": "ext4", "/run": "tmpfs",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestMountTableOrder(t *testing.T) {
	// A mount inside another of the table's mounts comes after it.
	seen := map[string]bool{}
	for _, m := range Mounts() {
		for _, parent := range []string{"/sys", "/dev"} {
			if strings.HasPrefix(m.Target, parent+"/") && !seen[parent] {
				t.Errorf("%s comes before %s", m.Target, parent)
			}
		}
		seen[m.Target] = true
	}
}
