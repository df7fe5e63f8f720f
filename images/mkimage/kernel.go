package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The Debian kernel the image boots, pinned: a new version is a reviewed
// change of these four lines.
const (
	kernelPackage = "linux-image-6.1.0-56-amd64"
	kernelVersion = "6.1.192-2"
	kernelSHA256  = "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1"
	kernelRelease = "6.1.0-56-amd64"
)

// kernelTree returns the extracted kernel package, fetching it with
// apt-get into the cache and checking its hash the first time.
func kernelTree(cache string, log logf) (string, error) {
	dir := filepath.Join(cache, "kernel", kernelPackage+"_"+kernelVersion)
	root := filepath.Join(dir, "root")
	if _, err := os.Stat(filepath.Join(root, "lib/modules", kernelRelease, "modules.dep")); err == nil {
		return root, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	deb := filepath.Join(dir, fmt.Sprintf("%s_%s_amd64.deb", kernelPackage, strings.ReplaceAll(kernelVersion, ":", "%3a")))
	if err := checkSHA256(deb, kernelSHA256); err != nil {
		log("fetching %s %s with apt-get", kernelPackage, kernelVersion)
		cmd := exec.Command("apt-get", "download", kernelPackage+"="+kernelVersion)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get download %s=%s: %w\n%s", kernelPackage, kernelVersion, err, out)
		}
		if err := checkSHA256(deb, kernelSHA256); err != nil {
			return "", fmt.Errorf("downloaded kernel package: %w", err)
		}
	}
	tmp := root + ".tmp"
	_ = os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w\n%s", deb, err, out)
	}
	// The package ships no modules.dep; depmod writes it.
	if out, err := exec.Command("depmod", "-b", tmp, kernelRelease).CombinedOutput(); err != nil {
		return "", fmt.Errorf("depmod: %w\n%s", err, out)
	}
	_ = os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return "", err
	}
	return root, nil
}

func checkSHA256(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %s, want %s", path, got, want)
	}
	return nil
}

// moduleSet is a kernel's modules.dep and modules.builtin.
type moduleSet struct {
	deps    map[string][]string // relative path -> relative paths it needs
	byName  map[string]string   // module file name -> relative path
	builtin map[string]bool     // module file names built into the kernel
}

// moduleFileName is a module file's name without its extension, as it is
// on disk (some mix - and _, like nls_iso8859-1).
func moduleFileName(path string) string {
	base := filepath.Base(path)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(base, ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return base
}

func readModuleSet(modDir string) (*moduleSet, error) {
	ms := &moduleSet{deps: map[string][]string{}, byName: map[string]string{}, builtin: map[string]bool{}}
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		ms.deps[mod] = strings.Fields(deps)
		ms.byName[moduleFileName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			ms.builtin[moduleFileName(line)] = true
		}
	}
	return ms, nil
}

// closure returns the relative paths of the named modules and everything
// they depend on, in an order they can be loaded in: each module after
// its dependencies (a module loaded before them is read, relocated and
// refused, which under TCG costs as much as loading it). Built-in modules
// need nothing. Unknown names are errors that name the board key.
func (ms *moduleSet) closure(names []string, boardFile string) ([]string, error) {
	var errs []error
	seen := map[string]bool{}
	var order []string
	var visit func(path string)
	visit = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		for _, d := range ms.deps[path] {
			visit(d)
		}
		order = append(order, path)
	}
	for i, n := range names {
		// The loader at boot (u-root's kmodule) looks a name up with every
		// - turned into _, or every _ into -: nothing else finds a file.
		found := false
		for _, key := range []string{strings.ReplaceAll(n, "-", "_"), strings.ReplaceAll(n, "_", "-")} {
			if path, ok := ms.byName[key]; ok {
				visit(path)
				found = true
				break
			}
			if ms.builtin[key] {
				found = true
				break
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("%s: modules[%d]: kernel %s has no module %q that the boot-time loader can find by that name", boardFile, i, kernelRelease, n))
		}
	}
	return order, errors.Join(errs...)
}

// stageModules copies the board's modules and their dependencies into
// stage/lib/modules/<release>, with a modules.dep that has a line for every
// module staged (u-root's loader refuses a module missing from it).
func stageModules(kernelRoot, stage string, names []string, boardFile string) (int, error) {
	src := filepath.Join(kernelRoot, "lib/modules", kernelRelease)
	ms, err := readModuleSet(src)
	if err != nil {
		return 0, fmt.Errorf("kernel modules: %w", err)
	}
	mods, err := ms.closure(names, boardFile)
	if err != nil {
		return 0, err
	}
	dst := filepath.Join(stage, "lib/modules", kernelRelease)
	var dep strings.Builder
	for _, m := range mods {
		if err := copyFile(filepath.Join(src, m), filepath.Join(dst, m)); err != nil {
			return 0, err
		}
		// Exactly depmod's format: "path:" alone when there are no deps.
		dep.WriteString(m + ":")
		for _, d := range ms.deps[m] {
			dep.WriteString(" " + d)
		}
		dep.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.dep"), []byte(dep.String()), 0o644); err != nil {
		return 0, err
	}
	if err := copyFile(filepath.Join(src, "modules.builtin"), filepath.Join(dst, "modules.builtin")); err != nil {
		return 0, err
	}
	return len(mods), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
