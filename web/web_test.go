package web

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func newHandler(t testing.TB) http.Handler {
	t.Helper()
	h, err := Handler(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// consoleFile reads a file of console/ as embedded.
func consoleFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(files, "console/"+name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// consoleFiles lists the console's own files (not vendor/) with an extension.
func consoleFiles(t testing.TB, exts ...string) []string {
	t.Helper()
	var out []string
	err := fs.WalkDir(files, "console", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p == "console/vendor" {
			return fs.SkipDir
		}
		if !d.IsDir() && slices.Contains(exts, path.Ext(p)) {
			out = append(out, strings.TrimPrefix(p, "console/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"X-Frame-Options":         "DENY",
}

func TestHandler(t *testing.T) {
	h := newHandler(t)
	index := consoleFile(t, "index.html")
	appJS := consoleFile(t, "app.js")
	tests := []struct {
		name       string
		method     string
		target     string
		header     map[string]string
		wantStatus int
		wantHeader map[string]string // "" means: must be absent
		wantBody   []byte            // after gunzip when gzipped; nil: not checked
		wantCode   string            // the JSON error's code
	}{
		{
			name: "index at /", method: "GET", target: "/",
			wantStatus: 200, wantBody: index,
			wantHeader: map[string]string{"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache", "Vary": "Accept-Encoding", "Content-Encoding": ""},
		},
		{
			name: "index by name", method: "GET", target: "/index.html",
			wantStatus: 200, wantBody: index,
		},
		{
			name: "module gzipped", method: "GET", target: "/app.js", header: map[string]string{"Accept-Encoding": "gzip, deflate, br"},
			wantStatus: 200, wantBody: appJS,
			wantHeader: map[string]string{"Content-Type": "text/javascript; charset=utf-8", "Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
		},
		{
			name: "module without gzip", method: "GET", target: "/app.js",
			wantStatus: 200, wantBody: appJS,
			wantHeader: map[string]string{"Content-Encoding": ""},
		},
		{
			name: "gzip refused with q=0", method: "GET", target: "/app.js", header: map[string]string{"Accept-Encoding": "br, gzip;q=0"},
			wantStatus: 200, wantBody: appJS,
			wantHeader: map[string]string{"Content-Encoding": ""},
		},
		{
			name: "head", method: "HEAD", target: "/app.js", header: map[string]string{"Accept-Encoding": "gzip"},
			wantStatus: 200, wantBody: []byte{},
			wantHeader: map[string]string{"Content-Encoding": "gzip", "Content-Type": "text/javascript; charset=utf-8"},
		},
		{
			name: "vendored module", method: "GET", target: "/vendor/xterm/xterm.mjs",
			wantStatus: 200, wantHeader: map[string]string{"Content-Type": "text/javascript; charset=utf-8"},
		},
		{
			name: "translations", method: "GET", target: "/i18n/zh-CN.json",
			wantStatus: 200, wantBody: consoleFile(t, "i18n/zh-CN.json"), wantHeader: map[string]string{"Content-Type": "application/json"},
		},
		{name: "post", method: "POST", target: "/", wantStatus: 405, wantCode: "method_not_allowed", wantHeader: map[string]string{"Allow": "GET, HEAD"}},
		{name: "put", method: "PUT", target: "/app.js", wantStatus: 405, wantCode: "method_not_allowed"},
		{name: "delete", method: "DELETE", target: "/app.js", wantStatus: 405, wantCode: "method_not_allowed"},
		{name: "options", method: "OPTIONS", target: "/", wantStatus: 405, wantCode: "method_not_allowed"},
		{name: "unknown file", method: "GET", target: "/nope.js", wantStatus: 404, wantCode: "not_found"},
		{name: "no spa fallback", method: "GET", target: "/vms/web1", wantStatus: 404, wantCode: "not_found"},
		{name: "folder", method: "GET", target: "/pages", wantStatus: 404, wantCode: "not_found"},
		{name: "folder slash", method: "GET", target: "/pages/", wantStatus: 400, wantCode: "bad_path"},
		{name: "embed prefix", method: "GET", target: "/console/app.js", wantStatus: 404, wantCode: "not_found"},
		{name: "api is not here", method: "GET", target: "/api/v1/vms", wantStatus: 404, wantCode: "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.target, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", res.StatusCode, tt.wantStatus, rec.Body.Bytes())
			}
			for k, v := range securityHeaders {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for k, v := range tt.wantHeader {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			body := rec.Body.Bytes()
			if res.Header.Get("Content-Encoding") == "gzip" && len(body) > 0 {
				body = gunzip(t, body)
			}
			if tt.wantBody != nil && !bytes.Equal(body, tt.wantBody) {
				t.Errorf("body: %d bytes, want %d", len(body), len(tt.wantBody))
			}
			if tt.wantStatus == 200 {
				if res.Header.Get("ETag") == "" || res.Header.Get("Content-Length") == "" {
					t.Errorf("no ETag or Content-Length: %v", res.Header)
				}
			}
			if tt.wantCode != "" {
				checkError(t, res.Header, rec.Body.Bytes(), tt.wantCode)
			}
		})
	}
}

func checkError(t *testing.T, h http.Header, body []byte, code string) {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("error %+v, want code %s and a message", e.Error, code)
	}
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestETag(t *testing.T) {
	h := newHandler(t)
	get := func(ae, inm string) *http.Response {
		req := httptest.NewRequest("GET", "/style.css", nil)
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result()
	}
	plain, zipped := get("", ""), get("gzip", "")
	tag, ztag := plain.Header.Get("ETag"), zipped.Header.Get("ETag")
	if !regexp.MustCompile(`^"[A-Za-z0-9_-]+"$`).MatchString(tag) {
		t.Fatalf("ETag %q is not a strong tag", tag)
	}
	if tag == ztag {
		t.Fatalf("identity and gzip share the ETag %s", tag)
	}
	tests := []struct {
		ae, inm string
		want    int
	}{
		{"", tag, 304},
		{"gzip", ztag, 304},
		{"gzip", "W/" + ztag, 304},
		{"gzip", `"other", ` + ztag, 304},
		{"", "*", 304},
		{"gzip", tag, 200}, // the identity tag does not validate the gzip body
		{"", `"other"`, 200},
	}
	for _, tt := range tests {
		res := get(tt.ae, tt.inm)
		if res.StatusCode != tt.want {
			t.Errorf("Accept-Encoding %q If-None-Match %q: %d, want %d", tt.ae, tt.inm, res.StatusCode, tt.want)
		}
		if res.StatusCode == 304 {
			body, _ := io.ReadAll(res.Body)
			if len(body) != 0 || res.Header.Get("ETag") == "" || res.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("304 with body %q or without ETag/CSP: %v", body, res.Header)
			}
		}
	}
}

// traversals are paths that try to leave console/ or name a file oddly.
var traversals = []string{
	"/../web.go",
	"/..",
	"/%2e%2e/web.go",
	"/%2E%2E/web.go",
	"/..%2fweb.go",
	"/%2e%2e%2fweb.go",
	"/pages/../app.js",
	"/pages/%2e%2e/app.js",
	"/vendor/../../web.go",
	"/./app.js",
	"/%2e/app.js",
	"//app.js",
	"/..\\web.go",
	"/..%5cweb.go",
	"/pages\\..\\app.js",
	"/app.js%00",
	"/app.js%00.png",
	"/%c0%ae%c0%ae/web.go",
}

func TestTraversal(t *testing.T) {
	h := newHandler(t)
	for _, p := range traversals {
		// As the server parses a request line: no resolution of dot
		// segments (url.URL.Parse would do it, RFC 3986 style).
		u, err := url.ParseRequestURI(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.URL = u
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 400 && rec.Code != 404 {
			t.Errorf("%s: status %d, want 400 or 404", p, rec.Code)
		}
		if rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no CSP on the refusal", p)
		}
	}
}

// TestTraversalOnTheWire sends the paths as a client could, unparsed,
// through a real server: nothing between the socket and the handler may
// clean them into something served.
func TestTraversalOnTheWire(t *testing.T) {
	srv := httptest.NewServer(newHandler(t))
	defer srv.Close()
	for _, p := range traversals {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", p)
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		body, _ := io.ReadAll(res.Body)
		conn.Close()
		if res.StatusCode != 400 && res.StatusCode != 404 {
			t.Errorf("%s: status %d, want 400 or 404", p, res.StatusCode)
		}
		if bytes.Contains(body, []byte("package web")) {
			t.Errorf("%s: served Go source", p)
		}
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"/", "index.html", true},
		{"/app.js", "app.js", true},
		{"/pages/vm.js", "pages/vm.js", true},
		{"/vendor/novnc/core/rfb.js", "vendor/novnc/core/rfb.js", true},
		{"/../x", "", false},
		{"/a/../b", "", false},
		{"/a/./b", "", false},
		{"/a//b", "", false},
		{"/a/", "", false},
		{"/a\\b", "", false},
		{"/a\x00", "", false},
		{"a.js", "", false},
	}
	for _, tt := range tests {
		got, ok := cleanPath(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("cleanPath(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	tests := map[string]bool{
		"":                     false,
		"gzip":                 true,
		"GZIP":                 true,
		"deflate, gzip":        true,
		"gzip;q=0.5":           true,
		"gzip;q=0":             false,
		"gzip; q=0":            false,
		"br":                   false,
		"*":                    true,
		"identity":             false,
		"gzip, deflate, br, *": true,
	}
	for in, want := range tests {
		if got := acceptsGzip(in); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", in, got, want)
		}
	}
}

// FuzzServe: whatever the path, the handler answers 200 only for a file
// that is in console/, under its own name.
func FuzzServe(f *testing.F) {
	for _, p := range append(traversals, "/", "/app.js", "/vendor/uplot/uPlot.min.mjs") {
		f.Add(p)
	}
	assets, err := loadAssets()
	if err != nil {
		f.Fatal(err)
	}
	h := newHandler(f)
	f.Fuzz(func(t *testing.T, p string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.URL.Path = p
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			return
		}
		name := strings.TrimPrefix(p, "/")
		if p == "/" {
			name = "index.html"
		}
		a := assets[name]
		if a == nil || !bytes.Equal(rec.Body.Bytes(), a.body) {
			t.Fatalf("%q served %d bytes that are not the file %q", p, rec.Body.Len(), name)
		}
	})
}

func TestContentTypes(t *testing.T) {
	assets, err := loadAssets()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
		".json": "application/json", ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8",
	}
	for name, a := range assets {
		if w, ok := want[path.Ext(name)]; ok && a.ctype != w {
			t.Errorf("%s: %s, want %s", name, a.ctype, w)
		}
		if a.ctype == "application/octet-stream" {
			t.Errorf("%s: no content type known", name)
		}
	}
}

func readTranslations(t *testing.T, lang string) map[string]string {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(consoleFile(t, "i18n/"+lang+".json"), &raw); err != nil {
		t.Fatalf("%s: %v", lang, err)
	}
	out := map[string]string{}
	for k, v := range raw {
		s, ok := v.(string)
		if !ok {
			t.Errorf("%s: %s is not a string", lang, k)
		}
		out[k] = s
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

var (
	tCallRE    = regexp.MustCompile(`\bt\(\s*(?:'([^']*)'|"([^"]*)")`)
	dataI18nRE = regexp.MustCompile(`data-i18n="([^"]*)"`)
	placeRE    = regexp.MustCompile(`\{(\w+)\}`)
)

// TestTranslations: both languages have the same keys, none empty, with
// the same placeholders; every key the code or the HTML uses exists; and
// every key but the API's values (enum.*) is used.
func TestTranslations(t *testing.T) {
	en, zh := readTranslations(t, "en"), readTranslations(t, "zh-CN")
	if diff := cmp.Diff(sortedKeys(en), sortedKeys(zh)); diff != "" {
		t.Errorf("en and zh-CN keys differ (-en +zh-CN):\n%s", diff)
	}
	for lang, m := range map[string]map[string]string{"en": en, "zh-CN": zh} {
		for k, v := range m {
			if strings.TrimSpace(v) == "" {
				t.Errorf("%s: %s is empty", lang, k)
			}
		}
	}
	for k, v := range en {
		p := func(s string) []string {
			var out []string
			for _, m := range placeRE.FindAllStringSubmatch(s, -1) {
				out = append(out, m[1])
			}
			slices.Sort(out)
			return out
		}
		if diff := cmp.Diff(p(v), p(zh[k])); diff != "" {
			t.Errorf("%s: placeholders differ (-en +zh-CN):\n%s", k, diff)
		}
	}
	used := map[string]bool{}
	for _, name := range consoleFiles(t, ".js", ".html") {
		src := string(consoleFile(t, name))
		var keys []string
		for _, m := range tCallRE.FindAllStringSubmatch(src, -1) {
			keys = append(keys, m[1]+m[2])
		}
		for _, m := range dataI18nRE.FindAllStringSubmatch(src, -1) {
			keys = append(keys, m[1])
		}
		for _, k := range keys {
			used[k] = true
			if _, ok := en[k]; !ok {
				t.Errorf("%s uses %q, which en.json lacks", name, k)
			}
			if _, ok := zh[k]; !ok {
				t.Errorf("%s uses %q, which zh-CN.json lacks", name, k)
			}
		}
	}
	for k := range en {
		if !used[k] && !strings.HasPrefix(k, "enum.") {
			t.Errorf("%s is translated but not used", k)
		}
	}
	t.Logf("%d keys, %d used by name", len(en), len(used))
}

// TestNoHTMLFromStrings: the console's own code never turns a string into
// markup or code. Data reaches the page as text nodes and attributes
// (dom.js); nothing polls.
func TestNoHTMLFromStrings(t *testing.T) {
	forbidden := []struct {
		re  *regexp.Regexp
		why string
	}{
		{regexp.MustCompile(`\.innerHTML\b`), "innerHTML parses HTML"},
		{regexp.MustCompile(`\.outerHTML\b`), "outerHTML parses HTML"},
		{regexp.MustCompile(`insertAdjacentHTML`), "insertAdjacentHTML parses HTML"},
		{regexp.MustCompile(`document\.write`), "document.write parses HTML"},
		{regexp.MustCompile(`createContextualFragment|DOMParser|srcdoc`), "parses HTML"},
		{regexp.MustCompile(`\beval\s*\(|new\s+Function\b`), "runs strings as code (and CSP forbids it)"},
		{regexp.MustCompile(`setTimeout\(\s*['"]`), "runs a string as code"},
		{regexp.MustCompile(`\bsetInterval\s*\(`), "the console does not poll: changes come on the events websocket"},
	}
	for _, name := range consoleFiles(t, ".js", ".mjs") {
		for i, line := range strings.Split(string(consoleFile(t, name)), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "//") {
				continue
			}
			for _, f := range forbidden {
				if f.re.MatchString(line) {
					t.Errorf("%s:%d: %s: %s", name, i+1, f.why, strings.TrimSpace(line))
				}
			}
		}
	}
	inlineScript := regexp.MustCompile(`<script\b[^>]*>\s*[^<\s]|<script\b(?:[^>](?:[^s]|s[^r]|sr[^c]))*>|\son[a-z]+\s*=|javascript:`)
	for _, name := range consoleFiles(t, ".html") {
		src := consoleFile(t, name)
		for _, tag := range regexp.MustCompile(`<script\b[^>]*>`).FindAll(src, -1) {
			if !bytes.Contains(tag, []byte(" src=")) {
				t.Errorf("%s: inline script %s: CSP allows only script files", name, tag)
			}
		}
		if m := inlineScript.Find(src); m != nil && !bytes.Contains(m, []byte("src=")) {
			t.Errorf("%s: inline code %q", name, m)
		}
	}
}

// TestImportGraph: every reference from index.html, followed everywhere
// (all pages, the consoles), resolves to a console file, no module of the
// console's own is left unreached, and the first load keeps the consoles
// out and fits its budget.
func TestImportGraph(t *testing.T) {
	assets, err := loadAssets()
	if err != nil {
		t.Fatal(err)
	}
	all, err := walk(assets, []string{"index.html"}, func(string, edge) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range consoleFiles(t, ".js") {
		if !slices.Contains(all, name) {
			t.Errorf("%s is not reached from index.html", name)
		}
	}
	for _, want := range []string{"vendor/xterm/xterm.mjs", "vendor/xterm/xterm.css", "vendor/novnc/core/rfb.js", "vendor/uplot/uPlot.min.mjs", "vendor/uplot/uPlot.min.css"} {
		if !slices.Contains(all, want) {
			t.Errorf("%s is not reached from index.html", want)
		}
	}

	fl, err := FirstLoad()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, f := range fl {
		total += f.GzipBytes
		if strings.HasPrefix(f.Name, "vendor/xterm/") || strings.HasPrefix(f.Name, "vendor/novnc/") || strings.HasPrefix(f.Name, "consoles/") {
			t.Errorf("first load includes %s: the consoles must load on demand", f.Name)
		}
		if strings.HasPrefix(f.Name, "pages/") && !slices.Contains(firstVisitPages, f.Name) {
			t.Errorf("first load includes %s: pages load when opened", f.Name)
		}
		t.Logf("  %-32s %6d", f.Name, f.GzipBytes)
	}
	n, err := FirstLoadBytes()
	if err != nil || n != total {
		t.Fatalf("FirstLoadBytes = %d, %v; want %d", n, err, total)
	}
	t.Logf("first load (login page, then the dashboard): %d files, %d bytes gzip (%.1f KiB)", len(fl), total, float64(total)/1024)
	const budget = 100 << 10
	if total > budget {
		t.Errorf("first load is %d bytes gzip, over the %d budget", total, budget)
	}
}

func TestRefs(t *testing.T) {
	tests := []struct {
		name, src string
		want      []edge
		wantErr   bool
	}{
		{"pages/a.js", "import { h } from '../dom.js';\nimport x from \"./b.js\";", []edge{{"dom.js", false}, {"pages/b.js", false}}, false},
		{"a.js", "import {\n  a,\n  b,\n} from './m/c.js';\nexport { d } from './d.js';", []edge{{"m/c.js", false}, {"d.js", false}}, false},
		{"a.js", "const p = () => import('./pages/x.js');\nloadStyle('vendor/x.css');", []edge{{"pages/x.js", true}, {"vendor/x.css", true}}, false},
		{"a.js", "import './side.js';", []edge{{"side.js", false}}, false},
		{"a.js", "import x from 'lodash';", nil, true},
		{"a.js", "import x from 'https://cdn.example/x.js';", nil, true},
		{"index.html", `<link rel="stylesheet" href="style.css"><script type="module" src="app.js"></script>`, []edge{{"style.css", false}, {"app.js", false}}, false},
		{"a.js", "// this came from 'nowhere'\nconst s = 'import from';", nil, false},
	}
	for _, tt := range tests {
		got, err := refs(tt.name, []byte(tt.src))
		if (err != nil) != tt.wantErr {
			t.Errorf("refs(%s, %q): err %v", tt.name, tt.src, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(edge{})); diff != "" && !tt.wantErr {
			t.Errorf("refs(%s, %q) (-want +got):\n%s", tt.name, tt.src, diff)
		}
	}
}

// TestVendor: the vendored libraries carry their versions and licences.
func TestVendor(t *testing.T) {
	versions := string(consoleFile(t, "vendor/VERSIONS"))
	for _, want := range []string{"@xterm/xterm 6.0.0 sha512-", "@xterm/addon-fit 0.11.0 sha512-", "@novnc/novnc 1.7.0 sha512-", "uplot 1.6.32 sha512-"} {
		if !strings.Contains(versions, want) {
			t.Errorf("vendor/VERSIONS lacks %q", want)
		}
	}
	for _, lic := range []string{"vendor/xterm/LICENSE", "vendor/xterm/LICENSE.addon-fit", "vendor/novnc/LICENSE.txt", "vendor/novnc/LICENSE.MPL-2.0", "vendor/novnc/vendor/pako/LICENSE", "vendor/uplot/LICENSE"} {
		if len(consoleFile(t, lic)) == 0 {
			t.Errorf("%s is empty", lic)
		}
	}
}
