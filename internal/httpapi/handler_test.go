package httpapi

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/tracker"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

var nodeSeq atomic.Int64

// testConfig is a node's configuration in these tests: the HTTP front
// end's and the service's.
type testConfig struct {
	http Config
	svc  tracker.Config
	// The store's budget of new swarms (0: none).
	newSwarmRate  float64
	newSwarmBurst int
}

func defaultTestConfig() testConfig {
	return testConfig{
		http: Config{ScrapeMaxHashes: 4, ShutdownTimeout: time.Second},
		svc: tracker.Config{
			Interval: 30 * time.Minute, MinInterval: 5 * time.Minute, IntervalJitter: time.Minute,
			NumWantDefault: 50, NumWantMax: 200,
		},
	}
}

// storeFunc makes a node's store for a test.
type storeFunc func(t *testing.T, cfg testConfig, peerIDs bool) tracker.Store

// fakeStore is the in-memory store: the front end's tests need no Redis.
func fakeStore(t *testing.T, cfg testConfig, peerIDs bool) tracker.Store {
	return &testkit.Store{PeerIDs: peerIDs}
}

// sharedRedisStore is a real store in a keyspace of its own of the
// binary's shared redis-server.
func sharedRedisStore(t *testing.T, cfg testConfig, peerIDs bool) tracker.Store {
	return redisStoreOn(testkit.SharedRedis(t).Client(t))(t, cfg, peerIDs)
}

// redisStoreOn is a real store on rdb, in a keyspace of its own.
func redisStoreOn(rdb redis.UniversalClient) storeFunc {
	return func(t *testing.T, cfg testConfig, peerIDs bool) tracker.Store {
		t.Helper()
		store, err := redisstore.New(rdb, redisstore.Config{
			Prefix: "httptest", NodeID: fmt.Sprintf("n%d", nodeSeq.Add(1)),
			PeerLifetime: time.Hour, CompletedTTL: 2 * time.Hour, Timeout: 500 * time.Millisecond, PeerIDs: peerIDs,
			NewSwarmRate: cfg.newSwarmRate, NewSwarmBurst: cfg.newSwarmBurst,
		})
		if err != nil {
			t.Fatal(err)
		}
		return store
	}
}

// onEachStore runs test on the in-memory store and on a real one.
func onEachStore(t *testing.T, test func(t *testing.T, store storeFunc)) {
	t.Run("fake", func(t *testing.T) { test(t, fakeStore) })
	t.Run("redis", func(t *testing.T) { test(t, sharedRedisStore) })
}

// newTestServer serves a node on the store newStore makes.
func newTestServer(t *testing.T, newStore storeFunc, cfg testConfig, peerIDs bool) (*httptest.Server, *prometheus.Registry) {
	t.Helper()
	store := newStore(t, cfg, peerIDs)
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := tracker.New(cfg.svc, store, tracker.Options{}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg.http, svc, log, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts, reg
}

func get(t *testing.T, u string) map[string]any {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return getReq(t, req)
}

// getReq is get of a request made by the caller.
func getReq(t *testing.T, req *http.Request) map[string]any {
	t.Helper()
	u := req.URL.String()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	var m map[string]any
	if err := bencode.Unmarshal(body, &m); err != nil {
		t.Fatalf("response %q is not bencode: %v", body, err)
	}
	// Bencode is canonical: re-encoding must give the same bytes (sorted keys).
	again, _ := bencode.Marshal(m)
	if string(again) != string(body) {
		t.Fatalf("response is not canonical bencode: %q", body)
	}
	return m
}

func announceURL(base string, ih, pid string, port int, left int, extra string) string {
	return fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d%s",
		base, url.QueryEscape(ih), url.QueryEscape(pid), port, left, extra)
}

func TestAnnounceAndScrape(t *testing.T) { onEachStore(t, testAnnounceAndScrape) }

