package wsapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/embedded"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// allowAll admits everything; limited says whether per-address limits
// apply.
type allowAll struct{ limited bool }

func (allowAll) Allow(netip.Addr, ...bittorrent.InfoHash) error { return nil }
func (a allowAll) Limited(netip.Addr) bool                      { return a.limited }

// refuseAll refuses every message as the rate limiter would.
type refuseAll struct{}

func (refuseAll) Allow(netip.Addr, ...bittorrent.InfoHash) error {
	return bittorrent.ClientError("too many announces from your address; try again later")
}
func (refuseAll) Limited(netip.Addr) bool { return true }

// proc is one tracker process's WebSocket front end on a test server.
type proc struct {
	srv *Server
	url string
	reg *prometheus.Registry
}

func testConfig() Config {
	return Config{On: true, ClientInterval: 2 * time.Minute, MaxSockets: 100, MaxSocketsPerAddr: 2, MaxMessageBytes: 65536,
		PingEvery: 30 * time.Second, IdleAfter: 5 * time.Minute, DrainTimeout: 2 * time.Second}
}

// rtcNode makes the store and listener of one more process of node "n1".
type rtcNode func(t *testing.T, cfg Config) (Store, Listener)

// onRedis is the node on rdb (redisstore.RTC).
func onRedis(rdb redis.UniversalClient) rtcNode {
	return func(t *testing.T, cfg Config) (Store, Listener) {
		t.Helper()
		rtc, err := redisstore.NewRTC(rdb, redisstore.RTCConfig{Prefix: "tl", NodeID: "n1", PeerLifetime: cfg.PeerLifetime(), CompletedTTL: time.Hour, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// The store's functions (rtc_announce and rtc_signal among them), as
		// tracker redis-setup or a node's start loads them.
		if err := redisstore.LoadFunctions(context.Background(), rdb); err != nil {
			t.Fatal(err)
		}
		return rtc, rtc
	}
}

// inMemory is a node in memory (fakeRTC): no Redis.
func inMemory() rtcNode {
	n := &fakeRTC{}
	return func(*testing.T, Config) (Store, Listener) {
		p := n.process()
		return p, p
	}
}

// onEachStore runs test on a node in memory and on a real Redis.
func onEachStore(t *testing.T, test func(t *testing.T, node rtcNode)) {
	t.Run("fake", func(t *testing.T) { test(t, inMemory()) })
	t.Run("redis", func(t *testing.T) { test(t, onRedis(testkit.StartRedis(t).Client(t))) })
}

// startProc runs a front end of a process of node until the end of the
// test.
func startProc(t *testing.T, node rtcNode, cfg Config, admit Admitter) *proc {
	t.Helper()
	store, listener := node(t, cfg)
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, store, listener, admit, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		hs.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for !srv.Status().Ready {
		if time.Now().After(deadline) {
			t.Fatal("not subscribed after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &proc{srv: srv, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/announce", reg: reg}
}

// client is a test WebSocket client.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, url string) *client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &client{t, ws}
}

// l1 is b as the clients send binary: a string of code points 0-255.
func l1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// id20 is a 20-byte id with bytes across the whole range 0-255, so that
// latin1 decoding and escaping are exercised.
func id20(tag byte) []byte {
	b := make([]byte, 20)
	for i := range b {
		b[i] = tag ^ byte(i*13)
	}
	b[0], b[1], b[2] = '"', 0x00, 0xff
	return b
}

func (c *client) send(v any) {
	c.t.Helper()
	if err := c.ws.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one message (within 5 s) as a map, binary strings back to
// bytes as the clients read them.
func (c *client) recv() map[string]any {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("reply %q: %v", data, err)
	}
	return m
}

// closed expects the server to close the socket.
func (c *client) closed() int {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if asClose(err, &ce) {
			return ce.Code
		}
		c.t.Fatalf("want a close frame, got %v", err)
	}
}

func asClose(err error, ce **websocket.CloseError) bool {
	e, ok := err.(*websocket.CloseError)
	*ce = e
	return ok
}

// jq is s as a JSON string.
func jq(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func announceMsg(ih, peer []byte, left int, offers int, tag byte) map[string]any {
	m := map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(peer), "left": left, "event": "started",
		"uploaded": 0, "downloaded": 0, "numwant": offers}
	var os []any
	for i := range offers {
		os = append(os, map[string]any{"offer_id": l1(id20(tag + byte(i))), "offer": map[string]any{"type": "offer", "sdp": "v=0 offer " + string(rune('a'+i))}})
	}
	if offers > 0 {
		m["offers"] = os
	}
	return m
}

func backends(t *testing.T) map[string]func(t *testing.T) rtcNode {
	return map[string]func(t *testing.T) rtcNode{
		"fake":  func(t *testing.T) rtcNode { return inMemory() },
		"redis": func(t *testing.T) rtcNode { return onRedis(testkit.StartRedis(t).Client(t)) },
		// Every swarm's keys share one slot; signals are PUBLISHed from
		// scripts, which a Redis Cluster broadcasts to every shard.
		"cluster": func(t *testing.T) rtcNode { return onRedis(testkit.SharedRedisCluster(t).Client(t)) },
		"embedded": func(t *testing.T) rtcNode {
			emb, err := embedded.Open("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(emb.Close)
			c := redis.NewClient(&redis.Options{Addr: emb.Addr()})
			t.Cleanup(func() { c.Close() })
			return onRedis(c)
		},
	}
}

// TestOfferAnswerAcrossProcesses: a peer on process A offers, a peer whose
// socket process B holds gets the offer, answers, and A's peer gets the
// answer; in memory, on a real Redis, a Redis Cluster and the embedded
// store.
func TestOfferAnswerAcrossProcesses(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			node := open(t)
			a, b := startProc(t, node, testConfig(), allowAll{}), startProc(t, node, testConfig(), allowAll{})
			ih, pa, pb := id20(1), id20(2), id20(3)

			cb := dial(t, b.url)
			cb.send(announceMsg(ih, pb, 100, 0, 0))
			if r := cb.recv(); r["incomplete"] != 1.0 || r["info_hash"] != l1(ih) || r["interval"] != 120.0 {
				t.Fatalf("b's announce reply: %v", r)
			}
			ca := dial(t, a.url)
			ca.send(announceMsg(ih, pa, 100, 2, 50))
			if r := ca.recv(); r["incomplete"] != 2.0 || r["complete"] != 0.0 {
				t.Fatalf("a's announce reply: %v", r)
			}
			offer := cb.recv()
			if offer["peer_id"] != l1(pa) || offer["info_hash"] != l1(ih) || offer["offer"].(map[string]any)["type"] != "offer" {
				t.Fatalf("offer: %v", offer)
			}
			if id := offer["offer_id"]; id != l1(id20(50)) && id != l1(id20(51)) {
				t.Fatalf("offer id %q", id)
			}
			cb.send(map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(pb), "to_peer_id": l1(pa),
				"offer_id": offer["offer_id"], "answer": map[string]any{"type": "answer", "sdp": "v=0 answer"}})
			ans := ca.recv()
			if ans["peer_id"] != l1(pb) || ans["offer_id"] != offer["offer_id"] || ans["answer"].(map[string]any)["sdp"] != "v=0 answer" {
				t.Fatalf("answer: %v", ans)
			}
			if n := testutil.ToFloat64(a.srv.m.offers.WithLabelValues("remote")); n != 1 {
				t.Errorf("offers sent to another process: %v, want 1", n)
			}
			testkit.Eventually(t, 5*time.Second, "condition", func() bool { return testutil.ToFloat64(b.srv.m.answers.WithLabelValues("remote")) == 1 })
			// Only one peer could take the two offers.
			if n := testutil.ToFloat64(a.srv.m.dropped.WithLabelValues("no_peer")); n != 1 {
				t.Errorf("offers without a peer: %v, want 1", n)
			}

			// A closed socket leaves its swarm at once.
			cb.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			cb.closed()
			testkit.Eventually(t, 5*time.Second, "condition", func() bool { return b.srv.Status().Connections == 0 })
			ca.send(map[string]any{"action": "scrape", "info_hash": l1(ih)})
			files := ca.recv()["files"].(map[string]any)
			if f := files[l1(ih)].(map[string]any); f["incomplete"] != 1.0 {
				t.Fatalf("scrape after close: %v", f)
			}
			if st := b.srv.Status(); st.Peers != 0 {
				t.Fatalf("b still indexes %d peers", st.Peers)
			}
		})
	}
}

