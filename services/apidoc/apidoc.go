// Package apidoc describes Tandem's REST API. Each service declares its
// routes once, as data (method, path, who may call, request and answer
// types), registers its handlers from that list, and the front door
// serves the OpenAPI document built from every service's list at
// /api/v1/openapi.json. The document cannot drift from the code: it is
// made of the same values the mux is.
package apidoc

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Access is who may call a route.
type Access string

// Access levels, least first. Viewer, Operator and Admin are the user
// roles (an API token or session of that role or above).
const (
	Public   Access = "public"   // anyone: login, health, what a joining member needs
	Viewer   Access = "viewer"   // any user
	Operator Access = "operator" // operators and admins
	Admin    Access = "admin"    // admins
	Member   Access = "member"   // cluster members only (their certificate); internal
	Local    Access = "local"    // this node's services, on its socket; internal
	// Installer is a machine's installer on the provisioning network: no
	// user, but the key it reported (its handlers check it); internal.
	Installer Access = "installer"
)

// Param is a query parameter.
type Param struct {
	Name, Description string
	Type              string // string, integer, boolean
}

// Route is one endpoint.
type Route struct {
	Method, Path string // "GET", "/api/v1/vms/{name}"
	Summary      string
	Access       Access
	// Request is a value of the JSON body's type (nil: no body), Response
	// of the answer's (nil: no body). Status is the success status
	// (default 200; 204 when Response is nil).
	Request, Response any
	Status            int
	Query             []Param
	// Websocket routes upgrade the connection. Idempotent routes (creates)
	// take an Idempotency-Key header: the same key again answers with what
	// the first request made.
	Websocket  bool
	Idempotent bool
	Handler    http.HandlerFunc
}

// Pattern is the route's ServeMux pattern.
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// Internal reports whether the route is for members and services, not
// users: the document lists it apart.
func (r Route) Internal() bool {
	return r.Access == Member || r.Access == Local || r.Access == Installer
}

// SuccessStatus is the status a successful call answers.
func (r Route) SuccessStatus() int {
	switch {
	case r.Status != 0:
		return r.Status
	case r.Websocket:
		return http.StatusSwitchingProtocols
	case r.Response == nil:
		return http.StatusNoContent
	}
	return http.StatusOK
}

// Register adds routes to mux, each wrapped by guard (which enforces its
// Access).
func Register(mux *http.ServeMux, routes []Route, guard func(Route) http.HandlerFunc) {
	for _, r := range routes {
		mux.HandleFunc(r.Pattern(), guard(r))
	}
}

// ErrorBody is every error's answer (frontdoor.ErrorBody's shape).
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field,omitempty"`
	} `json:"error"`
}

// Document builds the OpenAPI 3.1 document of routes.
func Document(title, version string, routes []Route) map[string]any {
	g := &schemas{defs: map[string]any{}}
	paths := map[string]map[string]any{}
	routes = slices.Clone(routes)
	slices.SortStableFunc(routes, func(a, b Route) int { return strings.Compare(a.Path, b.Path) })
	for _, r := range routes {
		op := map[string]any{
			"operationId":   operationID(r),
			"summary":       r.Summary,
			"x-tandem-role": string(r.Access),
			"tags":          []string{tag(r.Path)},
		}
		if r.Internal() {
			op["x-internal"] = true
		}
		if r.Access != Public && r.Access != Local {
			op["security"] = []map[string][]string{{"session": {}}, {"token": {}}, {"basic": {}}}
			switch r.Access {
			case Member:
				op["security"] = []map[string][]string{{"member": {}}}
			case Installer:
				op["security"] = []map[string][]string{{"installer": {}}}
			}
		} else {
			op["security"] = []map[string][]string{}
		}
		var params []map[string]any
		for _, name := range pathParams(r.Path) {
			params = append(params, map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range r.Query {
			typ := q.Type
			if typ == "" {
				typ = "string"
			}
			params = append(params, map[string]any{"name": q.Name, "in": "query", "description": q.Description, "schema": map[string]any{"type": typ}})
		}
		if r.Idempotent {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "description": "the same key (from the same user, within a day) answers with what its first request made",
				"schema": map[string]any{"type": "string", "maxLength": 128}})
		}
		if params != nil {
			op["parameters"] = params
		}
		if r.Request != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": g.of(reflect.TypeOf(r.Request))}}}
		}
		ok := map[string]any{"description": "success"}
		if r.Response != nil && !r.Websocket {
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.of(reflect.TypeOf(r.Response))}}
		}
		op["responses"] = map[string]any{
			fmt.Sprint(r.SuccessStatus()): ok,
			"default":                     map[string]any{"description": "an error", "content": map[string]any{"application/json": map[string]any{"schema": g.of(reflect.TypeOf(ErrorBody{}))}}},
		}
		if paths[r.Path] == nil {
			paths[r.Path] = map[string]any{}
		}
		paths[r.Path][strings.ToLower(r.Method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": title, "version": version},
		"paths":   paths,
		"components": map[string]any{
			"schemas": g.defs,
			"securitySchemes": map[string]any{
				"session": map[string]any{"type": "apiKey", "in": "cookie", "name": "tandem_session", "description": "the console's session; every change also sends its CSRF token in X-Tandem-CSRF"},
				"token":   map[string]any{"type": "http", "scheme": "bearer", "description": "an API token, tdm_<id>_<secret>"},
				"basic":   map[string]any{"type": "http", "scheme": "basic"},
				"member":  map[string]any{"type": "mutualTLS", "description": "a cluster member's certificate"},
				"installer": map[string]any{"type": "apiKey", "in": "header", "name": "X-Tandem-Machine-Key",
					"description": "the key a machine's installer made at boot and reported the hash of"},
			},
		},
	}
}

