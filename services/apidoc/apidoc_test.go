package apidoc

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type inner struct {
	Note string `json:"note,omitempty"`
}

type sample struct {
	inner
	Name    string            `json:"name"`
	Size    int64             `json:"size_bytes"`
	Ratio   float64           `json:"ratio,omitempty"`
	When    time.Time         `json:"when,omitzero"`
	Tags    []string          `json:"tags"`
	Labels  map[string]string `json:"labels,omitempty"`
	Next    *sample           `json:"next,omitempty"`
	Skipped string            `json:"-"`
	hidden  int
}

func TestSchemas(t *testing.T) {
	g := &schemas{defs: map[string]any{}}
	ref := g.of(reflect.TypeOf(sample{}))
	if diff := cmp.Diff(map[string]any{"$ref": "#/components/schemas/apidoc.sample"}, ref); diff != "" {
		t.Fatal(diff)
	}
	want := map[string]any{
		"type": "object", "additionalProperties": false,
		"properties": map[string]any{
			"note":       map[string]any{"type": "string"},
			"name":       map[string]any{"type": "string"},
			"size_bytes": map[string]any{"type": "integer"},
			"ratio":      map[string]any{"type": "number"},
			"when":       map[string]any{"type": "string", "format": "date-time"},
			"tags":       map[string]any{"type": []string{"array", "null"}, "items": map[string]any{"type": "string"}},
			"labels":     map[string]any{"type": []string{"object", "null"}, "additionalProperties": map[string]any{"type": "string"}},
			"next":       map[string]any{"anyOf": []any{map[string]any{"$ref": "#/components/schemas/apidoc.sample"}, map[string]any{"type": "null"}}},
		},
		"required": []string{"name", "size_bytes", "tags"},
	}
	if diff := cmp.Diff(want, g.defs["apidoc.sample"]); diff != "" {
		t.Error(diff)
	}
	_ = sample{}.hidden
}

func TestDocument(t *testing.T) {
	routes := []Route{
		{Method: "GET", Path: "/api/v1/vms/{name}", Access: Viewer, Summary: "Get a VM", Response: sample{}},
		{Method: "DELETE", Path: "/api/v1/vms/{name}", Access: Operator},
		{Method: "POST", Path: "/api/v1/cluster/vms/ft", Access: Member, Request: sample{}},
		{Method: "GET", Path: "/api/v1/events", Access: Viewer, Websocket: true},
	}
	h, err := Handler("Tandem", "test", routes)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("%v %s", err, w.Body)
	}
	tests := []struct {
		path, method, id, role string
		status                 string
		internal               bool
	}{
		{"/api/v1/vms/{name}", "get", "getVmsName", "viewer", "200", false},
		{"/api/v1/vms/{name}", "delete", "deleteVmsName", "operator", "204", false},
		{"/api/v1/cluster/vms/ft", "post", "postClusterVmsFt", "member", "204", true},
		{"/api/v1/events", "get", "getEvents", "viewer", "101", false},
	}
	for _, tt := range tests {
		op := doc.Paths[tt.path][tt.method]
		if op == nil {
			t.Errorf("%s %s missing", tt.method, tt.path)
			continue
		}
		responses, _ := op["responses"].(map[string]any)
		if op["operationId"] != tt.id || op["x-tandem-role"] != tt.role || responses[tt.status] == nil || (op["x-internal"] == true) != tt.internal {
			t.Errorf("%s %s: %v", tt.method, tt.path, op)
		}
	}
}

func TestRegister(t *testing.T) {
	mux := http.NewServeMux()
	var guarded []Access
	Register(mux, []Route{{Method: "GET", Path: "/x/{id}", Access: Admin, Handler: func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.PathValue("id")))
	}}}, func(r Route) http.HandlerFunc { guarded = append(guarded, r.Access); return r.Handler })
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/x/42", nil))
	if w.Body.String() != "42" || len(guarded) != 1 || guarded[0] != Admin {
		t.Errorf("%q %v", w.Body, guarded)
	}
}
