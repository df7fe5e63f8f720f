package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/services/frontdoor"
)

// Images come and go through qemu-img, which reads and writes the volume
// through this service's own NBD export: an import is replicated like any
// guest write, and an export reads the checked, repaired data.

// imageFormats are the formats accepted and produced. The format is
// always named by the client: probing a raw upload could take a guest's
// disk for a qcow2 header.
var imageFormats = map[string]bool{"raw": true, "qcow2": true}

// spareBytes is kept free on the data partition by uploads.
const spareBytes = 256 << 20

func (s *Service) nbdURL(name string) string {
	return "nbd+unix:///" + name + "?socket=" + s.cfg.NBDSocket
}

func (s *Service) tempFile(pattern string) (*os.File, error) {
	dir := filepath.Join(s.cfg.DataDir, ".tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, pattern)
}

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// imageInfo is what qemu-img says of an image.
type imageInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

func (s *Service) qemuImg(args ...string) ([]byte, error) {
	cmd := exec.Command(s.cfg.QemuImg, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// handleImport writes an uploaded raw or qcow2 image into the volume.
func (s *Service) handleImport(w http.ResponseWriter, r *http.Request, c *copyState) {
	format := r.URL.Query().Get("format")
	if !imageFormats[format] {
		frontdoor.WriteError(w, http.StatusBadRequest, "invalid", "format: want ?format=raw or ?format=qcow2")
		return
	}
	size := c.store.Size()
	limit := 2*size + 64<<20 // a qcow2 of the volume is never this large
	free, err := freeBytes(s.cfg.DataDir)
	if err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if r.ContentLength > limit {
		frontdoor.WriteError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("an image of %d bytes cannot fit volume %s (%d bytes)", r.ContentLength, c.name, size))
		return
	}
	if r.ContentLength > 0 && r.ContentLength+spareBytes > free {
		frontdoor.WriteError(w, http.StatusInsufficientStorage, "disk_full", fmt.Sprintf("the upload needs %d bytes of scratch space; the data partition has %d free", r.ContentLength, free))
		return
	}
	tmp, err := s.tempFile("import-*")
	if err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			frontdoor.WriteError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the upload is over %d bytes, larger than any image volume %s can take", limit, c.name))
		case errors.Is(err, syscall.ENOSPC):
			frontdoor.WriteError(w, http.StatusInsufficientStorage, "disk_full", "the data partition filled up during the upload; nothing was written to the volume")
		default:
			frontdoor.WriteError(w, http.StatusBadRequest, "upload_failed", "the upload broke off: "+err.Error())
		}
		return
	}
	out, err := s.qemuImg("info", "--output=json", "-f", format, tmp.Name())
	var info imageInfo
	if err == nil {
		err = json.Unmarshal(out, &info)
	}
	if err != nil {
		frontdoor.WriteError(w, http.StatusBadRequest, "bad_image", fmt.Sprintf("not a %s image: %v", format, err))
		return
	}
	if info.VirtualSize > size {
		frontdoor.WriteError(w, http.StatusBadRequest, "image_too_large", fmt.Sprintf("the image's disk is %d bytes, volume %s has %d: grow the volume first", info.VirtualSize, c.name, size))
		return
	}
	if _, err := s.qemuImg("convert", "-n", "-f", format, "-O", "raw", tmp.Name(), s.nbdURL(c.name)); err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "import_failed", err.Error())
		return
	}
	s.log.Info("image imported", "volume", c.name, "format", format, "upload_bytes", n, "disk_bytes", info.VirtualSize)
	frontdoor.WriteJSON(w, http.StatusOK, map[string]any{"volume": c.name, "format": format, "upload_bytes": n, "disk_bytes": info.VirtualSize})
}

// handleExport sends the volume as a raw or qcow2 image. The guest's
// writes wait while the image is made, so it is one point in time.
func (s *Service) handleExport(w http.ResponseWriter, r *http.Request, c *copyState) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "qcow2"
	}
	if !imageFormats[format] {
		frontdoor.WriteError(w, http.StatusBadRequest, "invalid", "format: want ?format=raw or ?format=qcow2")
		return
	}
	free, err := freeBytes(s.cfg.DataDir)
	if err == nil && c.store.Size()+spareBytes > free {
		frontdoor.WriteError(w, http.StatusInsufficientStorage, "disk_full", fmt.Sprintf("the export may need %d bytes of scratch space; the data partition has %d free", c.store.Size(), free))
		return
	}
	tmp, err := s.tempFile("export-*")
	if err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	c.mu.Lock()
	rv := c.rv
	c.mu.Unlock()
	thaw, err := rv.Freeze()
	if err != nil {
		frontdoor.WriteError(w, http.StatusConflict, "freeze_failed", err.Error())
		return
	}
	_, err = s.qemuImg("convert", "-f", "raw", "-O", format, s.nbdURL(c.name), tmp.Name())
	thaw()
	if err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "export_failed", err.Error())
		return
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		frontdoor.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.%s"`, c.name, format))
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	if _, err := io.Copy(w, f); err != nil {
		s.log.Info("export download broke off", "volume", c.name, "err", err)
	}
}
