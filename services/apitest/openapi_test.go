package apitest

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// openAPI is the served document, read back generically: the test
// checks answers against it as any client would.
type openAPI struct {
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]any `json:"schemas"`
	} `json:"components"`
}

type operation struct {
	method, path  string
	access        string
	internal      bool
	websocket     bool
	hasBody       bool
	successStatus int
	schema        any
}

func (d *openAPI) operations() []operation {
	var out []operation
	for path, methods := range d.Paths {
		for method, raw := range methods {
			var op struct {
				Role        string                     `json:"x-tandem-role"`
				Internal    bool                       `json:"x-internal"`
				RequestBody any                        `json:"requestBody"`
				Responses   map[string]json.RawMessage `json:"responses"`
			}
			_ = json.Unmarshal(raw, &op)
			o := operation{method: strings.ToUpper(method), path: path, access: op.Role, internal: op.Internal, hasBody: op.RequestBody != nil}
			for code, resp := range op.Responses {
				if n, err := strconv.Atoi(code); err == nil {
					o.successStatus = n
					var r struct {
						Content map[string]struct {
							Schema any `json:"schema"`
						} `json:"content"`
					}
					_ = json.Unmarshal(resp, &r)
					if c, ok := r.Content["application/json"]; ok {
						o.schema = c.Schema
					}
				}
			}
			o.websocket = o.successStatus == 101
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b operation) int { return strings.Compare(a.path+a.method, b.path+b.method) })
	return out
}

func (d *openAPI) find(method, path string) operation {
	for _, op := range d.operations() {
		if op.method == method && pathMatches(op.path, path) {
			return op
		}
	}
	return operation{}
}

func pathMatches(pattern, path string) bool {
	p, q := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(p) != len(q) {
		return false
	}
	for i := range p {
		if !strings.HasPrefix(p[i], "{") && p[i] != q[i] {
			return false
		}
	}
	return true
}

// concretePath fills the path's parameters with a name nothing has.
func (o operation) concretePath() string {
	parts := strings.Split(o.path, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, "{") {
			parts[i] = "zz-none"
			if p == "{kind}" {
				parts[i] = "serial"
			}
		}
	}
	return strings.Join(parts, "/")
}

// validate checks v (decoded JSON) against a JSON Schema of the subset
// apidoc writes.
func (d *openAPI) validate(schema any, v any, at string) error {
	s, _ := schema.(map[string]any)
	if ref, ok := s["$ref"].(string); ok {
		return d.validate(d.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")], v, at)
	}
	if any_, ok := s["anyOf"].([]any); ok {
		var errs []string
		for _, sub := range any_ {
			err := d.validate(sub, v, at)
			if err == nil {
				return nil
			}
			errs = append(errs, err.Error())
		}
		return fmt.Errorf("%s: none of: %s", at, strings.Join(errs, "; "))
	}
	var types []string
	switch t := s["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			types = append(types, fmt.Sprint(x))
		}
	}
	if len(types) == 0 {
		return nil // any value
	}
	kind := jsonKind(v)
	if !slices.Contains(types, kind) && !(kind == "integer" && slices.Contains(types, "number")) {
		return fmt.Errorf("%s: %s, want %v", at, kind, types)
	}
	switch kind {
	case "object":
		obj := v.(map[string]any)
		if props, ok := s["properties"].(map[string]any); ok {
			for _, r := range asStrings(s["required"]) {
				if _, ok := obj[r]; !ok {
					return fmt.Errorf("%s: no %q", at, r)
				}
			}
			for k, val := range obj {
				sub, ok := props[k]
				if !ok {
					return fmt.Errorf("%s: %q is not in the schema", at, k)
				}
				if err := d.validate(sub, val, at+"."+k); err != nil {
					return err
				}
			}
		}
		if extra, ok := s["additionalProperties"].(map[string]any); ok {
			for k, val := range obj {
				if err := d.validate(extra, val, at+"."+k); err != nil {
					return err
				}
			}
		}
	case "array":
		for i, item := range v.([]any) {
			if err := d.validate(s["items"], item, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if x == math.Trunc(x) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}

func asStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			out = append(out, fmt.Sprint(x))
		}
	}
	return out
}
