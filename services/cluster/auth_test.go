package cluster

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestLoginGuard(t *testing.T) {
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	g := newLoginGuard(func() time.Time { return now })
	for range userFailuresToLock - 1 {
		g.failed("192.0.2.1", "admin")
	}
	if w := g.wait("192.0.2.1", "admin"); w != 0 {
		t.Fatalf("locked after %d failures: %v", userFailuresToLock-1, w)
	}
	g.failed("192.0.2.2", "admin") // the fifth, from elsewhere
	if w := g.wait("192.0.2.3", "admin"); w != userLockout {
		t.Errorf("admin after %d failures: wait %v, want %v", userFailuresToLock, w, userLockout)
	}
	if w := g.wait("192.0.2.3", "olga"); w != 0 {
		t.Errorf("another user is locked too: %v", w)
	}
	now = now.Add(userLockout)
	if w := g.wait("192.0.2.3", "admin"); w != 0 {
		t.Errorf("still locked after the lockout: %v", w)
	}
	g.failed("192.0.2.3", "admin")
	g.succeeded("admin")
	for range userFailuresToLock - 1 {
		g.failed("192.0.2.4", "admin")
	}
	if w := g.wait("192.0.2.4", "admin"); w != 0 {
		t.Errorf("a success did not clear the count: %v", w)
	}

	// An address guessing names is stopped for the rest of its minute.
	now = now.Add(time.Hour)
	for i := range addrFailuresPerMinute {
		g.failed("198.51.100.9", string(rune('a'+i)))
		now = now.Add(time.Second)
	}
	if w := g.wait("198.51.100.9", ""); w != time.Minute-addrFailuresPerMinute*time.Second {
		t.Errorf("address after %d failures in a minute: wait %v", addrFailuresPerMinute, w)
	}
	if w := g.wait("198.51.100.10", ""); w != 0 {
		t.Errorf("another address is limited too: %v", w)
	}
	now = now.Add(time.Minute)
	if w := g.wait("198.51.100.9", ""); w != 0 {
		t.Errorf("address still limited a minute later: %v", w)
	}
}

func TestCheckOriginAndCSRF(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		header  map[string]string
		csrf    string
		wantErr bool
	}{
		{"read without origin", "GET", nil, "tok", false},
		{"read from its own page", "GET", map[string]string{"Origin": "https://10.0.0.1"}, "tok", false},
		{"read from another site", "GET", map[string]string{"Origin": "https://evil.example"}, "tok", true},
		{"plain http origin", "GET", map[string]string{"Origin": "http://10.0.0.1"}, "tok", true},
		{"change with the token", "POST", map[string]string{HeaderCSRF: "tok"}, "tok", false},
		{"change without the token", "POST", nil, "tok", true},
		{"change with a wrong token", "DELETE", map[string]string{HeaderCSRF: "tak"}, "tok", true},
		{"session without a token", "PUT", map[string]string{HeaderCSRF: ""}, "", true},
		{"websocket from its own page", "GET", map[string]string{"Upgrade": "websocket", "Origin": "https://10.0.0.1"}, "tok", false},
		{"websocket without origin", "GET", map[string]string{"Upgrade": "websocket", "Cookie": SessionCookie + "=x.y"}, "tok", true},
		{"forwarded by a member", "POST", map[string]string{"Origin": "https://10.0.0.2", "X-Tandem-Member": "node/abc", HeaderCSRF: "tok"}, "tok", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "https://10.0.0.1/api/v1/vms", nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			err := checkOrigin(r)
			if err == nil {
				err = checkCSRF(r, tt.csrf)
			}
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, errCSRF)) {
				t.Errorf("got %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestAuthErrorAnswers(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		fetchMode string
		status    int
		header    string
	}{
		{"no credentials, from curl", errUnauthorized, "", http.StatusUnauthorized, `Basic realm="Tandem"`},
		{"no credentials, from the console", errUnauthorized, "cors", http.StatusUnauthorized, ""},
		{"locked out", &lockedError{90 * time.Second}, "cors", http.StatusTooManyRequests, ""},
		{"cross-site", errCSRF, "cors", http.StatusForbidden, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/api/v1/vms", nil)
			if tt.fetchMode != "" {
				r.Header.Set("Sec-Fetch-Mode", tt.fetchMode)
			}
			w := httptest.NewRecorder()
			authError(tt.err).Write(w, r)
			if w.Code != tt.status || w.Header().Get("WWW-Authenticate") != tt.header {
				t.Errorf("got %d %q, want %d %q", w.Code, w.Header().Get("WWW-Authenticate"), tt.status, tt.header)
			}
			if tt.status == http.StatusTooManyRequests && w.Header().Get("Retry-After") != "90" {
				t.Errorf("Retry-After %q, want 90", w.Header().Get("Retry-After"))
			}
		})
	}
}

func TestWritePage(t *testing.T) {
	items := []int{1, 2, 3, 4, 5}
	tests := []struct {
		query  string
		status int
		body   string
		link   string
	}{
		{"", 200, "[1,2,3,4,5]", ""},
		{"?limit=2", 200, "[1,2]", `</x?limit=2&offset=2>; rel="next"`},
		{"?limit=2&offset=4", 200, "[5]", ""},
		{"?offset=9", 200, "[]", ""},
		{"?limit=0", 400, "", ""},
		{"?limit=x", 400, "", ""},
		{"?offset=-1", 400, "", ""},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		writePage(w, httptest.NewRequest("GET", "/x"+tt.query, nil), items)
		if w.Code != tt.status {
			t.Errorf("%s: status %d, want %d", tt.query, w.Code, tt.status)
			continue
		}
		if tt.status == 200 && (trimNL(w.Body.String()) != tt.body || w.Header().Get("Link") != tt.link || w.Header().Get("X-Total-Count") != "5") {
			t.Errorf("%s: %s Link %q Total %q", tt.query, w.Body, w.Header().Get("Link"), w.Header().Get("X-Total-Count"))
		}
	}
}

func trimNL(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}
