package installer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/disklayout"
	"github.com/tandemhci/tandem/initramfs/settings"
	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/provision"
)

// targetDisk is the disk the firmware goes on.
type targetDisk struct {
	directory.MachineDisk
	dev string // /dev/vda
}

// downloaded are the image's files, fetched and checked.
type downloaded struct {
	manifest  provision.Manifest
	kernel    string
	initramfs string
}

// PickDisk applies the board's system-disk rule to the machine's disks:
// the first that matches (by name), not removable unless the rule names
// it, and big enough for the rule and for the layout.
func PickDisk(rule board.DiskRule, disks []directory.MachineDisk) (directory.MachineDisk, error) {
	var seen []string
	for _, d := range disks {
		m := rule.Match
		if (m.Driver != "" && m.Driver != d.Driver) || (m.Serial != "" && m.Serial != d.Serial) || (m.PCIPath != "" && m.PCIPath != d.PCIPath) {
			seen = append(seen, fmt.Sprintf("%s (%s at %s)", d.Name, d.Driver, d.PCIPath))
			continue
		}
		if d.Removable && m == (board.DiskMatch{}) {
			seen = append(seen, d.Name+" (removable)")
			continue
		}
		need := max(int64(rule.MinSize), disklayout.MinDiskSize())
		if d.SizeBytes < need {
			return d, fmt.Errorf("disk %s is smaller than the image: %d MiB, and the firmware needs at least %d MiB", d.Name, d.SizeBytes>>20, need>>20)
		}
		return d, nil
	}
	return directory.MachineDisk{}, fmt.Errorf("no disk matches the board's system-disk rule %+v (found: %s)", rule.Match, strings.Join(seen, ", "))
}

func (in *Installer) stepDisk() (string, error) {
	disks := Disks(filepath.Join(in.cfg.Root, "sys/block"))
	d, err := PickDisk(in.cfg.Board.Disks.System, disks)
	if err != nil {
		return "", err
	}
	in.disk = &targetDisk{MachineDisk: d, dev: "/dev/" + d.Name}
	return fmt.Sprintf("%s: %.1f GiB %s %s at %s, serial %q", d.Name, float64(d.SizeBytes)/(1<<30), d.Driver, d.Model, d.PCIPath, d.Serial), nil
}

// stepDownload fetches the manifest and the files it lists into RAM, each
// checked by size and SHA-256; a dropped transfer is tried again.
func (in *Installer) stepDownload(ctx context.Context) (string, error) {
	var mb strings.Builder
	if err := in.api.fetch(ctx, "/boot/manifest.json", &mb, 1<<20); err != nil {
		return "", err
	}
	var m provision.Manifest
	if err := json.Unmarshal([]byte(mb.String()), &m); err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	if err := os.MkdirAll(in.cfg.WorkDir, 0o755); err != nil {
		return "", err
	}
	dl := &downloaded{manifest: m}
	var out []string
	for _, name := range []string{provision.FileKernel, provision.FileInitramfs} {
		mf, ok := m.File(name)
		if !ok {
			return "", fmt.Errorf("the manifest lists no %s", name)
		}
		if b, err := hex.DecodeString(mf.SHA256); err != nil || len(b) != sha256.Size || mf.Size <= 0 {
			return "", fmt.Errorf("the manifest's entry for %s has no usable size and SHA-256: %+v", name, mf)
		}
		path := filepath.Join(in.cfg.WorkDir, name)
		start := time.Now()
		var err error
		for attempt := 1; attempt <= 3; attempt++ {
			if err = in.download(ctx, mf, path); err == nil {
				break
			}
			in.log.Warn("download failed", "file", name, "attempt", attempt, "err", err)
			sleep(ctx, time.Duration(attempt)*time.Second)
		}
		if err != nil {
			return strings.Join(out, "\n"), err
		}
		secs := time.Since(start).Seconds()
		out = append(out, fmt.Sprintf("%s: %d bytes, sha256 %s…, %.1f s (%.1f MB/s)", name, mf.Size, mf.SHA256[:12], secs, float64(mf.Size)/1e6/max(secs, 0.001)))
		if name == provision.FileKernel {
			dl.kernel = path
		} else {
			dl.initramfs = path
		}
	}
	in.files = dl
	return "version " + m.Version + "\n" + strings.Join(out, "\n"), nil
}

