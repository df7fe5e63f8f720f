package apitest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandemhci/tandem/services/cluster"
	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/directory"
	"github.com/tandemhci/tandem/services/nstest"
)

// api calls the cluster IP from the client namespace.
type api struct {
	t  *testing.T
	c  *clustertest.Cluster
	hc *http.Client
}

// cred is how a call authenticates.
type cred struct {
	name        string
	user, pass  string // Basic
	bearer      string // API token
	cookie      string // session cookie value
	csrf        string // sent as X-Tandem-CSRF
	origin      string // sent as Origin
	level       int    // 0 anonymous, 1 viewer, 2 operator, 3 admin
	noCSRFCheck bool
}

type answer struct {
	status int
	body   []byte
	header http.Header
}

func (a answer) errorCode() string {
	var e struct {
		Error struct{ Code, Message, Field string } `json:"error"`
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

func (a answer) String() string {
	return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(a.body))
}

func (x *api) call(method, path string, who cred, body []byte, header ...string) answer {
	x.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, "https://"+clustertest.ClusterIP+path, rd)
	if err != nil {
		x.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case who.user != "":
		req.SetBasicAuth(who.user, who.pass)
	case who.bearer != "":
		req.Header.Set("Authorization", "Bearer "+who.bearer)
	case who.cookie != "":
		req.AddCookie(&http.Cookie{Name: cluster.SessionCookie, Value: who.cookie})
	}
	if who.csrf != "" {
		req.Header.Set(cluster.HeaderCSRF, who.csrf)
	}
	if who.origin != "" {
		req.Header.Set("Origin", who.origin)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	for attempt := 0; ; attempt++ {
		resp, err := x.hc.Do(req)
		if err != nil {
			x.t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < 20 {
			time.Sleep(250 * time.Millisecond)
			if body != nil {
				req.Body = io.NopCloser(bytes.NewReader(body))
			}
			continue
		}
		return answer{resp.StatusCode, b, resp.Header}
	}
}

func (x *api) must(method, path string, who cred, in, out any, want int) {
	x.t.Helper()
	var body []byte
	if in != nil {
		body, _ = json.Marshal(in)
	}
	a := x.call(method, path, who, body)
	if a.status != want {
		x.t.Fatalf("%s %s as %s: %v, want %d", method, path, who.name, a, want)
	}
	if out != nil {
		if err := json.Unmarshal(a.body, out); err != nil {
			x.t.Fatalf("%s %s: %v in %s", method, path, err, a.body)
		}
	}
}

// login starts a console session, as the browser would.
func (x *api) login(user, pass string) cred {
	x.t.Helper()
	body, _ := json.Marshal(cluster.LoginRequest{User: user, Password: pass})
	a := x.call("POST", "/api/v1/session", cred{origin: origin}, body)
	if a.status != http.StatusCreated {
		x.t.Fatalf("login %s: %v", user, a)
	}
	var info cluster.SessionInfo
	_ = json.Unmarshal(a.body, &info)
	var value string
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == cluster.SessionCookie {
			value = c.Value
			if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
				x.t.Errorf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/", c)
			}
		}
	}
	if value == "" || info.CSRFToken == "" {
		x.t.Fatalf("login %s: no cookie or CSRF token: %v", user, a)
	}
	return cred{name: user + " (session)", cookie: value, csrf: info.CSRFToken, origin: origin}
}

var origin = "https://" + clustertest.ClusterIP

func newAPI(t *testing.T) *api {
	c := clustertest.New(t, clustertest.Options{Storage: true, VMs: true, BootDir: t.TempDir(), APITimeout: 20 * time.Second})
	c.Form()
	c.WaitHealthy(30 * time.Second)
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext:     c.ClientNS.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	return &api{t: t, c: c, hc: hc}
}

