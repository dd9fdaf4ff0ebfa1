package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tracklink/tracklink/internal/testkit"
)

// wsRoundTrip checks the WebTorrent path between two processes (or one):
// a peer on b announces, a peer on a announces with an offer, b's peer
// gets it and answers, a's peer gets the answer.
func wsRoundTrip(t *testing.T, a, b, tag string) {
	t.Helper()
	for _, base := range []string{a, b} {
		testkit.Eventually(t, 5*time.Second, "WebSocket ready at "+base, func() bool {
			resp, err := http.Get(base + "/ws/status")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var st struct{ Ready bool }
			return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Ready
		})
	}
	dial := func(base string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/announce", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	id := func(s string) string { return (s + strings.Repeat("x", 20))[:20] }
	ih, pa, pb := id("ih-"+tag), id("pa-"+tag), id("pb-"+tag)
	read := func(c *websocket.Conn, field string) map[string]any {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			var m map[string]any
			if err := c.ReadJSON(&m); err != nil {
				t.Fatalf("waiting for %q: %v", field, err)
			}
			if fr, ok := m["failure reason"]; ok {
				t.Fatalf("failure: %v", fr)
			}
			if m[field] != nil {
				return m
			}
		}
	}
	cb, ca := dial(b), dial(a)
	cb.WriteJSON(map[string]any{"action": "announce", "info_hash": ih, "peer_id": pb, "left": 1, "event": "started"})
	read(cb, "interval")
	ca.WriteJSON(map[string]any{"action": "announce", "info_hash": ih, "peer_id": pa, "left": 0, "event": "started",
		"offers": []any{map[string]any{"offer_id": id("o-" + tag), "offer": map[string]any{"type": "offer", "sdp": "v=0"}}}})
	if r := read(ca, "interval"); r["complete"] != 1.0 || r["incomplete"] != 1.0 {
		t.Fatalf("announce reply: %v", r)
	}
	offer := read(cb, "offer")
	cb.WriteJSON(map[string]any{"action": "announce", "info_hash": ih, "peer_id": pb, "to_peer_id": offer["peer_id"],
		"offer_id": offer["offer_id"], "answer": map[string]any{"type": "answer", "sdp": "v=0"}})
	if ans := read(ca, "answer"); ans["peer_id"] != pb {
		b, _ := json.Marshal(ans)
		t.Fatalf("answer: %s", b)
	}
}

// TestWebSocketEmbedded: `go run ./cmd/tracker` with no configuration
// serves WebTorrent too (the embedded store's pub/sub carries signals).
func TestWebSocketEmbedded(t *testing.T) {
	p := startProc(t, runNode, []string{"TRACKER_HTTP_ADDR=127.0.0.1:0", "TRACKER_UDP_ADDR=off", "TRACKER_LOG_LEVEL=warn"})
	wsRoundTrip(t, p.url, p.url, "embedded")
}
