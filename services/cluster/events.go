package cluster

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandemhci/tandem/services/frontdoor"
	"github.com/tandemhci/tandem/services/metrics"
)

// The events websocket (GET /api/v1/events) tells the console what
// changed, as it changes, so that no page polls: every change the
// directory applies, from this member's own copy (any member serves it,
// and a console whose member went away reconnects through the cluster
// IP to the next).

// EventMessage is one message on the events websocket.
type EventMessage struct {
	// Kind is hello (first, with the serving member and its applied
	// index), change (a directory change: its index, command type and
	// record), stats (a node's sample, every 2 s), pong (the answer to a ping), error (a message the server
	// could not take; the stream goes on) or bye (the session ended).
	Kind string `json:"kind"`
	Node string `json:"node,omitempty"`
	// A stats message carries a node's sample (its fields beside kind).
	*metrics.Sample
	Index   uint64 `json:"index,omitempty"`
	Type    string `json:"type,omitempty"`
	Target  string `json:"target,omitempty"`
	Message string `json:"message,omitempty"`
}

// ClientMessage is what a console may send on the events websocket.
type ClientMessage struct {
	Kind string `json:"kind"` // ping
}

var eventsUpgrader = websocket.Upgrader{
	ReadBufferSize: 4 << 10, WriteBufferSize: 16 << 10,
	// authenticate has checked the Origin already.
	CheckOrigin: func(r *http.Request) bool { return true },
}

const (
	eventsPing      = 20 * time.Second // keeps NATs open, finds dead peers
	eventsWriteWait = 10 * time.Second
)

func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		frontdoor.WriteError(w, http.StatusBadRequest, "websocket_expected", "GET /api/v1/events is a websocket")
		return
	}
	p := requestPrincipal(r)
	// Subscribe before the hello, so nothing applied after its index is
	// missed.
	changes, cancel := a.Directory().Subscribe(512)
	defer cancel()
	samples, unsubscribe := a.subscribeStats()
	defer unsubscribe()
	ws, err := eventsUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer ws.Close()
	ws.SetReadLimit(4 << 10)

	replies := make(chan EventMessage, 8)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var m ClientMessage
			reply := EventMessage{Kind: "pong"}
			if err := json.Unmarshal(data, &m); err != nil {
				reply = EventMessage{Kind: "error", Message: "not a JSON message: " + err.Error()}
			} else if m.Kind != "ping" {
				reply = EventMessage{Kind: "error", Message: "unknown message kind " + quoteShort(m.Kind) + "; the console sends only ping"}
			}
			select {
			case replies <- reply:
			default: // a client flooding pings gets fewer answers
			}
		}
	}()

	send := func(m EventMessage) bool {
		_ = ws.SetWriteDeadline(time.Now().Add(eventsWriteWait))
		return ws.WriteJSON(m) == nil
	}
	if !send(EventMessage{Kind: "hello", Node: a.id.ID, Index: a.Directory().AppliedIndex()}) {
		return
	}
	ping := time.NewTicker(eventsPing)
	defer ping.Stop()
	for {
		select {
		case <-readDone:
			return
		case m := <-replies:
			if !send(m) {
				return
			}
		case s, ok := <-samples:
			if !ok {
				return
			}
			if !send(EventMessage{Kind: "stats", Node: s.Node, Sample: &s}) {
				return
			}
		case ev, ok := <-changes:
			if !ok {
				return
			}
			if !send(EventMessage{Kind: "change", Index: ev.Index, Type: ev.Type, Target: ev.Target}) {
				return
			}
			if strings.HasPrefix(ev.Type, "session.") || strings.HasPrefix(ev.Type, "user.") || strings.HasPrefix(ev.Type, "api-token.") {
				if !a.stillValid(p) {
					a.sayBye(ws, send)
					return
				}
			}
		case <-ping.C:
			if !a.stillValid(p) {
				a.sayBye(ws, send)
				return
			}
			_ = ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(eventsWriteWait))
		}
	}
}

// stillValid reports whether a stream's principal may still read: its
// session or token exists and its user is enabled.
func (a *Agent) stillValid(p principal) bool {
	d := a.Directory()
	if p.Via == "member" {
		return true // a member's certificate is checked at the handshake
	}
	u, ok := d.User(p.User)
	if !ok || u.Disabled {
		return false
	}
	switch p.Via {
	case "session":
		s, ok := d.Session(p.Session)
		return ok && s.Live(time.Now())
	case "token":
		t, ok := d.APIToken(p.Token)
		return ok && t.Live(time.Now())
	}
	return true
}

func (a *Agent) sayBye(ws *websocket.Conn, send func(EventMessage) bool) {
	send(EventMessage{Kind: "bye", Message: "the session ended"})
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "session ended"), time.Now().Add(time.Second))
}

func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}