func testAnnounceAndScrape(t *testing.T, store storeFunc) {
	ts, reg := newTestServer(t, store, defaultTestConfig(), true)
	ih := strings.Repeat("h", 20)

	r := get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1001, 10, "&event=started"))
	if r["complete"] != int64(0) || r["incomplete"] != int64(1) || r["peers"] != "" {
		t.Fatalf("first announce: %v", r)
	}
	iv, _ := r["interval"].(int64)
	if iv < 1800 || iv >= 1860 || r["min interval"] != int64(300) {
		t.Fatalf("interval %v (want 1800 plus jitter under 60), min interval %v", r["interval"], r["min interval"])
	}
	r = get(t, announceURL(ts.URL, ih, strings.Repeat("b", 20), 1002, 0, "&event=completed"))
	if r["complete"] != int64(1) || r["incomplete"] != int64(1) {
		t.Fatalf("second announce: %v", r)
	}
	// httptest serves on 127.0.0.1, so every peer is 127.0.0.1.
	if r["peers"] != "\x7f\x00\x00\x01\x03\xe9" {
		t.Fatalf("seeder got peers %q, want the leecher on port 1001", r["peers"])
	}
	// Dictionary model with peer ids.
	r = get(t, announceURL(ts.URL, ih, strings.Repeat("c", 20), 1003, 5, "&compact=0"))
	list, ok := r["peers"].([]any)
	if !ok || len(list) != 2 {
		t.Fatalf("dictionary peers: %v", r["peers"])
	}
	ids := map[string]bool{}
	for _, e := range list {
		d := e.(map[string]any)
		if d["ip"] != "127.0.0.1" {
			t.Fatalf("dict peer %v", d)
		}
		ids[d["peer id"].(string)] = true
	}
	if !ids[strings.Repeat("a", 20)] || !ids[strings.Repeat("b", 20)] {
		t.Fatalf("peer ids %v", ids)
	}
	r = get(t, announceURL(ts.URL, ih, strings.Repeat("c", 20), 1003, 5, "&compact=0&no_peer_id=1"))
	for _, e := range r["peers"].([]any) {
		if _, has := e.(map[string]any)["peer id"]; has {
			t.Fatal("peer id sent despite no_peer_id")
		}
	}
	// numwant
	r = get(t, announceURL(ts.URL, ih, strings.Repeat("c", 20), 1003, 5, "&numwant=1"))
	if len(r["peers"].(string)) != 6 {
		t.Fatalf("numwant=1 gave %d bytes of peers", len(r["peers"].(string)))
	}
	// stopped: gone, and no peers in the answer
	r = get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1001, 10, "&event=stopped"))
	if r["incomplete"] != int64(1) || r["peers"] != "" {
		t.Fatalf("stopped: %v", r)
	}
	// paused with bytes left: a partial seed (BEP 21), counted incomplete
	// but not a downloader, and given downloaders only (the leecher on
	// 1003, not the seeder).
	r = get(t, announceURL(ts.URL, ih, strings.Repeat("d", 20), 1004, 5, "&event=paused"))
	if r["complete"] != int64(1) || r["incomplete"] != int64(2) || r["peers"] != "\x7f\x00\x00\x01\x03\xeb" {
		t.Fatalf("partial seed: %v", r)
	}
	sc := get(t, ts.URL+"/scrape?info_hash="+url.QueryEscape(ih)+"&info_hash="+url.QueryEscape(strings.Repeat("z", 20)))
	files := sc["files"].(map[string]any)
	want := map[string]any{"complete": int64(1), "downloaded": int64(1), "downloaders": int64(1), "incomplete": int64(2)}
	if fmt.Sprint(files[ih]) != fmt.Sprint(want) {
		t.Fatalf("scrape %v, want %v", files[ih], want)
	}
	if fmt.Sprint(files[strings.Repeat("z", 20)]) != fmt.Sprint(map[string]any{"complete": int64(0), "downloaded": int64(0), "downloaders": int64(0), "incomplete": int64(0)}) {
		t.Fatalf("unknown torrent scrape %v", files)
	}
	n := counterValue(t, reg, "tracker_announces_total", "ok")
	if n != 7 {
		t.Fatalf("tracker_announces_total{outcome=ok} = %v, want 7", n)
	}
}

// TestOnlyUnicastStored: an ip parameter may not name a multicast or
// broadcast address; nothing of it is stored.
func TestOnlyUnicastStored(t *testing.T) { onEachStore(t, testOnlyUnicastStored) }

func testOnlyUnicastStored(t *testing.T, store storeFunc) {
	cfg := defaultTestConfig()
	cfg.svc.AllowIPParam = true
	ts, _ := newTestServer(t, store, cfg, false)
	ih := strings.Repeat("m", 20)
	for _, ip := range []string{"224.0.0.1", "255.255.255.255", "ff02::1", "0.0.0.0"} {
		r := get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1001, 10, "&ip="+ip))
		if reason, _ := r["failure reason"].(string); !strings.Contains(reason, "unicast") {
			t.Errorf("ip=%s: %v", ip, r)
		}
	}
	r := get(t, announceURL(ts.URL, ih, strings.Repeat("b", 20), 1002, 10, "&ip=192.0.2.9"))
	if r["incomplete"] != int64(1) {
		t.Fatalf("a multicast peer was stored: %v", r)
	}
}