// TestAPI runs the API's contract against a real cluster: the OpenAPI
// document and its conformance, each role against each endpoint, CSRF
// and origin checks, sessions and API tokens ending, the lockout, bad
// input, paging, and the events websocket.
func TestAPI(t *testing.T) {
	x := newAPI(t)
	admin := cred{name: "admin", user: x.c.Admin, pass: x.c.Password, level: 3}
	for _, u := range []struct{ name, role string }{{"olga", "operator"}, {"vera", "viewer"}} {
		x.must("POST", "/api/v1/users", admin, map[string]string{"name": u.name, "role": u.role, "password": "pass-" + u.name + "-123"}, nil, http.StatusCreated)
	}
	operator := cred{name: "olga", user: "olga", pass: "pass-olga-123", level: 2}
	viewer := cred{name: "vera", user: "vera", pass: "pass-vera-123", level: 1}
	anonymous := cred{name: "anonymous"}

	var doc openAPI
	x.must("GET", "/api/v1/openapi.json", anonymous, nil, &doc, http.StatusOK)
	ops := doc.operations()
	if len(ops) < 50 {
		t.Fatalf("the document lists %d operations", len(ops))
	}

	t.Run("conformance", func(t *testing.T) {
		// Data for the answers to have something in them.
		x.must("POST", "/api/v1/volumes", admin, map[string]any{"name": "conf-disk", "size_bytes": 1 << 20}, nil, http.StatusCreated)
		x.must("POST", "/api/v1/vms", admin, map[string]any{"name": "conf-vm", "cpus": 1, "memory_mib": 64, "disks": []map[string]any{{"volume": "conf-disk"}}}, nil, http.StatusCreated)
		checked := 0
		for _, op := range ops {
			// The namespace tests run no supervisor, so a node's health
			// answers 503 here (the image's boot test checks it).
			if op.method != "GET" || op.websocket || op.internal || op.schema == nil || strings.Contains(op.path, "{") || op.path == "/api/v1/health" {
				continue
			}
			a := x.call("GET", op.path, admin, nil)
			if a.status != op.successStatus {
				t.Errorf("GET %s: %v, want %d", op.path, a, op.successStatus)
				continue
			}
			var v any
			if err := json.Unmarshal(a.body, &v); err != nil {
				t.Errorf("GET %s: %v", op.path, err)
				continue
			}
			if err := doc.validate(op.schema, v, "$"); err != nil {
				t.Errorf("GET %s does not match its schema: %v\n%s", op.path, err, a.body)
			}
			checked++
		}
		for _, path := range []string{"/api/v1/vms/conf-vm", "/api/v1/volumes/conf-disk", "/api/v1/users/olga"} {
			op := doc.find("GET", path)
			a := x.call("GET", path, admin, nil)
			var v any
			_ = json.Unmarshal(a.body, &v)
			if err := doc.validate(op.schema, v, "$"); a.status != 200 || err != nil {
				t.Errorf("GET %s: %v: %v", path, a, err)
			}
			checked++
		}
		t.Logf("%d answers checked against their schemas", checked)
	})

	t.Run("authorization matrix", func(t *testing.T) {
		for _, op := range ops {
			if op.access == "public" || op.internal && (op.access == "local" || op.access == "installer") {
				continue
			}
			path := op.concretePath()
			for _, who := range []cred{anonymous, viewer, operator, admin} {
				var body []byte
				if op.hasBody {
					body = []byte("{}")
				}
				a := x.call(op.method, path, who, body)
				need := map[string]int{"viewer": 1, "operator": 2, "admin": 3, "member": 4}[op.access]
				switch {
				case who.level == 0 && a.status != http.StatusUnauthorized && op.access != "member":
					t.Errorf("%s %s as anonymous: %v, want 401", op.method, path, a)
				case who.level == 0:
				case who.level < need && a.status != http.StatusForbidden:
					t.Errorf("%s %s as %s (%s needed): %v, want 403", op.method, path, who.name, op.access, a)
				case who.level >= need && (a.status == http.StatusUnauthorized || a.status == http.StatusForbidden && a.errorCode() == "forbidden"):
					t.Errorf("%s %s as %s: %v, want it allowed", op.method, path, who.name, a)
				case a.status >= 500 && a.status != http.StatusBadGateway:
					t.Errorf("%s %s as %s: %v", op.method, path, who.name, a)
				}
			}
		}
	})

	t.Run("CSRF and origin", func(t *testing.T) {
		s := x.login(x.c.Admin, x.c.Password)
		if a := x.call("GET", "/api/v1/vms", s, nil); a.status != 200 {
			t.Fatalf("a read with the session: %v", a)
		}
		noToken := s
		noToken.csrf = ""
		for _, op := range ops {
			if op.method == "GET" || op.access == "public" || op.internal {
				continue
			}
			var body []byte
			if op.hasBody {
				body = []byte("{}")
			}
			if a := x.call(op.method, op.concretePath(), noToken, body); a.status != http.StatusForbidden || a.errorCode() != "csrf" {
				t.Errorf("%s %s with the session but no CSRF token: %v", op.method, op.concretePath(), a)
			}
		}
		foreign := s
		foreign.origin = "https://evil.example"
		if a := x.call("PUT", "/api/v1/labels/csrf", foreign, []byte(`{"value":"x"}`)); a.status != http.StatusForbidden || a.errorCode() != "csrf" {
			t.Errorf("a change from another origin: %v", a)
		}
		foreignBasic := admin
		foreignBasic.origin = "https://evil.example"
		if a := x.call("GET", "/api/v1/vms", foreignBasic, nil); a.status != http.StatusForbidden {
			t.Errorf("a read with a password from another origin: %v", a)
		}
		if a := x.call("PUT", "/api/v1/labels/csrf", s, []byte(`{"value":"x"}`)); a.status != 200 {
			t.Errorf("a change with the token: %v", a)
		}
		if a := x.call("DELETE", "/api/v1/session", s, nil); a.status != http.StatusNoContent {
			t.Fatalf("logout: %v", a)
		}
		if a := x.call("GET", "/api/v1/vms", s, nil); a.status != http.StatusUnauthorized {
			t.Errorf("a read after logout: %v", a)
		}
	})

	t.Run("sessions and tokens end", func(t *testing.T) {
		s := x.login("olga", "pass-olga-123")
		var tok cluster.APITokenView
		x.must("POST", "/api/v1/tokens", s, map[string]any{"name": "ci", "role": "viewer", "ttl_days": 1}, &tok, http.StatusCreated)
		bearer := cred{name: "olga's viewer token", bearer: tok.Secret}
		if a := x.call("GET", "/api/v1/vms", bearer, nil); a.status != 200 {
			t.Errorf("a read with the token: %v", a)
		}
		if a := x.call("PUT", "/api/v1/labels/t", bearer, []byte(`{"value":"x"}`)); a.status != http.StatusForbidden {
			t.Errorf("an operator's change with a viewer token: %v", a)
		}
		if a := x.call("POST", "/api/v1/tokens", bearer, []byte(`{"name":"more"}`)); a.status != http.StatusForbidden {
			t.Errorf("a token made by a token: %v", a)
		}
		if a := x.call("POST", "/api/v1/tokens", s, []byte(`{"name":"up","role":"admin"}`)); a.status != http.StatusBadRequest {
			t.Errorf("a token above the user's role: %v", a)
		}
		var list []cluster.APITokenView
		x.must("GET", "/api/v1/tokens", s, nil, &list, 200)
		if len(list) != 1 || list[0].Secret != "" {
			t.Errorf("token list %+v: want one, without its secret", list)
		}
		x.must("DELETE", "/api/v1/tokens/"+tok.ID, s, nil, nil, http.StatusNoContent)
		if a := x.call("GET", "/api/v1/vms", bearer, nil); a.status != http.StatusUnauthorized {
			t.Errorf("a read with a revoked token: %v", a)
		}
		x.must("PATCH", "/api/v1/users/olga", admin, map[string]any{"disabled": true}, nil, 200)
		if a := x.call("GET", "/api/v1/vms", s, nil); a.status != http.StatusUnauthorized {
			t.Errorf("a disabled user's session still reads: %v", a)
		}
		x.must("PATCH", "/api/v1/users/olga", admin, map[string]any{"disabled": false}, nil, 200)
		var audit []map[string]any
		x.must("GET", "/api/v1/audit?limit=1000", admin, nil, &audit, 200)
		var actions []string
		for _, l := range audit {
			actions = append(actions, fmt.Sprint(l["action"]))
		}
		for _, want := range []string{"session.create", "session.end", "api-token.create", "api-token.revoke", "user.update"} {
			if !slices.Contains(actions, want) {
				t.Errorf("the audit log has no %s: %v", want, actions)
			}
		}
	})

	t.Run("lockout", func(t *testing.T) {
		wrong := []byte(`{"user":"vera","password":"wrong-password"}`)
		for i := range 5 {
			if a := x.call("POST", "/api/v1/session", anonymous, wrong); a.status != http.StatusUnauthorized {
				t.Fatalf("wrong password %d: %v", i+1, a)
			}
		}
		a := x.call("POST", "/api/v1/session", anonymous, []byte(`{"user":"vera","password":"pass-vera-123"}`))
		if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
			t.Errorf("the right password during the lockout: %v (Retry-After %q)", a, a.header.Get("Retry-After"))
		}
		if a := x.call("GET", "/api/v1/vms", viewer, nil); a.status != http.StatusTooManyRequests {
			t.Errorf("Basic credentials of a locked-out user: %v", a)
		}
		if a := x.call("GET", "/api/v1/vms", operator, nil); a.status != 200 {
			t.Errorf("another user during the lockout: %v", a)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tt := range []struct {
			method, path, body string
			status             int
			code               string
		}{
			{"POST", "/api/v1/vms", `{"name": "x", "cpus": 1,`, 400, "bad_json"},
			{"POST", "/api/v1/vms", `{"name": "x", "cpus": "one"}`, 400, "bad_json"},
			{"POST", "/api/v1/vms", `{"name": "x", "cpus": 1, "memory_mib": 64, "colour": "red"}`, 400, "bad_json"},
			{"POST", "/api/v1/vms", `{"name": "x"} {"name": "y"}`, 400, "bad_json"},
			{"POST", "/api/v1/vms", `{"name": "<script>alert(1)</script>", "cpus": 1, "memory_mib": 64}`, 400, "invalid"},
			{"POST", "/api/v1/users", `{"name": "../../etc/passwd", "role": "viewer", "password": "long-enough"}`, 400, "invalid"},
			{"POST", "/api/v1/users", `{"name": "short", "role": "viewer", "password": "short"}`, 400, "invalid"},
			{"POST", "/api/v1/users", `{"name": "x", "role": "root", "password": "long-enough"}`, 400, "invalid"},
			{"POST", "/api/v1/volumes", `{"name": "big", "size_bytes": ` + strings.Repeat("9", 30) + `}`, 400, "bad_json"},
			{"POST", "/api/v1/volumes", `{"name": "` + strings.Repeat("a", 70<<10) + `"}`, 413, "too_large"},
			{"GET", "/api/v1/vms/..%2f..%2fetc%2fpasswd", "", 404, "not_found"},
			{"GET", "/api/v1/storage/volumes/..%2fcluster", "", 404, "not_found"},
			{"GET", "/api/v1/users?limit=0", "", 400, "invalid"},
			{"GET", "/api/v1/activity?limit=x", "", 400, "invalid"},
		} {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			a := x.call(tt.method, tt.path, admin, body)
			if a.status != tt.status || a.errorCode() != tt.code {
				t.Errorf("%s %s %.60s: %v, want %d %s", tt.method, tt.path, tt.body, a, tt.status, tt.code)
			}
		}
		// Free text is stored as text, and answered as JSON (escaped):
		// the console shows it with textContent.
		xss := `<img src=x onerror=alert(1)>`
		x.must("PATCH", "/api/v1/volumes/conf-disk", admin, map[string]any{"description": xss}, nil, 200)
		a := x.call("GET", "/api/v1/volumes/conf-disk", admin, nil)
		if bytes.Contains(a.body, []byte("<img")) || a.header.Get("Content-Type") != "application/json" {
			t.Errorf("a description came back unescaped, or not as JSON: %s %s", a.header.Get("Content-Type"), a.body)
		}
	})

	t.Run("metrics and stats", func(t *testing.T) {
		// vera is locked out by now: olga reads. A node has a sample 2 s
		// after its VM manager starts.
		var a answer
		nstest.WaitFor(t, 10*time.Second, "a node sample in /metrics", func() bool {
			a = x.call("GET", "/metrics", operator, nil)
			return strings.Contains(string(a.body), "tandem_node_cpu_percent{")
		})
		for _, want := range []string{`tandem_raft_leader{member="node-`, `tandem_cluster_member{member="witness",role="witness"`,
			`tandem_volume_size_bytes{volume="conf-disk"`, `tandem_node_cpu_percent{node="node-`, `tandem_scrape_part_up{part="storage"} 1`,
			`tandem_scrape_part_up{part="vmm"} 1`, `tandem_replica_in_sync_ratio{volume="conf-disk",node="node-`} {
			if a.status != 200 || !strings.Contains(string(a.body), want) {
				t.Errorf("/metrics lacks %s: %v", want, a)
			}
		}
		var st struct {
			NodeName string `json:"node_name"`
			Samples  []struct {
				NodeName string  `json:"node_name"`
				CPUPct   float64 `json:"cpu_pct"`
			} `json:"samples"`
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(st.Samples) == 0 && time.Now().Before(deadline) {
			x.must("GET", "/api/v1/vmm/stats?node=node-b", operator, nil, &st, 200)
			time.Sleep(500 * time.Millisecond)
		}
		if st.NodeName != "node-b" || len(st.Samples) == 0 || st.Samples[0].NodeName != "node-b" {
			t.Errorf("node-b's stats: %+v", st)
		}
	})

	t.Run("idempotent creates", func(t *testing.T) {
		body := []byte(`{"name": "idem-vol", "size_bytes": 1048576}`)
		first := x.call("POST", "/api/v1/volumes", admin, body, "Idempotency-Key", "create-idem-vol-1")
		again := x.call("POST", "/api/v1/volumes", admin, body, "Idempotency-Key", "create-idem-vol-1")
		if first.status != 201 || again.status != 201 || again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("a create sent twice with its key: %v / %v", first, again)
		}
		if a := x.call("POST", "/api/v1/volumes", admin, body); a.status != http.StatusConflict {
			t.Errorf("the same create without a key: %v", a)
		}
		if a := x.call("POST", "/api/v1/volumes", admin, body, "Idempotency-Key", "has space"); a.status != 400 {
			t.Errorf("a key with a space: %v", a)
		}
		s := x.login(x.c.Admin, x.c.Password)
		tok := []byte(`{"name": "idem"}`)
		if a := x.call("POST", "/api/v1/tokens", s, tok, "Idempotency-Key", "tok-1"); a.status != 201 {
			t.Errorf("a keyed token: %v", a)
		}
		if a := x.call("POST", "/api/v1/tokens", s, tok, "Idempotency-Key", "tok-1"); a.status != http.StatusConflict || !strings.Contains(a.String(), "shown once") {
			t.Errorf("a keyed token again (its secret is gone): %v", a)
		}
	})

	t.Run("tasks", func(t *testing.T) {
		wait := func(a answer, want string) directory.Task {
			t.Helper()
			loc := a.header.Get("Location")
			if !strings.HasPrefix(loc, "/api/v1/tasks/") {
				t.Fatalf("no task in the answer: %v %v", a, a.header)
			}
			var task directory.Task
			nstest.WaitFor(t, 60*time.Second, "task "+loc+" "+want, func() bool {
				x.must("GET", loc, admin, nil, &task, 200)
				return task.State != directory.TaskRunning
			})
			if task.State != want {
				t.Errorf("task %+v, want %s", task, want)
			}
			return task
		}
		// A node with no VM enters maintenance at once, and leaves it.
		var h cluster.Health
		x.must("GET", "/api/v1/cluster/health", admin, nil, &h, 200)
		var nodeB string
		for _, m := range h.Members {
			if m.Name == "node-b" {
				nodeB = m.ID
			}
		}
		on := x.call("POST", "/api/v1/cluster/members/"+nodeB+"/maintenance", admin, []byte(`{"on": true}`))
		if task := wait(on, directory.TaskDone); task.Kind != "node.maintenance" || task.User != "admin" {
			t.Errorf("maintenance task %+v", task)
		}
		wait(x.call("POST", "/api/v1/cluster/members/"+nodeB+"/maintenance", admin, []byte(`{"on": false}`)), directory.TaskDone)
		// A VM whose kernel is not there: its start fails, and says why.
		x.must("POST", "/api/v1/vms", admin, map[string]any{"name": "no-kernel", "cpus": 1, "memory_mib": 64,
			"boot": map[string]any{"kernel": "missing-vmlinux"}}, nil, http.StatusCreated)
		task := wait(x.call("POST", "/api/v1/vms/no-kernel/start", admin, []byte(`{}`)), directory.TaskFailed)
		if !strings.Contains(task.Message, "missing-vmlinux") {
			t.Errorf("a failed start's task says %q", task.Message)
		}
		var list []directory.Task
		x.must("GET", "/api/v1/tasks?state=failed", operator, nil, &list, 200)
		if len(list) == 0 || list[0].ID != task.ID {
			t.Errorf("failed tasks: %+v", list)
		}
		x.must("POST", "/api/v1/vms/no-kernel/stop", admin, map[string]any{"force": true}, nil, 200)
	})

	t.Run("certificate names the cluster IP", func(t *testing.T) {
		// A browser that trusts the cluster's CA checks the console at the
		// cluster IP, and at each node's address, without a warning.
		var caPEM []byte
		a := x.call("GET", "/api/v1/cluster/ca", anonymous, nil)
		caPEM = a.body
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			t.Fatalf("the CA: %v", a)
		}
		for _, host := range []string{clustertest.ClusterIP, x.c.A.IP, x.c.B.IP} {
			var err error
			nstest.WaitFor(t, 10*time.Second, "a certificate for "+host, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				raw, derr := x.c.ClientNS.DialContext(ctx, "tcp", host+":443")
				if derr != nil {
					err = derr
					return false
				}
				conn := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: host})
				defer conn.Close()
				err = conn.HandshakeContext(ctx)
				return err == nil
			})
		}
	})

	t.Run("paging", func(t *testing.T) {
		a := x.call("GET", "/api/v1/users?limit=1", admin, nil)
		var page []cluster.UserView
		_ = json.Unmarshal(a.body, &page)
		if a.status != 200 || len(page) != 1 || a.header.Get("X-Total-Count") != "3" || !strings.Contains(a.header.Get("Link"), "offset=1") {
			t.Errorf("first page: %v, total %q, link %q", a, a.header.Get("X-Total-Count"), a.header.Get("Link"))
		}
	})

	t.Run("provisioning", func(t *testing.T) {
		const mac = "52:54:00:9a:00:01"
		key := strings.Repeat("k", 40)
		report := []byte(`{"mac":"` + mac + `","address":"192.168.77.100","inventory":{"cpus":2,"memory_bytes":2147483648,"firmware":"uefi","disks":[{"name":"vda","size_bytes":8589934592}],"nics":[{"name":"eth0","mac":"` + mac + `","link":true}]}}`)
		installer := func(method, path string, body []byte, k string) answer {
			return x.call(method, path, anonymous, body, cluster.HeaderMachineKey, k)
		}
		if a := installer("POST", "/api/v1/provisioning/installer/report", report, key); a.status != http.StatusForbidden || !strings.Contains(string(a.body), "provisioning is off") {
			t.Errorf("a report while provisioning is off: %v", a)
		}
		bad := map[string]any{"enabled": true, "node": "node-a", "mode": "dhcp", "address": "192.168.77.1/24", "range_start": "192.168.77.100", "range_end": "192.168.78.9"}
		if a := x.call("PUT", "/api/v1/provisioning", admin, mustJSON(bad)); a.status != 400 || !strings.Contains(string(a.body), `"field":"range_end"`) {
			t.Errorf("a range outside the network: %v", a)
		}
		bad["range_end"], bad["node"] = "192.168.77.199", "node-z"
		if a := x.call("PUT", "/api/v1/provisioning", admin, mustJSON(bad)); a.status != 400 || !strings.Contains(string(a.body), `"field":"node"`) {
			t.Errorf("an unknown serving node: %v", a)
		}
		bad["node"] = "node-a"
		x.must("PUT", "/api/v1/provisioning", admin, bad, nil, http.StatusOK)
		if a := x.call("PUT", "/api/v1/provisioning", operator, mustJSON(bad)); a.status != http.StatusForbidden {
			t.Errorf("an operator set provisioning: %v", a)
		}
		if a := installer("POST", "/api/v1/provisioning/installer/report", report, "short"); a.status != http.StatusForbidden {
			t.Errorf("a report without a proper key: %v", a)
		}
		if a := installer("POST", "/api/v1/provisioning/installer/report", []byte(`{"mac":"nope","inventory":{}}`), key); a.status != 400 {
			t.Errorf("a report with a bad MAC: %v", a)
		}
		var plan cluster.InstallPlan
		a := installer("POST", "/api/v1/provisioning/installer/report", report, key)
		if err := json.Unmarshal(a.body, &plan); a.status != 200 || err != nil || plan.State != "discovered" || plan.Token != "" {
			t.Fatalf("report: %v", a)
		}
		var ms []cluster.MachineView
		x.must("GET", "/api/v1/provisioning/machines", admin, nil, &ms, http.StatusOK)
		if len(ms) != 1 || ms[0].State != "discovered" || ms[0].KeyHash != "" || ms[0].Inventory == nil || ms[0].Inventory.CPUs != 2 {
			t.Errorf("machines: %+v", ms)
		}
		if a := x.call("POST", "/api/v1/provisioning/machines/"+mac+"/approve", admin, []byte(`{"name":"node a"}`)); a.status != 400 {
			t.Errorf("approval as a bad name: %v", a)
		}
		x.must("POST", "/api/v1/provisioning/machines/"+mac+"/approve", admin, map[string]string{"name": "node-c"}, nil, http.StatusOK)
		a = installer("GET", "/api/v1/provisioning/installer/plan?mac="+mac, nil, key)
		if err := json.Unmarshal(a.body, &plan); err != nil || plan.State != "approved" || plan.Token == "" || plan.Name != "node-c" || len(plan.Peers) == 0 {
			t.Errorf("plan once approved: %v", a)
		}
		if a := installer("GET", "/api/v1/provisioning/installer/plan?mac="+mac, nil, strings.Repeat("x", 40)); a.status != http.StatusForbidden {
			t.Errorf("another key asked for the plan: %v", a)
		}
		step := func(name, state, errText string) answer {
			return installer("POST", "/api/v1/provisioning/installer/step", mustJSON(map[string]string{"mac": mac, "step": name, "state": state, "error": errText}), key)
		}
		if a := step("join", "done", ""); a.status != 400 {
			t.Errorf("the installer reported the join: %v", a)
		}
		for _, st := range []string{"running", "done"} {
			if a := step("disk", st, ""); a.status != 200 {
				t.Fatalf("disk %s: %v", st, a)
			}
		}
		if a := step("download", "failed", "unexpected EOF"); a.status != 200 {
			t.Fatalf("download failed: %v", a)
		}
		var m cluster.MachineView
		x.must("GET", "/api/v1/provisioning/machines/"+mac, admin, nil, &m, http.StatusOK)
		if m.State != "failed" || !strings.Contains(m.Error, "unexpected EOF") {
			t.Errorf("after a failed step: %s %q", m.State, m.Error)
		}
		x.must("POST", "/api/v1/provisioning/machines/"+mac+"/retry", admin, nil, &m, http.StatusOK)
		if m.State != "approved" {
			t.Errorf("after retry: %s", m.State)
		}
		x.must("DELETE", "/api/v1/provisioning/machines/"+mac, admin, nil, nil, http.StatusNoContent)
		bad["enabled"] = false
		x.must("PUT", "/api/v1/provisioning", admin, bad, nil, http.StatusOK)
	})

	t.Run("events websocket", func(t *testing.T) {
		s := x.login(x.c.Admin, x.c.Password)
		dial := func(origin string) (*websocket.Conn, *http.Response, error) {
			d := websocket.Dialer{NetDialContext: x.c.ClientNS.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 10 * time.Second}
			h := http.Header{"Cookie": {cluster.SessionCookie + "=" + s.cookie}, "Origin": {origin}}
			return d.Dial("wss://"+clustertest.ClusterIP+"/api/v1/events", h)
		}
		if _, resp, err := dial("https://evil.example"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("a websocket from another origin was not refused 403: %v %v", resp, err)
		}
		ws, _, err := dial(origin)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		next := func() cluster.EventMessage {
			t.Helper()
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			var m cluster.EventMessage
			if err := ws.ReadJSON(&m); err != nil {
				t.Fatalf("events: %v", err)
			}
			return m
		}
		if m := next(); m.Kind != "hello" || m.Index == 0 {
			t.Fatalf("first message %+v", m)
		}
		// The answers to what the console sends come between the
		// stream's changes and samples.
		reply := func() cluster.EventMessage {
			t.Helper()
			for {
				if m := next(); m.Kind != "stats" && m.Kind != "change" {
					return m
				}
			}
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte("{not json"))
		if m := reply(); m.Kind != "error" {
			t.Errorf("after garbage: %+v", m)
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"kind":"subscribe"}`))
		if m := reply(); m.Kind != "error" {
			t.Errorf("after an unknown kind: %+v", m)
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"kind":"ping"}`))
		if m := reply(); m.Kind != "pong" {
			t.Errorf("after a ping: %+v", m)
		}
		// Every node's samples come on the same stream.
		seen := map[string]bool{}
		for len(seen) < 2 {
			if m := next(); m.Kind == "stats" && m.Sample != nil && m.MemTotalBytes > 0 {
				seen[m.NodeName] = true
			}
		}
		x.must("PUT", "/api/v1/labels/evt", admin, map[string]string{"value": "1"}, nil, 200)
		for {
			m := next()
			if m.Kind == "change" && m.Type == "label.set" && m.Target == "evt" {
				break
			}
		}
		x.must("DELETE", "/api/v1/session", s, nil, nil, http.StatusNoContent)
		for {
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			var m cluster.EventMessage
			if err := ws.ReadJSON(&m); err != nil {
				break // closed: the session ended
			}
			if m.Kind == "bye" {
				continue
			}
		}
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
