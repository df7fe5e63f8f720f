// Package datadisk finds, prepares and mounts the persistent data
// partition (GPT name tandem-data) at boot. On first boot the partition is
// blank: it is grown to the end of the disk (the image was flashed onto a
// larger disk) and formatted ext4. Later boots check it (e2fsck -p) and
// mount it. A partition holding anything but ext4 or zeros is never
// formatted: the node boots without persistence and says why.
package datadisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/images/disklayout"
)

// Config is what Prepare needs; zero values take the defaults.
type Config struct {
	MountPoint    string        // default /data
	SysClassBlock string        // default /sys/class/block
	DevDir        string        // default /dev
	Wait          time.Duration // for the partition to appear; default 15s
	Logger        *slog.Logger
}

// Result says what Prepare found and did.
type Result struct {
	Device    string // e.g. /dev/vda5
	Grown     bool
	Formatted bool
}

// Content is what a partition holds.
type Content int

// Kinds of content.
const (
	Blank Content = iota // zeros: never used
	Ext4
	Unknown
)

// ErrNotFound means no disk has a tandem-data partition.
var ErrNotFound = errors.New("no " + disklayout.NameData + " partition on any disk")

// Prepare finds the data partition, grows and formats it on first boot,
// checks it, and mounts it.
func Prepare(ctx context.Context, cfg Config) (Result, error) {
	if cfg.MountPoint == "" {
		cfg.MountPoint = "/data"
	}
	if cfg.SysClassBlock == "" {
		cfg.SysClassBlock = "/sys/class/block"
	}
	if cfg.DevDir == "" {
		cfg.DevDir = "/dev"
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger

	part, disk, err := waitForPartition(ctx, cfg.SysClassBlock, disklayout.NameData, cfg.Wait)
	if err != nil {
		return Result{}, err
	}
	res := Result{Device: filepath.Join(cfg.DevDir, part)}
	content, err := Inspect(res.Device)
	if err != nil {
		return res, err
	}
	switch content {
	case Unknown:
		return res, fmt.Errorf("%s holds data that is not ext4: not formatting it; the node runs without persistence until it is wiped (dd zeros over its first MiB) or repaired", res.Device)
	case Blank:
		diskDev := filepath.Join(cfg.DevDir, disk)
		oldSize, newSize, err := growData(diskDev)
		switch {
		case err == nil:
			res.Grown = true
			log.Info("data partition grown to the end of the disk", "disk", diskDev, "from_mib", oldSize>>20, "to_mib", newSize>>20)
			if err := waitForSize(ctx, filepath.Join(cfg.SysClassBlock, part, "size"), newSize, 5*time.Second); err != nil {
				return res, err
			}
		case errors.Is(err, disklayout.ErrNotGrowable):
		default:
			// Growing is a nicety; a data partition of the image's size works.
			log.Warn("data partition not grown", "disk", diskDev, "err", err)
		}
		log.Info("formatting the data partition (first boot)", "device", res.Device)
		if err := run(ctx, "mke2fs", "-q", "-t", "ext4", "-L", disklayout.NameData, "-E", "lazy_itable_init=1,lazy_journal_init=1", "-F", res.Device); err != nil {
			return res, fmt.Errorf("format %s: %w", res.Device, err)
		}
		res.Formatted = true
	case Ext4:
		if err := fsck(ctx, res.Device); err != nil {
			return res, err
		}
	}
	if err := os.MkdirAll(cfg.MountPoint, 0o755); err != nil {
		return res, err
	}
	if err := unix.Mount(res.Device, cfg.MountPoint, "ext4", unix.MS_NOATIME|unix.MS_NODEV, ""); err != nil {
		return res, fmt.Errorf("mount %s on %s: %w", res.Device, cfg.MountPoint, err)
	}
	return res, nil
}

// waitForPartition looks for a partition by GPT name in sysfs (the kernel
// puts it in the partition's uevent as PARTNAME) and returns the
// partition's and its disk's device names.
func waitForPartition(ctx context.Context, sysClassBlock, name string, wait time.Duration) (part, disk string, err error) {
	deadline := time.Now().Add(wait)
	for {
		part, disk, err = FindPartition(sysClassBlock, name)
		if err == nil || !errors.Is(err, ErrNotFound) || time.Now().After(deadline) {
			return part, disk, err
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FindPartition returns the first partition named name, and its disk.
// Two disks carrying the name (a second Tandem disk plugged in) is an
// error: guessing could mount the wrong node's data.
func FindPartition(sysClassBlock, name string) (part, disk string, err error) {
	entries, err := os.ReadDir(sysClassBlock)
	if err != nil {
		return "", "", fmt.Errorf("list block devices: %w", err)
	}
	var found []string
	for _, e := range entries {
		uevent, err := os.ReadFile(filepath.Join(sysClassBlock, e.Name(), "uevent"))
		if err != nil {
			continue
		}
		if ueventValue(uevent, "DEVTYPE") == "partition" && ueventValue(uevent, "PARTNAME") == name {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return "", "", ErrNotFound
	case 1:
	default:
		return "", "", fmt.Errorf("partitions %v are all named %s: remove the disk that is not this node's", found, name)
	}
	// The partition's sysfs directory sits inside its disk's.
	real, err := filepath.EvalSymlinks(filepath.Join(sysClassBlock, found[0]))
	if err != nil {
		return "", "", err
	}
	return found[0], filepath.Base(filepath.Dir(real)), nil
}

func ueventValue(uevent []byte, key string) string {
	for _, line := range strings.Split(string(uevent), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v
		}
	}
	return ""
}

// Inspect says whether a partition is blank, ext4 or something else.
func Inspect(device string) (Content, error) {
	f, err := os.Open(device)
	if err != nil {
		return Unknown, err
	}
	defer f.Close()
	head := make([]byte, 1<<20)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Unknown, fmt.Errorf("read %s: %w", device, err)
	}
	return classify(head[:n]), nil
}

// classify looks at the start of a partition: the ext2/3/4 superblock sits
// at 1024 with its magic 0xEF53 at offset 56.
func classify(head []byte) Content {
	if len(head) >= 1024+58 && binary.LittleEndian.Uint16(head[1024+56:]) == 0xEF53 {
		return Ext4
	}
	if len(bytes.Trim(head, "\x00")) == 0 {
		return Blank
	}
	return Unknown
}

// growData extends the data partition to the end of the disk and has the
// kernel read the new table.
func growData(diskDev string) (oldSize, newSize int64, err error) {
	d, err := diskfs.Open(diskDev)
	if err != nil {
		return 0, 0, err
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return 0, 0, err
	}
	tab, ok := pt.(*gpt.Table)
	if !ok {
		return 0, 0, fmt.Errorf("%s: not a GPT disk", diskDev)
	}
	oldSize, newSize, err = disklayout.GrowData(tab, d.Size)
	if err != nil {
		return oldSize, newSize, err
	}
	if err := d.Partition(tab); err != nil {
		return 0, 0, fmt.Errorf("write partition table: %w", err)
	}
	if err := d.ReReadPartitionTable(); err != nil {
		return 0, 0, fmt.Errorf("kernel re-read of the partition table: %w", err)
	}
	return oldSize, newSize, nil
}

// waitForSize waits until sysfs shows the partition's new size (in 512-byte
// sectors), as udev-less systems see the re-read asynchronously.
func waitForSize(ctx context.Context, sizeFile string, want int64, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(sizeFile)
		var sectors int64
		if err == nil {
			fmt.Sscan(strings.TrimSpace(string(b)), &sectors)
		}
		if sectors*512 == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s shows %d sectors after the re-read, want %d", sizeFile, sectors, want/512)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fsck runs e2fsck in preen mode: exit 0 clean, 1 errors corrected; more
// means errors left that need an operator.
func fsck(ctx context.Context, device string) error {
	err := run(ctx, "e2fsck", "-p", device)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("e2fsck %s: %w (errors left: repair from the recovery shell with e2fsck -f %s)", device, err, device)
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			return fmt.Errorf("%s: %w: %s", name, err, msg)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