// TestSeedersAndSwarms: a seeder's offers go to leechers only, answers
// reach only peers of the answerer's own swarm, a stop leaves, and
// completions count.
func TestSeedersAndSwarms(t *testing.T) { onEachStore(t, testSeedersAndSwarms) }

func testSeedersAndSwarms(t *testing.T, node rtcNode) {
	p := startProc(t, node, testConfig(), allowAll{})
	ih, other := id20(10), id20(11)
	s1, s2, l1p, x := dial(t, p.url), dial(t, p.url), dial(t, p.url), dial(t, p.url)
	s1.send(announceMsg(ih, id20(20), 0, 0, 0))
	s1.recv()
	l1c := l1p
	l1c.send(announceMsg(ih, id20(21), 5, 0, 0))
	l1c.recv()
	s2.send(announceMsg(ih, id20(22), 0, 3, 60))
	if r := s2.recv(); r["complete"] != 2.0 || r["incomplete"] != 1.0 {
		t.Fatalf("reply: %v", r)
	}
	if o := l1c.recv(); o["peer_id"] != l1(id20(22)) {
		t.Fatalf("leecher got %v", o)
	}
	// (s1, a seeder, gets no offer: its next message is its stop's reply.)

	// x is a peer of another swarm: its answer to s2 goes nowhere.
	x.send(announceMsg(other, id20(23), 5, 0, 0))
	x.recv()
	x.send(map[string]any{"action": "announce", "info_hash": l1(other), "peer_id": l1(id20(23)), "to_peer_id": l1(id20(22)),
		"offer_id": l1(id20(60)), "answer": map[string]any{"type": "answer", "sdp": "x"}})
	// Nor may it answer in a swarm it did not join.
	x.send(map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(id20(23)), "to_peer_id": l1(id20(22)),
		"offer_id": l1(id20(60)), "answer": map[string]any{"type": "answer", "sdp": "x"}})
	if r := x.recv(); !strings.Contains(r["failure reason"].(string), "did not announce") {
		t.Fatalf("answer outside its swarm: %v", r)
	}
	testkit.Eventually(t, 5*time.Second, "condition", func() bool { return testutil.ToFloat64(p.srv.m.dropped.WithLabelValues("no_peer")) >= 1 })

	// completed and stopped.
	l1c.send(map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(id20(21)), "left": 0, "event": "completed"})
	if r := l1c.recv(); r["complete"] != 3.0 || r["incomplete"] != 0.0 {
		t.Fatalf("after completed: %v", r)
	}
	s1.send(map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(id20(20)), "left": 0, "event": "stopped"})
	if r := s1.recv(); r["complete"] != 2.0 || r["offer"] != nil {
		t.Fatalf("after stopped: %v", r)
	}
	s1.send(map[string]any{"action": "scrape", "info_hash": []string{l1(ih), l1(other)}})
	files := s1.recv()["files"].(map[string]any)
	if f := files[l1(ih)].(map[string]any); f["complete"] != 2.0 || f["downloaded"] != 1.0 {
		t.Fatalf("scrape: %v", files)
	}
	if f := files[l1(other)].(map[string]any); f["incomplete"] != 1.0 {
		t.Fatalf("scrape: %v", files)
	}
}

