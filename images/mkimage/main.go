// Command mkimage builds the Tandem firmware image for one board, from the
// Go module proxy and Debian packages only:
//
//	images/out/vmlinuz             the pinned Debian kernel
//	images/out/initramfs.cpio.zst  u-root busybox: u-root commands, Tandem's, QEMU, modules
//	images/out/disk.img            raw GPT disk (ESP with GRUB, slot A, slot B, data) for UEFI and BIOS
//	images/out/pxe/                kernel, initramfs and boot.ipxe for network boot
//
// It prints the sizes and the build time at the end.
package main

import (
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/board"
	"github.com/tandemhci/tandem/images/disklayout"
	"github.com/tandemhci/tandem/initramfs/settings"
)

type logf func(format string, args ...any)

func main() {
	boardName := flag.String("board", "qemu-2node", "board to build for (a folder under board/)")
	out := flag.String("out", "images/out", "output directory")
	cache := flag.String("cache", defaultCache(), "cache for downloads and tools, kept between builds")
	version := flag.String("version", "dev", "image version string")
	guestOnly := flag.String("testguest", "", "build only the test guest (vmlinux, initrd.gz) into this folder")
	flag.Parse()
	var err error
	if *guestOnly != "" {
		err = buildTestGuestOnly(*guestOnly, *cache)
	} else {
		err = build(*boardName, *out, *cache, *version)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// buildTestGuestOnly is what VM tests need: the test guest alone.
func buildTestGuestOnly(out, cache string) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	out, _ = filepath.Abs(out)
	cache, _ = filepath.Abs(cache)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	kroot, err := kernelTree(cache, func(string, ...any) {})
	if err != nil {
		return err
	}
	return buildTestGuest(repo, kroot, out)
}

func defaultCache() string {
	if d := os.Getenv("TANDEM_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "tandem")
	}
	return ".cache"
}

func build(boardName, out, cache, version string) error {
	start := time.Now()
	log := func(format string, args ...any) {
		fmt.Printf("[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	out, _ = filepath.Abs(out)
	cache, _ = filepath.Abs(cache)

	// Board problems fail the build here, naming the file and the key.
	b, err := board.LoadNamed(repo, boardName)
	if err != nil {
		return err
	}
	boardFile := filepath.Join("board", boardName, "board.yaml")
	if err := settings.CheckDefaults(b.Defaults); err != nil {
		return fmt.Errorf("%s: %w", boardFile, err)
	}
	for _, p := range []string{out, cache} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}

	kroot, err := kernelTree(cache, log)
	if err != nil {
		return err
	}
	log("kernel %s (%s)", kernelRelease, kernelVersion)

	stage := filepath.Join(out, "stage")
	if err := os.RemoveAll(stage); err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	nmods, err := stageModules(kroot, stage, b.Modules, boardFile)
	if err != nil {
		return err
	}
	log("staged %d kernel modules for %d listed by the board", nmods, len(b.Modules))
	if err := copyFile(filepath.Join(repo, boardFile), filepath.Join(stage, board.ImagePath)); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, "etc/tandem/version"), []byte(version+"\n"), 0o644); err != nil {
		return err
	}
	names, err := stageTandem(repo, stage)
	if err != nil {
		return err
	}
	log("built tandem: %s", strings.Join(names, ", "))
	guest := filepath.Join(out, "testguest")
	if err := buildTestGuest(repo, kroot, guest); err != nil {
		return err
	}
	for _, f := range []string{"vmlinux", "initrd.gz"} {
		if err := copyFile(filepath.Join(guest, f), filepath.Join(stage, testGuestDir, f)); err != nil {
			return err
		}
	}
	log("test guest built: %s", guest)
	// GRUB for both firmware types, in the image too: the installer
	// writes new nodes' disks with the loaders the image carries.
	if err := bootLoaders(filepath.Join(stage, disklayout.BootDir)); err != nil {
		return err
	}
	log("GRUB built for UEFI and BIOS")
	nq, err := stageQEMUData(stage)
	if err != nil {
		return err
	}
	log("staged %d QEMU firmware and data files", nq)
	qemuBin, err := tandemQEMU(repo, log)
	if err != nil {
		return err
	}

	cpio := filepath.Join(out, "initramfs.cpio")
	if err := buildInitramfs(repo, cache, stage, qemuBin, cpio, log); err != nil {
		return err
	}
	log("initramfs built")
	initramfs := filepath.Join(out, "initramfs.cpio.zst")
	if err := compress(cpio, initramfs); err != nil {
		return err
	}
	log("initramfs compressed")

	kernel := filepath.Join(out, "vmlinuz")
	if err := copyFile(filepath.Join(kroot, "boot", "vmlinuz-"+kernelRelease), kernel); err != nil {
		return err
	}
	if err := writePXEBundle(filepath.Join(out, "pxe"), b, kernel, initramfs); err != nil {
		return err
	}

	boot := filepath.Join(stage, disklayout.BootDir)
	diskImg := filepath.Join(out, "disk.img")
	if err := buildDisk(diskImg, disklayout.System{
		Kernel: kernel, Initramfs: initramfs, Version: version, Board: b,
		EFILoader: filepath.Join(boot, path.Base(disklayout.BootEFI)),
		BIOSCore:  filepath.Join(boot, path.Base(disklayout.BootBIOSCore)),
		BIOSBoot:  filepath.Join(boot, path.Base(disklayout.BootBIOSMBR)),
	}); err != nil {
		return err
	}
	log("disk image written")

	fmt.Printf("\nTandem %s for %s, built in %.0fs:\n", version, b.Name, time.Since(start).Seconds())
	for _, f := range []string{kernel, cpio, initramfs, diskImg} {
		printSize(f)
	}
	fmt.Printf("  %-40s kernel, initramfs, boot.ipxe\n", filepath.Join(out, "pxe")+"/")
	return nil
}

func printSize(path string) {
	st, err := os.Stat(path)
	if err != nil {
		return
	}
	line := fmt.Sprintf("  %-40s %7.1f MiB", path, float64(st.Size())/(1<<20))
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Blocks*512 < st.Size() {
		line += fmt.Sprintf("  (sparse: %.1f MiB on disk)", float64(sys.Blocks*512)/(1<<20))
	}
	fmt.Println(line)
}