func operationID(r Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(r.Method))
	for _, part := range strings.Split(strings.TrimPrefix(r.Path, "/api/v1/"), "/") {
		part = strings.Trim(part, "{}")
		for _, w := range strings.FieldsFunc(part, func(c rune) bool { return c == '-' || c == '_' || c == '.' }) {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

func tag(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/api/v1/"), "/")
	return parts[0]
}

// pathParams returns the {names} in a path.
func pathParams(path string) []string {
	var out []string
	for _, part := range strings.Split(path, "/") {
		if strings.HasPrefix(part, "{") && strings.HasSuffix(part, "}") {
			out = append(out, strings.TrimSuffix(strings.Trim(part, "{}"), "..."))
		}
	}
	return out
}

// schemas turns Go types into JSON Schemas, named structs once each in
// the components.
type schemas struct {
	defs map[string]any
}

var timeType = reflect.TypeOf(time.Time{})
var durationType = reflect.TypeOf(time.Duration(0))

func (g *schemas) of(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == durationType:
		return map[string]any{"type": "integer", "description": "nanoseconds"}
	}
	switch t.Kind() {
	case reflect.Pointer: // nil is null
		return map[string]any{"anyOf": []any{g.of(t.Elem()), map[string]any{"type": "null"}}}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		// A nil slice or map is null in Go's JSON.
		return map[string]any{"type": []string{"array", "null"}, "items": g.of(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": []string{"object", "null"}, "additionalProperties": g.of(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := t.Name()
		if name == "" {
			return g.object(t)
		}
		name = schemaName(t)
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = map[string]any{} // a placeholder stops recursion
			g.defs[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

// schemaName is a struct's name qualified by its package: cluster.Health.
func schemaName(t reflect.Type) string {
	pkg := t.PkgPath()
	if i := strings.LastIndex(pkg, "/"); i >= 0 {
		pkg = pkg[i+1:]
	}
	name := t.Name()
	if i := strings.Index(name, "["); i >= 0 { // a generic instance
		name = name[:i]
	}
	return pkg + "." + name
}

func (g *schemas) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	g.fields(t, props, &required)
	obj := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if required != nil {
		obj["required"] = required
	}
	return obj
}

// fields adds a struct's JSON fields to props, an embedded struct's
// fields as its own unless the struct has a field of that name (as
// encoding/json does).
func (g *schemas) fields(t reflect.Type, props map[string]any, required *[]string) {
	var embedded []reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if ft := f.Type; f.Anonymous && name == "" && (ft.Kind() == reflect.Struct || ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct) {
			embedded = append(embedded, f)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.of(f.Type)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") && f.Type.Kind() != reflect.Pointer {
			*required = append(*required, name)
		}
	}
	for _, f := range embedded {
		inner, innerRequired := map[string]any{}, []string{}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		g.fields(ft, inner, &innerRequired)
		for _, name := range slices.Sorted(maps.Keys(inner)) {
			if _, ok := props[name]; ok {
				continue
			}
			props[name] = inner[name]
			// A nil embedded pointer has no fields: none required.
			if f.Type.Kind() != reflect.Pointer && slices.Contains(innerRequired, name) {
				*required = append(*required, name)
			}
		}
	}
}

// Handler serves the document of routes as JSON, built once.
func Handler(title, version string, routes []Route) (http.Handler, error) {
	body, err := json.MarshalIndent(Document(title, version, routes), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("the API's document: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	}), nil
}