// TestMalformed: each malformed message or frame is refused with a reason
// and the socket closed; the server holds nothing of it afterwards.
func TestMalformed(t *testing.T) { onEachStore(t, testMalformed) }

func testMalformed(t *testing.T, node rtcNode) {
	cfg := testConfig()
	cfg.MaxMessageBytes = 4096
	p := startProc(t, node, cfg, allowAll{})
	ih, peer := jq(l1(id20(1))), jq(l1(id20(2)))
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name, msg, reason string
		binary            bool
	}{
		{"not json", `{"action":`, "invalid JSON", false},
		{"binary garbage", "\x00\x01\x02", "invalid JSON", true},
		{"array", `[1,2]`, "invalid JSON", false},
		{"no action", `{}`, "invalid action", false},
		{"unknown action", `{"action":"connect"}`, "invalid action", false},
		{"short info_hash", `{"action":"announce","info_hash":"abc","peer_id":` + peer + `}`, "invalid info_hash", false},
		{"info_hash number", `{"action":"announce","info_hash":5,"peer_id":` + peer + `}`, "invalid info_hash", false},
		{"info_hash above 255", `{"action":"announce","info_hash":"` + strings.Repeat("é", 19) + "Ā" + `","peer_id":` + peer + `}`, "invalid info_hash", false},
		{"no peer_id", `{"action":"announce","info_hash":` + ih + `}`, "invalid peer_id", false},
		{"bad event", `{"action":"announce","info_hash":` + ih + `,"peer_id":` + peer + `,"event":"exploded"}`, "invalid event", false},
		{"negative left", `{"action":"announce","info_hash":` + ih + `,"peer_id":` + peer + `,"left":-1}`, "invalid left", false},
		{"offer not object", `{"action":"announce","info_hash":` + ih + `,"peer_id":` + peer + `,"offers":[{"offer_id":` + peer + `,"offer":"sdp"}]}`, "invalid offer", false},
		{"offer without id", `{"action":"announce","info_hash":` + ih + `,"peer_id":` + peer + `,"offers":[{"offer":{}}]}`, "invalid offer_id", false},
		{"answer without to_peer_id", `{"action":"announce","info_hash":` + ih + `,"peer_id":` + peer + `,"answer":{},"offer_id":` + peer + `}`, "invalid to_peer_id", false},
		{"answer without offer_id", `{"action":"announce","info_hash":` + ih + `,"peer_id":` + peer + `,"answer":{},"to_peer_id":` + peer + `}`, "invalid offer_id", false},
		{"scrape of nothing", `{"action":"scrape"}`, "invalid info_hash", false},
		{"scrape of too many", `{"action":"scrape","info_hash":[` + strings.TrimSuffix(strings.Repeat(ih+`,`, 65), ",") + `]}`, "1 to 64", false},
		{"too big", `{"action":"announce","pad":"` + long + `"}`, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p.url)
			typ := websocket.TextMessage
			if tc.binary {
				typ = websocket.BinaryMessage
			}
			if err := c.ws.WriteMessage(typ, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			if tc.reason != "" {
				r := c.recv()
				if !strings.Contains(r["failure reason"].(string), tc.reason) {
					t.Fatalf("failure reason %q, want %q", r["failure reason"], tc.reason)
				}
				if code := c.closed(); code != websocket.ClosePolicyViolation {
					t.Fatalf("close code %d", code)
				}
			} else if code := c.closed(); code != websocket.CloseMessageTooBig {
				t.Fatalf("close code %d", code)
			}
		})
	}
	testkit.Eventually(t, 5*time.Second, "condition", func() bool { st := p.srv.Status(); return st.Connections == 0 && st.Peers == 0 })
	if n := testutil.ToFloat64(p.srv.m.closed.WithLabelValues("malformed")); n != float64(len(cases)-1) {
		t.Errorf("closed as malformed: %v, want %d", n, len(cases)-1)
	}
}

