// Package web is the web console: a single-page app of plain ES modules
// (console/), embedded in the firmware and served by Handler. There is no
// build step: what is in console/ is what the browser gets, gzipped once
// at startup.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed console
var files embed.FS

// CSP is the Content-Security-Policy of every answer: scripts only from
// the console's own files (no inline script, no eval), connections only to
// the same origin (the API and its websockets). Inline styles are allowed
// because xterm.js injects <style> elements.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// asset is one file, ready to serve in either encoding.
type asset struct {
	ctype  string
	body   []byte
	etag   string
	gz     []byte // nil when gzip does not make it smaller
	gzEtag string
}

// contentTypes are set here rather than taken from the system's MIME
// table, which differs between machines (the appliance has none).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".json": "application/json",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".woff": "font/woff",
	".txt":  "text/plain; charset=utf-8",
	"":      "text/plain; charset=utf-8", // LICENSE*, VERSIONS
}

func contentType(name string) string {
	ext := path.Ext(name)
	if base := path.Base(name); strings.HasPrefix(base, "LICENSE") || base == "VERSIONS" {
		ext = "" // LICENSE.MPL-2.0, LICENSE.addon-fit
	}
	if ct, ok := contentTypes[ext]; ok {
		return ct
	}
	return "application/octet-stream"
}

// loadAssets reads every embedded file and compresses it once.
func loadAssets() (map[string]*asset, error) {
	root, err := fs.Sub(files, "console")
	if err != nil {
		return nil, fmt.Errorf("web: console files: %w", err)
	}
	out := map[string]*asset{}
	err = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return fmt.Errorf("web: read %s: %w", name, err)
		}
		a, err := newAsset(name, body)
		if err != nil {
			return err
		}
		out[name] = a
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out["index.html"] == nil {
		return nil, fmt.Errorf("web: console/index.html is missing")
	}
	return out, nil
}

func newAsset(name string, body []byte) (*asset, error) {
	sum := sha256.Sum256(body)
	tag := base64.RawURLEncoding.EncodeToString(sum[:18])
	a := &asset{ctype: contentType(name), body: body, etag: `"` + tag + `"`}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(body); err != nil {
		return nil, fmt.Errorf("web: gzip %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("web: gzip %s: %w", name, err)
	}
	if buf.Len() < len(body) {
		// A strong ETag names one representation: the gzip body gets its own.
		a.gz, a.gzEtag = buf.Bytes(), `"`+tag+`-gz"`
	}
	return a, nil
}

// Handler serves the console's files at /: index.html at / and every
// other file at its path under console/. Unknown paths get a JSON 404 like
// the API's. The SPA routes with the URL's fragment (#/vms/web1), so no
// path falls back to index.html.
func Handler(log *slog.Logger) (http.Handler, error) {
	if log == nil {
		log = slog.Default()
	}
	assets, err := loadAssets()
	if err != nil {
		return nil, err
	}
	var raw, gz int
	for _, a := range assets {
		raw += len(a.body)
		gz += len(a.gz)
	}
	log.Info("web console loaded", "files", len(assets), "bytes", raw, "gzip_bytes", gz)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, assets)
	}), nil
}

func serve(w http.ResponseWriter, r *http.Request, assets map[string]*asset) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here: the console's files are read with GET")
		return
	}
	name, ok := cleanPath(r.URL.Path)
	if !ok {
		writeError(w, http.StatusBadRequest, "bad_path", "not a plain file path: "+strconv.Quote(r.URL.Path))
		return
	}
	a := assets[name]
	if a == nil {
		writeError(w, http.StatusNotFound, "not_found", "no such file: "+r.URL.Path)
		return
	}
	body, etag := a.body, a.etag
	h.Set("Vary", "Accept-Encoding")
	if a.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body, etag = a.gz, a.gzEtag
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		h.Del("Content-Type")
		h.Del("Content-Encoding")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// cleanPath maps a request path to a file name under console/. It refuses,
// rather than cleans, anything but a plain path: dot segments (decoded or
// not: the URL parser has already decoded %2e), backslashes, NULs, empty
// segments. The lookup is in a map of the embedded files, so nothing could
// escape anyway; refusing says so to whoever tried.
func cleanPath(p string) (string, bool) {
	if p == "/" || p == "" {
		return "index.html", true
	}
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") {
		return "", false
	}
	name := p[1:]
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", false
		}
	}
	return name, true
}

// acceptsGzip reads Accept-Encoding, honouring "gzip;q=0".
func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.TrimSpace(coding) != "*" {
			continue
		}
		if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				return false
			}
		}
		return true
	}
	return false
}

// etagMatches implements If-None-Match's weak comparison.
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// writeError answers in the API's error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	type detail struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	_ = json.NewEncoder(w).Encode(struct {
		Error detail `json:"error"`
	}{detail{code, msg}})
}
