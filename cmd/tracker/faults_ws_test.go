package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestFaultsWriteBehindWebSocket: a node whose WebSocket refreshes are
// written behind (a window of 1 s, so that the kill lands inside it) is
// killed -9 right after joins, refreshes and stops of WebRTC peers: every
// join and every stop is in Redis, and every peer that joined is there,
// alive, whether or not its refresh was written. Part of the fault suite
// (TRACKLINK_FAULTS).
func TestFaultsWriteBehindWebSocket(t *testing.T) {
	if os.Getenv(faultsVar) == "" {
		t.Skip("the fault suite runs with " + faultsVar + "=short or long")
	}
	r := &rig{t: t, bin: buildTracker(t), dir: t.TempDir(), channel: fmt.Sprintf("tlsoftws%d", os.Getpid())}
	r.redis = testkit.StartRedis(t)
	r.rdb = r.redis.Client(t)
	n := &osProc{name: "softws", role: "node", port: testkit.FreePort(t),
		env: []string{"TRACKER_READ_CACHE=1m", "TRACKER_WRITE_BEHIND=1s"}}
	r.start(n)
	t.Cleanup(func() { r.stop(n, syscall.SIGKILL) })
	base := n.url()
	testkit.Eventually(t, 5*time.Second, "WebSocket ready", func() bool {
		resp, err := http.Get(base + "/ws/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct{ Ready bool }
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Ready
	})
	ks, err := redisstore.NewKeyspace("tl", n.name)
	if err != nil {
		t.Fatal(err)
	}
	const peers, stops, late = 8, 3, 2
	ih := "softfault-ws-0000000"
	id := func(i int) string { return fmt.Sprintf("peer-ws-%012d", i) }
	conns := make([]*websocket.Conn, peers+late)
	send := func(i int, event string) {
		t.Helper()
		m := map[string]any{"action": "announce", "info_hash": ih, "peer_id": id(i), "left": 1}
		if event != "" {
			m["event"] = event
		}
		if err := conns[i].WriteJSON(m); err != nil {
			t.Fatal(err)
		}
		conns[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		var reply map[string]any
		if err := conns[i].ReadJSON(&reply); err != nil || reply["interval"] == nil {
			t.Fatalf("peer %d, %q: %v %v", i, event, reply, err)
		}
	}
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial("ws"+base[len("http"):]+"/announce", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	for i := range peers {
		send(i, "started")
	}
	time.Sleep(20 * time.Millisecond)
	for i := range peers {
		send(i, "")
	}
	for i := range stops {
		send(i, "stopped")
	}
	for i := range late {
		send(peers+i, "started")
	}
	if hits := nodeMetric(t, base, `tracker_ws_soft_total{result="hit"}`); hits < peers-1 {
		t.Fatalf("%v refreshes answered by the soft state of %d: the write-behind was not exercised", hits, peers)
	}
	r.stop(n, syscall.SIGKILL)

	key := ks.RTC(bittorrent.InfoHash([]byte(ih))).Peers
	cutoff := time.Now().Add(-time.Minute).UnixMilli()
	for i := range peers + late {
		sc, err := r.rdb.ZScore(context.Background(), key, id(i)).Result()
		switch {
		case i < stops && err == nil:
			t.Errorf("peer %d stopped before the kill and is in Redis", i)
		case i >= stops && err != nil:
			t.Errorf("peer %d joined before the kill and is not in Redis: %v", i, err)
		case i >= stops:
			if _, seen := redisstore.PeerClass(sc); seen < cutoff {
				t.Errorf("peer %d last seen %d ms ago", i, time.Now().UnixMilli()-seen)
			}
		}
	}
}