// TestLimits: offers beyond MaxOffers are dropped, connections per
// address are capped, and the node's refusals (rate, allowed torrents)
// are failure reasons that leave the socket open.
func TestLimits(t *testing.T) { onEachStore(t, testLimits) }

func testLimits(t *testing.T, node rtcNode) {
	p := startProc(t, node, testConfig(), allowAll{limited: true})
	ih := id20(1)
	a, b := dial(t, p.url), dial(t, p.url)
	if _, resp, err := websocket.DefaultDialer.Dial(p.url, nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection from one address: %v %v", resp, err)
	}
	if n := testutil.ToFloat64(p.srv.m.refused.WithLabelValues("per_address")); n != 1 {
		t.Errorf("refused per address: %v", n)
	}
	b.send(announceMsg(ih, id20(3), 5, 0, 0))
	b.recv()
	a.send(announceMsg(ih, id20(2), 5, 12, 100))
	a.recv()
	if n := testutil.ToFloat64(p.srv.m.dropped.WithLabelValues("offers_over_cap")); n != 2 {
		t.Errorf("offers over the cap: %v, want 2", n)
	}
	b.recv() // the one offer a peer can take

	q := startProc(t, node, testConfig(), refuseAll{})
	c := dial(t, q.url)
	c.send(announceMsg(ih, id20(4), 5, 1, 0))
	r := c.recv()
	if !strings.Contains(r["failure reason"].(string), "too many announces") || r["info_hash"] != l1(ih) {
		t.Fatalf("refusal: %v", r)
	}
	c.send(map[string]any{"action": "scrape", "info_hash": l1(ih)})
	if r := c.recv(); r["action"] != "scrape" || r["failure reason"] == nil {
		t.Fatalf("scrape refusal: %v", r)
	}
}