func TestIPv6PeersApart(t *testing.T) { onEachStore(t, testIPv6PeersApart) }

func testIPv6PeersApart(t *testing.T, store storeFunc) {
	cfg := defaultTestConfig()
	cfg.svc.AllowIPParam = true
	ts, _ := newTestServer(t, store, cfg, false)
	ih := strings.Repeat("6", 20)
	get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1001, 10, "&ip=2001:db8::1"))
	get(t, announceURL(ts.URL, ih, strings.Repeat("b", 20), 1002, 10, "&ip=192.0.2.1"))
	r := get(t, announceURL(ts.URL, ih, strings.Repeat("c", 20), 1003, 10, "&ip=192.0.2.2"))
	if r["peers"] != "\xc0\x00\x02\x01\x03\xea" {
		t.Fatalf("peers %q, want only the v4 peer", r["peers"])
	}
	if p6 := r["peers6"].(string); len(p6) != 18 || p6[:2] != "\x20\x01" || p6[16:] != "\x03\xe9" {
		t.Fatalf("peers6 %q, want the v6 peer", p6)
	}
	r = get(t, announceURL(ts.URL, ih, strings.Repeat("c", 20), 1003, 10, "&ip=192.0.2.2&compact=0"))
	for _, e := range r["peers"].([]any) {
		if ip := e.(map[string]any)["ip"].(string); strings.Contains(ip, ":") {
			t.Fatalf("v6 address %s in dictionary peers", ip)
		}
		if _, has := e.(map[string]any)["peer id"]; has {
			t.Fatal("peer id sent though the store keeps none")
		}
	}
	if len(r["peers6"].(string)) != 18 {
		t.Fatalf("dictionary answer lost the v6 peer: %v", r)
	}
}

func TestClientErrorsAreBencoded(t *testing.T) { onEachStore(t, testClientErrorsAreBencoded) }

func testClientErrorsAreBencoded(t *testing.T, store storeFunc) {
	ts, reg := newTestServer(t, store, defaultTestConfig(), false)
	for _, path := range []string{
		"/announce",
		"/announce?info_hash=short",
		announceURL("", strings.Repeat("h", 20), strings.Repeat("a", 20), 0, 1, ""),
		announceURL("", strings.Repeat("h", 20), strings.Repeat("a", 20), 1, 1, "&event=bogus"),
		"/announce?" + strings.Repeat("x", 5000),
		"/scrape",
		"/scrape?info_hash=1&info_hash=2",
	} {
		r := get(t, ts.URL+path)
		if reason, _ := r["failure reason"].(string); reason == "" {
			t.Errorf("%s: no failure reason in %v", path, r)
		}
	}
	if n := counterValue(t, reg, "tracker_announces_total", "client_error"); n != 5 {
		t.Fatalf("client_error announces = %v, want 5", n)
	}
}

func TestRedisDownGivesFailureQuickly(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	ts, reg := newTestServer(t, redisStoreOn(rdb), defaultTestConfig(), false)
	ih := strings.Repeat("d", 20)
	get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1, 1, ""))
	srv.Stop()
	start := time.Now()
	r := get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1, 1, ""))
	if r["failure reason"] != tracker.Unavailable {
		t.Fatalf("with Redis down: %v", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failure took %s", d)
	}
	if resp, err := http.Get(ts.URL + "/readyz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("/readyz with Redis down: %v %v", resp.Status, err)
	}
	if n := counterValue(t, reg, "tracker_redis_errors_total", "announce"); n < 1 {
		t.Fatal("redis error not counted")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1, 1, ""))
		if _, failed := r["failure reason"]; !failed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not recover: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, err := http.Get(ts.URL + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz after recovery: %v", err)
	}
}

