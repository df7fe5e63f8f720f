// Package earlyfs mounts the kernel file systems the node needs before
// anything else runs: proc, sys, devtmpfs, devpts, tmpfs on /run and /tmp,
// and the unified cgroup2 hierarchy.
//
// u-root's init has usually mounted most of these already; each mount is
// skipped when its target already has the right file system. u-root
// mounts cgroup v1 controllers under a tmpfs on /sys/fs/cgroup; those are
// unmounted so the unified hierarchy can take their place.
package earlyfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one file system to mount.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// Mounts returns the table, in mount order.
func Mounts() []Mount {
	const nosuid = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []Mount{
		{"proc", "/proc", "proc", nosuid, ""},
		{"sysfs", "/sys", "sysfs", nosuid, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, "nsdelegate"},
	}
}

// MountAll mounts every entry of the table that is not mounted yet. It goes
// on after a failure and returns every failure.
func MountAll() error {
	var errs []error
	for _, m := range Mounts() {
		mounted, err := mountedTypes()
		if err != nil {
			return err
		}
		if mounted[m.Target] == m.FSType {
			continue
		}
		if m.FSType == "cgroup2" {
			unmountV1Cgroups(mounted)
		}
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.Target, err))
			continue
		}
		if err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data); err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.FSType, m.Target, err))
		}
	}
	return errors.Join(errs...)
}

// unmountV1Cgroups removes u-root's cgroup v1 mounts (deepest first) and
// the tmpfs under them, so cgroup2 can be mounted on /sys/fs/cgroup.
func unmountV1Cgroups(mounted map[string]string) {
	var targets []string
	for target := range mounted {
		if strings.HasPrefix(target, "/sys/fs/cgroup/") {
			targets = append(targets, target)
		}
	}
	for _, t := range targets {
		_ = unix.Unmount(t, unix.MNT_DETACH)
	}
	if _, ok := mounted["/sys/fs/cgroup"]; ok {
		_ = unix.Unmount("/sys/fs/cgroup", unix.MNT_DETACH)
	}
}

// mountedTypes maps each mount point to its file system type; the last
// mount on a point wins, as it is the one visible.
func mountedTypes() (map[string]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if os.IsNotExist(err) {
		return map[string]string{}, nil // /proc itself is not mounted yet
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMounts(bufio.NewScanner(f))
}

func parseMounts(sc *bufio.Scanner) (map[string]string, error) {
	out := map[string]string{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 {
			out[unescapeMount(f[1])] = f[2]
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes /proc/mounts uses for spaces and
// the like (\040).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