// TestShutdown: Run's end closes every socket with 1001 and removes its
// peers.
func TestShutdown(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	rtc, _ := redisstore.NewRTC(rdb, redisstore.RTCConfig{Prefix: "tl", NodeID: "n1", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: time.Second})
	if err := redisstore.LoadFunctions(context.Background(), rdb); err != nil {
		t.Fatal(err)
	}
	srv, err := New(testConfig(), rtc, rtc, allowAll{},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	testkit.Eventually(t, 5*time.Second, "condition", func() bool { return srv.Status().Ready })
	c := dial(t, "ws"+strings.TrimPrefix(hs.URL, "http")+"/announce")
	ih := id20(7)
	c.send(announceMsg(ih, id20(8), 5, 0, 0))
	c.recv()
	cancel()
	if code := c.closed(); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	res, err := rtc.Scrape(context.Background(), []bittorrent.InfoHash{bittorrent.InfoHash(ih)})
	if err != nil || res[0].Incomplete != 0 {
		t.Fatalf("after shutdown: %+v %v", res, err)
	}
}

// TestTimeouts: a socket that sends no message is closed after the idle
// timeout, one that does not answer pings after two ping intervals.
func TestTimeouts(t *testing.T) { onEachStore(t, testTimeouts) }

func testTimeouts(t *testing.T, node rtcNode) {
	cfg := testConfig()
	cfg.PingEvery, cfg.IdleAfter = 200*time.Millisecond, time.Second
	p := startProc(t, node, cfg, allowAll{})

	idle := dial(t, p.url) // reads, so it answers pings, but says nothing
	start := time.Now()
	if code := idle.closed(); code != websocket.ClosePolicyViolation {
		t.Fatalf("idle: close code %d", code)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("idle socket closed after %s, want about 1s", d)
	}

	deaf := dial(t, p.url) // never reads: no pongs
	testkit.Eventually(t, 5*time.Second, "condition", func() bool { return testutil.ToFloat64(p.srv.m.closed.WithLabelValues("ping_timeout")) == 1 })
	deaf.ws.Close()
	testkit.Eventually(t, 5*time.Second, "condition", func() bool { return p.srv.Status().Connections == 0 })
	if n := testutil.ToFloat64(p.srv.m.closed.WithLabelValues("idle")); n != 1 {
		t.Errorf("closed idle: %v", n)
	}
}