// TestStoreDownGivesFailure: the front end's side of a store that fails
// (TestRedisDownGivesFailureQuickly is the real one's): a bencoded
// failure reason, counted, /readyz 503, and service again once it answers.
func TestStoreDownGivesFailure(t *testing.T) {
	store := &testkit.Store{}
	ts, reg := newTestServer(t, func(*testing.T, testConfig, bool) tracker.Store { return store }, defaultTestConfig(), false)
	ih := strings.Repeat("f", 20)
	store.Fail(errors.New("the store is down"))
	if r := get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1, 1, "")); r["failure reason"] != tracker.Unavailable {
		t.Fatalf("with the store down: %v", r)
	}
	if n := counterValue(t, reg, "tracker_redis_errors_total", "announce"); n != 1 {
		t.Fatalf("store errors counted: %v, want 1", n)
	}
	if resp, err := http.Get(ts.URL + "/readyz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("/readyz with the store down: %v %v", resp, err)
	}
	store.Fail(nil)
	if r := get(t, announceURL(ts.URL, ih, strings.Repeat("a", 20), 1, 1, "")); r["failure reason"] != nil || r["incomplete"] != int64(1) {
		t.Fatalf("the store back: %v", r)
	}
	if resp, err := http.Get(ts.URL + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz with the store back: %v %v", resp, err)
	}
}

func TestTrustedProxies(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		header, remote string
		set            map[string]string
		want           string
	}{
		{"X-Forwarded-For", "192.0.2.1:5000", map[string]string{"X-Forwarded-For": "198.51.100.1"}, "192.0.2.1"},                           // untrusted peer: headers ignored
		{"X-Forwarded-For", "127.0.0.1:5000", map[string]string{"X-Forwarded-For": "198.51.100.1"}, "198.51.100.1"},                        // trusted proxy
		{"X-Forwarded-For", "127.0.0.1:5000", map[string]string{"X-Forwarded-For": "203.0.113.9, 198.51.100.1, 10.1.1.1"}, "198.51.100.1"}, // right-most untrusted hop
		{"X-Forwarded-For", "127.0.0.1:5000", map[string]string{"X-Forwarded-For": "198.51.100.1:4321"}, "198.51.100.1"},                   // ip:port
		{"X-Forwarded-For", "127.0.0.1:5000", map[string]string{"X-Forwarded-For": "[2001:db8::7]:4321"}, "2001:db8::7"},                   // [ipv6]:port
		{"X-Forwarded-For", "127.0.0.1:5000", map[string]string{"X-Forwarded-For": "garbage"}, "invalid IP"},                               // unparsable: refused, not the proxy
		{"X-Forwarded-For", "127.0.0.1:5000", map[string]string{"X-Real-IP": "198.51.100.2"}, "invalid IP"},                                // only the configured header counts
		{"X-Forwarded-For", "127.0.0.1:5000", nil, "invalid IP"},                                                                           // no header from a proxy
		{"X-Forwarded-For", "[::ffff:127.0.0.1]:5000", map[string]string{"X-Forwarded-For": "2001:db8::5"}, "2001:db8::5"},                 // v4-mapped proxy address
		{"X-Real-IP", "127.0.0.1:5000", map[string]string{"X-Real-IP": "198.51.100.2", "X-Forwarded-For": "203.0.113.66"}, "198.51.100.2"}, // the proxy's header wins over the client's
		{"X-Real-IP", "127.0.0.1:5000", map[string]string{"X-Real-IP": "198.51.100.2:80"}, "198.51.100.2"},
		{"Forwarded", "127.0.0.1:5000", map[string]string{"Forwarded": `for=203.0.113.5;proto=https, for="[2001:db8::9]:443";by=10.0.0.1`}, "2001:db8::9"},
		{"Forwarded", "127.0.0.1:5000", map[string]string{"Forwarded": `for=198.51.100.3, for=10.2.2.2`}, "198.51.100.3"},
		{"CF-Connecting-IP", "10.9.9.9:5000", map[string]string{"Cf-Connecting-Ip": "198.51.100.4"}, "198.51.100.4"},
	}
	for _, tc := range tests {
		s := &Server{cfg: Config{TrustedProxies: proxies, ProxyHeader: tc.header}}
		r := httptest.NewRequest("GET", "/announce", nil)
		r.RemoteAddr = tc.remote
		for k, v := range tc.set {
			r.Header.Set(k, v)
		}
		if got := s.clientAddr(r).String(); got != tc.want {
			t.Errorf("%s from %s with %v: got %s, want %s", tc.header, tc.remote, tc.set, got, tc.want)
		}
	}
}

func counterValue(t *testing.T, g prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