func (in *Installer) download(ctx context.Context, mf provision.ManifestFile, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	h := sha256.New()
	err = in.api.fetch(ctx, "/boot/files/"+mf.Name, io.MultiWriter(f, h), mf.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); st.Size() != mf.Size || got != mf.SHA256 {
		return fmt.Errorf("%s: got %d bytes with sha256 %s, the manifest says %d bytes with %s", mf.Name, st.Size(), got, mf.Size, mf.SHA256)
	}
	return nil
}

// system is what goes on the disk: the downloaded kernel and initramfs,
// and GRUB from this image (the same build).
func (in *Installer) system() disklayout.System {
	boot := func(p string) string { return filepath.Join(in.cfg.BootDir, filepath.Base(p)) }
	return disklayout.System{
		Kernel: in.files.kernel, Initramfs: in.files.initramfs, Version: in.files.manifest.Version, Board: in.cfg.Board,
		EFILoader: boot(disklayout.BootEFI), BIOSCore: boot(disklayout.BootBIOSCore), BIOSBoot: boot(disklayout.BootBIOSMBR),
	}
}

func (in *Installer) stepWipe() (string, error) {
	if err := disklayout.Wipe(in.disk.dev); err != nil {
		return "", err
	}
	return in.disk.dev + ": partition tables and boot code removed", nil
}

func (in *Installer) stepWrite() (string, error) {
	if err := disklayout.WriteSystem(in.disk.dev, in.system()); err != nil {
		return "", err
	}
	return in.disk.dev + ": ESP (GRUB for UEFI), slot A (" + in.files.manifest.Version + "), GRUB for BIOS", nil
}

func (in *Installer) stepVerify() (string, error) {
	if err := disklayout.VerifySystem(in.disk.dev, in.system()); err != nil {
		return "", err
	}
	return in.disk.dev + ": read back and matched by SHA-256", nil
}

// stepData makes the data partition's file system, before the table
// that names it exists, seeded with the node's name and its join: the
// installed firmware's first boot takes its hostname from the one and
// the cluster agent joins with the other.
func (in *Installer) stepData(ctx context.Context) (string, error) {
	p := in.current
	if p.Name == "" || p.Token == "" {
		return "", errors.New("the plan carries no node name or join token")
	}
	seed := filepath.Join(in.cfg.WorkDir, "seed")
	_ = os.RemoveAll(seed)
	conf := filepath.Join(seed, settings.DataFile)
	join := filepath.Join(seed, "cluster", "join.json")
	for _, d := range []string{filepath.Dir(conf), filepath.Dir(join)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(conf, []byte("# Written by the installer.\n"+settings.KeyHostname+" = "+p.Name+"\n"), 0o644); err != nil {
		return "", err
	}
	b, _ := json.Marshal(cluster.JoinRequest{Token: p.Token, Peers: p.Peers})
	if err := os.WriteFile(join, b, 0o600); err != nil {
		return "", err
	}
	offset, size, err := disklayout.Extent(in.disk.SizeBytes, disklayout.NameData)
	if err != nil {
		return "", err
	}
	args := []string{"-q", "-F", "-t", "ext4", "-L", disklayout.NameData,
		"-E", fmt.Sprintf("offset=%d,lazy_itable_init=1,lazy_journal_init=1", offset),
		"-d", seed, in.disk.dev, fmt.Sprintf("%dk", size>>10)}
	out, err := exec.CommandContext(ctx, in.cfg.Mke2fs, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mke2fs: %w", err)
	}
	_ = os.RemoveAll(seed) // the token stays on the disk only
	return fmt.Sprintf("ext4 of %d MiB at offset %d MiB: hostname %s, join through %s", size>>20, offset>>20, p.Name, strings.Join(p.Peers, ", ")), nil
}

func (in *Installer) stepSeal() (string, error) {
	if err := disklayout.Seal(in.disk.dev, in.system()); err != nil {
		return "", err
	}
	return in.disk.dev + ": MBR boot code and GPT written: the disk boots", nil
}
