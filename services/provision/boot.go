package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/frontdoor"
)

// bootPrefix is the front door's plain-HTTP route to this service.
const bootPrefix = "/boot/"

// Files of the installer, as served under /boot/files/.
const (
	FileKernel    = "vmlinuz"
	FileInitramfs = "initramfs.cpio.zst"
	fileVersion   = "version"
)

// Kernel arguments that start the installer and tell it where to report.
const (
	ArgMode      = "tandem.mode"
	ModeInstall  = "install"
	ArgProvision = "tandem.provision" // host:port of the serving node's front door
	ArgCA        = "tandem.ca"        // the cluster CA's SHA-256 fingerprint, pinned
	ArgBootIf    = "BOOTIF"           // 01-<mac>, as pxelinux says it
)

// Manifest lists the installer's files with their sizes and SHA-256s:
// the installer checks what it downloads against it before writing.
type Manifest struct {
	Version string         `json:"version"`
	Files   []ManifestFile `json:"files"`
}

// ManifestFile is one file of the manifest.
type ManifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// File returns the named file's entry.
func (m Manifest) File(name string) (ManifestFile, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return ManifestFile{}, false
}

// installerFiles are the installer's kernel and initramfs, copied once
// per start of the network service into a directory of their own, with
// their manifest.
type installerFiles struct {
	dir  string
	fill func(dir string) error

	mu       sync.Mutex
	manifest *Manifest
}

// prepare copies the files (again: the slot may have been upgraded since)
// and makes the manifest.
func (f *installerFiles) prepare() (Manifest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tmp := f.dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return Manifest{}, err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return Manifest{}, err
	}
	if err := f.fill(tmp); err != nil {
		return Manifest{}, err
	}
	v, err := os.ReadFile(filepath.Join(tmp, fileVersion))
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{Version: strings.TrimSpace(string(v))}
	for _, name := range []string{FileKernel, FileInitramfs} {
		mf, err := hashed(filepath.Join(tmp, name))
		if err != nil {
			return Manifest{}, err
		}
		m.Files = append(m.Files, mf)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), b, 0o644); err != nil {
		return Manifest{}, err
	}
	f.manifest = nil // the old files go now
	if err := os.RemoveAll(f.dir); err != nil {
		return Manifest{}, err
	}
	if err := os.Rename(tmp, f.dir); err != nil {
		return Manifest{}, err
	}
	f.manifest = &m
	return m, nil
}

func (f *installerFiles) current() (Manifest, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.manifest == nil {
		return Manifest{}, false
	}
	return *f.manifest, true
}

func hashed(p string) (ManifestFile, error) {
	r, err := os.Open(p)
	if err != nil {
		return ManifestFile{}, err
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return ManifestFile{}, fmt.Errorf("read %s: %w", p, err)
	}
	return ManifestFile{Name: filepath.Base(p), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Handler serves /boot/ (plain HTTP, through the front door): iPXE's
// scripts, the installer's files and manifest, and the CA certificate.
// Nothing here is secret: the installer authenticates the cluster by
// the CA fingerprint, and the cluster the installer by its key.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot/ipxe", s.serveChain)
	mux.HandleFunc("GET /boot/ipxe/{mac}", s.serveScript)
	mux.HandleFunc("GET /boot/manifest.json", s.serveManifest)
	mux.HandleFunc("GET /boot/files/{name}", s.serveFile)
	mux.HandleFunc("GET /boot/ca.crt", s.serveCA)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.current() == nil {
			frontdoor.WriteError(w, http.StatusNotFound, "not_serving", "this node does not serve the provisioning network (see /api/v1/provisioning)")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// base is the URL of this service as the provisioning network reaches it.
func (s *Service) base(sv *served) string {
	return "http://" + net.JoinHostPort(sv.addr.String(), strconv.Itoa(s.cfg.Port)) + bootPrefix
}

// serveChain is the script DHCP names for every iPXE client: it fetches
// the machine's own script, by MAC.
func (s *Service) serveChain(w http.ResponseWriter, r *http.Request) {
	sv := s.current()
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "#!ipxe\nchain %sipxe/${mac:hexhyp}\n", s.base(sv))
}

// serveScript is one machine's script: the installer, or, for a machine
// already installed, back to the firmware, which boots the next device
// (its own disk).
func (s *Service) serveScript(w http.ResponseWriter, r *http.Request) {
	sv := s.current()
	mac, err := directory.CanonicalMAC(strings.ReplaceAll(r.PathValue("mac"), "-", ":"))
	if err != nil {
		frontdoor.WriteError(w, http.StatusBadRequest, "bad_mac", err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	if sv.diskBoot[mac] {
		fmt.Fprintf(w, "#!ipxe\necho Tandem: %s is installed: booting from its own disk\nexit\n", mac)
		return
	}
	if _, ok := s.files.current(); !ok {
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "not_ready", "the installer's files are still being prepared")
		return
	}
	base := s.base(sv)
	args := []string{"initrd=" + FileInitramfs}
	args = append(args, s.cfg.Console...)
	args = append(args, "panic=10",
		ArgMode+"="+ModeInstall,
		ArgProvision+"="+net.JoinHostPort(sv.addr.String(), strconv.Itoa(s.cfg.Port)),
		ArgCA+"="+sv.caFingerprint,
		ArgBootIf+"=01-"+strings.ReplaceAll(mac, ":", "-"))
	fmt.Fprintf(w, "#!ipxe\necho Tandem: installing %s\nkernel %sfiles/%s %s\ninitrd %sfiles/%s\nboot\n",
		mac, base, FileKernel, strings.Join(args, " "), base, FileInitramfs)
}

func (s *Service) serveManifest(w http.ResponseWriter, r *http.Request) {
	m, ok := s.files.current()
	if !ok {
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "not_ready", "the installer's files are still being prepared")
		return
	}
	frontdoor.WriteJSON(w, http.StatusOK, m)
}

func (s *Service) serveFile(w http.ResponseWriter, r *http.Request) {
	m, ok := s.files.current()
	name := r.PathValue("name")
	if !ok {
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "not_ready", "the installer's files are still being prepared")
		return
	}
	if _, ok := m.File(name); !ok {
		frontdoor.WriteError(w, http.StatusNotFound, "not_found", "no such boot file: "+name)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeFile(w, r, filepath.Join(s.files.dir, name))
}

func (s *Service) serveCA(w http.ResponseWriter, r *http.Request) {
	b, err := os.ReadFile(s.cfg.CACert)
	if err != nil {
		frontdoor.WriteError(w, http.StatusServiceUnavailable, "no_ca", "the cluster CA is not here yet")
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(b)
}
