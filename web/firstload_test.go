package web

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
)

// The first visit of the console is the login page, then the dashboard:
// index.html and what it pulls in, the router's login and dashboard page
// modules and everything they import, statically or on demand (the
// dashboard's charts load uPlot), and one translation file. The other
// pages, and the consoles with xterm.js and noVNC, load when opened.
var firstVisitPages = []string{"pages/login.js", "pages/dashboard.js"}

// What the walker reads. It is not a JavaScript parser: the console's
// own code keeps to these forms (one import or export per statement,
// literal specifiers), and the tests check every edge resolves to a file.
var (
	htmlRefRE = regexp.MustCompile(`<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*"([^"]+)"`)
	// import x from './a.js'; import {a, b} from './a.js'; export {a} from './a.js'
	staticImportRE = regexp.MustCompile(`(?m)^\s*(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"]+)['"]`)
	// import './a.js'
	bareImportRE = regexp.MustCompile(`(?m)^\s*import\s*['"]([^'"]+)['"]`)
	// import('./a.js')
	dynamicImportRE = regexp.MustCompile(`\bimport\(\s*['"]([^'"]+)['"]\s*\)`)
	// loadStyle('vendor/x.css'): a stylesheet a module adds to the page,
	// relative to the page (dom.js).
	loadStyleRE = regexp.MustCompile(`\bloadStyle\(\s*['"]([^'"]+)['"]`)
)

// edge is one file's reference to another.
type edge struct {
	to      string
	dynamic bool // loaded on demand: import() or loadStyle()
}

// refs lists the files that file refers to, as names under console/.
func refs(name string, body []byte) ([]edge, error) {
	var out []edge
	// add resolves spec against the folder from; a module specifier
	// must start with ./, ../ or / (a bare one needs a bundler), a
	// page-relative URL (HTML, loadStyle) may be plain.
	add := func(from, spec string, dynamic, module bool) error {
		if strings.HasPrefix(spec, "data:") || strings.Contains(spec, "://") {
			return fmt.Errorf("%s: refers to %s: only the console's own files may be loaded", name, spec)
		}
		var p string
		switch {
		case strings.HasPrefix(spec, "/"):
			p = path.Clean(spec[1:])
		case strings.HasPrefix(spec, "./"), strings.HasPrefix(spec, "../"), !module:
			p = path.Join(from, spec)
		default:
			return fmt.Errorf("%s: import of %q is neither relative nor absolute (no bare specifiers without a bundler)", name, spec)
		}
		if p == "." || p == "" {
			p = "index.html"
		}
		out = append(out, edge{to: p, dynamic: dynamic})
		return nil
	}
	dir := path.Dir(name)
	if dir == "." {
		dir = ""
	}
	src := string(body)
	switch path.Ext(name) {
	case ".html":
		for _, m := range htmlRefRE.FindAllStringSubmatch(src, -1) {
			if err := add(dir, m[1], false, false); err != nil {
				return nil, err
			}
		}
	case ".js", ".mjs":
		for _, re := range []*regexp.Regexp{staticImportRE, bareImportRE} {
			for _, m := range re.FindAllStringSubmatch(src, -1) {
				if err := add(dir, m[1], false, true); err != nil {
					return nil, err
				}
			}
		}
		for _, m := range dynamicImportRE.FindAllStringSubmatch(src, -1) {
			if err := add(dir, m[1], true, true); err != nil {
				return nil, err
			}
		}
		for _, m := range loadStyleRE.FindAllStringSubmatch(src, -1) {
			if err := add("", m[1], true, false); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// walk follows the references from the entries; follow decides, for each
// edge, whether it is taken.
func walk(assets map[string]*asset, entries []string, follow func(from string, e edge) bool) ([]string, error) {
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if seen[name] {
			return nil
		}
		a := assets[name]
		if a == nil {
			return fmt.Errorf("web: %s is referred to but is not a console file", name)
		}
		seen[name] = true
		es, err := refs(name, a.body)
		if err != nil {
			return fmt.Errorf("web: %w", err)
		}
		for _, e := range es {
			if !follow(name, e) {
				continue
			}
			if err := visit(e.to); err != nil {
				return fmt.Errorf("%w (from %s)", err, name)
			}
		}
		return nil
	}
	for _, e := range entries {
		if err := visit(e); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// firstVisit decides which edges the first visit takes: every static one,
// and the on-demand ones, except the router's pages other than the login
// and dashboard.
func firstVisit(from string, e edge) bool {
	if e.dynamic && strings.HasPrefix(e.to, "pages/") {
		return slices.Contains(firstVisitPages, e.to)
	}
	return true
}

// FirstLoadFile is one file of the first visit and its size on the wire.
type FirstLoadFile struct {
	Name      string
	GzipBytes int
}

// FirstLoad lists the files a browser fetches on its first visit (the
// login page, then the dashboard) with their sizes as served (gzip, or as
// they are when gzip does not help): index.html and its import graph as
// described at firstVisitPages, plus the translation file i18n.js fetches
// (the larger of the two languages).
func FirstLoad() ([]FirstLoadFile, error) {
	assets, err := loadAssets()
	if err != nil {
		return nil, err
	}
	names, err := walk(assets, append([]string{"index.html"}, firstVisitPages...), firstVisit)
	if err != nil {
		return nil, err
	}
	lang := "i18n/en.json"
	if a, b := assets["i18n/en.json"], assets["i18n/zh-CN.json"]; a == nil || b == nil {
		return nil, fmt.Errorf("web: a translation file is missing")
	} else if wireSize(b) > wireSize(a) {
		lang = "i18n/zh-CN.json"
	}
	names = append(names, lang)
	out := make([]FirstLoadFile, 0, len(names))
	for _, n := range names {
		out = append(out, FirstLoadFile{Name: n, GzipBytes: wireSize(assets[n])})
	}
	return out, nil
}

// FirstLoadBytes is the sum of FirstLoad's sizes: the bytes of console
// files a first visit moves over the network.
func FirstLoadBytes() (int, error) {
	fl, err := FirstLoad()
	if err != nil {
		return 0, err
	}
	total := 0
	for _, f := range fl {
		total += f.GzipBytes
	}
	return total, nil
}

func wireSize(a *asset) int {
	if a.gz != nil {
		return len(a.gz)
	}
	return len(a.body)
}
