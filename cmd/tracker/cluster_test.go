package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/hub"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

const testPassword = "correct horse battery staple"

var clusterSeq atomic.Int64

// cluster is a hub and nodes, each run in-process exactly as main runs
// them, on one real redis-server.
type cluster struct {
	t        testing.TB
	redis    *testkit.RedisServer  // nil on a Redis Cluster
	rc       *testkit.RedisCluster // nil on one Redis
	redisURL string
	env0     []string // what every process of this cluster gets first
	channel  string
	hub      *proc
	nodes    map[string]*proc
}

type proc struct {
	url    string // http://host:port
	admin  string // the admin listener's http://host:port ("": none)
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels the process and waits for it; it may be called again.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.once.Do(func() { p.cancel(); p.err = <-p.done })
	if p.err != nil {
		t.Errorf("stopped with %v", p.err)
	}
}

func startProc(t testing.TB, run func(context.Context, []string, io.Writer, chan<- listening) error, environ []string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan listening, 1)
	p := &proc{cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- run(ctx, environ, logSink, started) }()
	select {
	case a := <-started:
		p.url = "http://" + a.HTTP.String()
		if a.Admin != nil {
			p.admin = "http://" + a.Admin.String()
		}
	case err := <-p.done:
		t.Fatalf("did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("did not start within 10s")
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

func newCluster(t testing.TB, nodes ...string) *cluster {
	t.Helper()
	r := testkit.StartRedis(t)
	c := &cluster{t: t, redis: r, redisURL: r.URL(), channel: fmt.Sprintf("tltest%d", clusterSeq.Add(1)), nodes: map[string]*proc{}}
	c.startHub()
	for _, n := range nodes {
		c.startNode(n, testPassword)
	}
	return c
}

// newClusterOn is newCluster on a Redis Cluster, given every process of
// it as a seed.
func newClusterOn(t testing.TB, rc *testkit.RedisCluster, nodes ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, rc: rc, redisURL: rc.URL(), env0: []string{"TRACKER_REDIS_CLUSTER=true"},
		channel: fmt.Sprintf("tltest%d", clusterSeq.Add(1)), nodes: map[string]*proc{}}
	c.startHub()
	for _, n := range nodes {
		c.startNode(n, testPassword)
	}
	return c
}

// onEachRedis runs f on one Redis and on a Redis Cluster of three masters
// and three replicas (its own, started for the test).
func onEachRedis(t *testing.T, f func(t *testing.T, newC func(nodes ...string) *cluster)) {
	t.Run("redis", func(t *testing.T) {
		f(t, func(nodes ...string) *cluster { return newCluster(t, nodes...) })
	})
	t.Run("cluster", func(t *testing.T) {
		rc := testkit.StartRedisCluster(t, 3, 1, time.Second)
		f(t, func(nodes ...string) *cluster { return newClusterOn(t, rc, nodes...) })
	})
}

// resetHub asks the hub, with the admin token, to reset its link (which
// resyncs every node).
func (c *cluster) resetHub() {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.hub.admin+"/admin/link/reset", nil)
	req.Header.Set("Authorization", "Bearer test-admin-token-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		c.t.Fatalf("hub reset: %v %v", resp, err)
	}
	resp.Body.Close()
}

// client is a client of the cluster's Redis, closed at the end of the test.
func (c *cluster) client(t testing.TB) redis.UniversalClient {
	if c.rc != nil {
		return c.rc.Client(t)
	}
	return c.redis.Client(t)
}

func (c *cluster) env(extra ...string) []string {
	return append(append(c.env0[:len(c.env0):len(c.env0)],
		"TRACKER_HTTP_ADDR=127.0.0.1:0",
		"TRACKER_UDP_ADDR=127.0.0.1:0",
		"TRACKER_UDP_SECRET="+testUDPSecret,
		"TRACKER_REDIS_URL="+c.redisURL,
		"TRACKER_LINK_CHANNEL="+c.channel,
		"TRACKER_LINK_HEARTBEAT=100ms",
		"TRACKER_ADMIN_TOKEN=test-admin-token-123",
		"TRACKER_ADMIN_ADDR=127.0.0.1:0",
		"TRACKER_LOG_LEVEL=info", // visible with TRACKLINK_TEST_LOGS=1
		"TRACKER_LOG_FORMAT=text",
	), extra...)
}

func (c *cluster) startHub() {
	c.hub = startProc(c.t, runHub, c.env("TRACKER_LINK_PASSWORD="+testPassword, "TRACKER_HUB_NAME=hub1"))
}

func (c *cluster) startNode(name, password string) *proc {
	p := startProc(c.t, runNode, c.env("TRACKER_NODE_ID="+name, "TRACKER_LINK_PASSWORD="+password))
	c.nodes[name] = p
	return p
}

// announce sends one announce to a node and returns the decoded answer.
func announceTo(t testing.TB, base string, ih string, port int, left int, event string) map[string]any {
	t.Helper()
	u := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&event=%s",
		base, url.QueryEscape(ih), url.QueryEscape(fmt.Sprintf("-TT0001-%012d", port)), port, left, event)
	return getBencode(t, u)
}

func getBencode(t testing.TB, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := bencode.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %q: %v", u, body, err)
	}
	if fr, ok := m["failure reason"]; ok {
		t.Fatalf("%s: failure %v", u, fr)
	}
	return m
}

type counts struct{ seeders, leechers, downloaded int64 }

func scrapeOf(t testing.TB, base, ih string) counts {
	t.Helper()
	m := getBencode(t, base+"/scrape?info_hash="+url.QueryEscape(ih))
	f, _ := m["files"].(map[string]any)[ih].(map[string]any)
	return counts{f["complete"].(int64), f["incomplete"].(int64), f["downloaded"].(int64)}
}

func (c *cluster) waitLinked(names ...string) {
	c.t.Helper()
	for _, n := range names {
		p := c.nodes[n]
		testkit.Eventually(c.t, 5*time.Second, n+" link up", func() bool {
			resp, err := http.Get(p.url + "/link/status")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.Contains(string(b), `"state":"up"`)
		})
	}
	// The hub relays to a node once it has heard from it.
	testkit.Eventually(c.t, 5*time.Second, "hub sees all nodes", func() bool {
		st, err := hubStatus(c.hub.url)
		if err != nil {
			return false
		}
		for _, n := range names {
			if !st.Nodes[n].Live {
				return false
			}
		}
		return true
	})
}

// hubStatus reads the hub's /status.
func hubStatus(hubURL string) (hub.Status, error) {
	var st hub.Status
	resp, err := http.Get(hubURL + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func hubCounter(t testing.TB, hubURL, metric string) float64 {
	t.Helper()
	resp, err := http.Get(hubURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if name, val, ok := strings.Cut(line, " "); ok && name == metric {
			var f float64
			fmt.Sscan(val, &f)
			return f
		}
	}
	return 0
}

func TestLinkConvergence(t *testing.T) { onEachRedis(t, testLinkConvergence) }

func testLinkConvergence(t *testing.T, newC func(...string) *cluster) {
	c := newC("node1", "node2", "node3")
	c.waitLinked("node1", "node2", "node3")
	ih := "common-torrent-00001"
	n1, n2, n3 := c.nodes["node1"].url, c.nodes["node2"].url, c.nodes["node3"].url

	announceTo(t, n1, ih, 7001, 100, "started")
	for _, n := range []string{n2, n3} {
		took := testkit.Eventually(t, time.Second, "peer 1 on "+n, func() bool { return scrapeOf(t, n, ih).leechers == 1 })
		t.Logf("converged on %s in %s", n, took)
	}
	r := announceTo(t, n2, ih, 7002, 100, "started")
	if r["peers"] != "\x7f\x00\x00\x01\x1b\x59" {
		t.Fatalf("client 2 at node2 got %q, want client 1 (127.0.0.1:7001)", r["peers"])
	}
	testkit.Eventually(t, time.Second, "peer 2 on node3", func() bool { return scrapeOf(t, n3, ih).leechers == 2 })
	r = announceTo(t, n3, ih, 7003, 0, "completed")
	if p := r["peers"].(string); len(p) != 12 || !strings.Contains(p, "\x1b\x59") || !strings.Contains(p, "\x1b\x5a") {
		t.Fatalf("client 3 at node3 got %q, want clients 1 and 2", p)
	}
	want := counts{seeders: 1, leechers: 2, downloaded: 1}
	for _, n := range []string{n1, n2, n3} {
		testkit.Eventually(t, time.Second, "exact counts on "+n, func() bool { return scrapeOf(t, n, ih) == want })
	}
	// The relayed peer keeps its origin's last-seen time: it expires
	// everywhere at once.
	rdb := c.client(t)
	var scores []float64
	for _, n := range []string{"node1", "node2", "node3"} {
		key := fmt.Sprintf("tl:{%s:%x}:m", n, ih)
		members, err := rdb.ZRangeWithScores(context.Background(), key, 0, -1).Result()
		members = slices.DeleteFunc(members, func(z redis.Z) bool { op, _ := redisstore.PeerClass(z.Score); return op != bittorrent.OpLeecher })
		if err != nil || len(members) != 2 {
			t.Fatalf("%s: leechers %v %v", key, members, err)
		}
		scores = append(scores, members[0].Score, members[1].Score)
	}
	for i := 2; i < len(scores); i++ {
		if scores[i] != scores[i%2] {
			t.Fatalf("relayed scores differ from the origin's: %v", scores)
		}
	}
	announceTo(t, n1, ih, 7001, 100, "stopped")
	for _, n := range []string{n1, n2, n3} {
		testkit.Eventually(t, time.Second, "stop on "+n, func() bool { return scrapeOf(t, n, ih) == counts{1, 1, 1} })
	}
}

func TestLinkRejectsWhatIsNotAuthentic(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.startNode("intruder", "not the link password")
	c.waitLinked("node1", "node2")
	ih := "intruder-torrent-001"
	announceTo(t, c.nodes["intruder"].url, ih, 7001, 0, "started")
	testkit.Eventually(t, 2*time.Second, "bad MAC counted", func() bool {
		return hubCounter(t, c.hub.url, `hub_rejected_total{reason="bad_mac"}`) > 0
	})

	// Capture a genuine message and replay it, tampered and as is.
	rdb := c.redis.Client(t)
	ctx := context.Background()
	// Updates go up on their partition's channel.
	sub := rdb.PSubscribe(ctx, c.channel+":up:*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	announceTo(t, c.nodes["node1"].url, "genuine-torrent-0001", 7100, 5, "started")
	node1Key := func(string) (link.Key, error) { return link.NewMaster(testPassword).NodeKey("node1"), nil }
	var genuine []byte
	var channel string
	for genuine == nil {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if lm, err := link.DecodeUp([]byte(m.Payload), node1Key); err == nil && lm.Node == "node1" && lm.Kind == link.KindUpdates {
			genuine, channel = []byte(m.Payload), m.Channel
		}
	}
	replays := hubCounter(t, c.hub.url, `hub_rejected_total{reason="replay"}`)
	rdb.Publish(ctx, channel, genuine)
	testkit.Eventually(t, 2*time.Second, "replay counted", func() bool {
		return hubCounter(t, c.hub.url, `hub_rejected_total{reason="replay"}`) > replays
	})
	tampered := append([]byte(nil), genuine...)
	tampered[len(tampered)-40] ^= 0xff
	badMAC := hubCounter(t, c.hub.url, `hub_rejected_total{reason="bad_mac"}`)
	rdb.Publish(ctx, c.channel+":up", tampered)
	rdb.Publish(ctx, c.channel+":up", []byte{link.Version, 1, 0})
	rdb.Publish(ctx, c.channel+":up", []byte("garbage"))
	rdb.Publish(ctx, c.channel+":up", []byte{1, 1, 0}) // version 1: one key for all, no longer spoken
	testkit.Eventually(t, 2*time.Second, "tampered, old version and garbage counted", func() bool {
		return hubCounter(t, c.hub.url, `hub_rejected_total{reason="bad_mac"}`) > badMAC &&
			hubCounter(t, c.hub.url, `hub_rejected_total{reason="unknown_version"}`) > 0 &&
			hubCounter(t, c.hub.url, `hub_rejected_total{reason="malformed"}`) > 0
	})
	time.Sleep(300 * time.Millisecond)
	for _, n := range []string{"node1", "node2"} {
		if got := scrapeOf(t, c.nodes[n].url, ih); got != (counts{}) {
			t.Fatalf("intruder's peer reached %s: %+v", n, got)
		}
	}
	// Nothing of the intruder's in any keyspace but its own.
	keys, _ := rdb.Keys(ctx, fmt.Sprintf("tl:{node*:%x}:*", ih)).Result()
	if len(keys) != 0 {
		t.Fatalf("intruder's torrent in keyspaces %v", keys)
	}
}

func TestLinkResyncAfterHubRestart(t *testing.T) { onEachRedis(t, testLinkResyncAfterHubRestart) }

func testLinkResyncAfterHubRestart(t *testing.T, newC func(...string) *cluster) {
	c := newC("node1", "node2")
	c.waitLinked("node1", "node2")
	c.hub.stop(t)
	ih := "while-hub-was-down01"
	announceTo(t, c.nodes["node1"].url, ih, 7001, 0, "started")
	announceTo(t, c.nodes["node2"].url, ih, 7002, 10, "started")
	time.Sleep(200 * time.Millisecond)
	if got := scrapeOf(t, c.nodes["node2"].url, ih); got.seeders != 0 {
		t.Fatalf("relayed without a hub: %+v", got)
	}
	// Nodes keep serving from their own keyspaces while the hub is down.
	if r := announceTo(t, c.nodes["node1"].url, ih, 7003, 10, "started"); r["complete"] != int64(1) {
		t.Fatalf("node1 without hub: %v", r)
	}
	c.startHub()
	for _, n := range []string{"node1", "node2"} {
		took := testkit.Eventually(t, 5*time.Second, "resync of "+n, func() bool { return scrapeOf(t, c.nodes[n].url, ih) == counts{1, 2, 0} })
		t.Logf("%s resynced %s after the hub restarted", n, took)
	}
}

func TestLinkResyncOnJoin(t *testing.T) { onEachRedis(t, testLinkResyncOnJoin) }

func testLinkResyncOnJoin(t *testing.T, newC func(...string) *cluster) {
	c := newC("node1", "node2")
	c.waitLinked("node1", "node2")
	ih := "before-node3-joined1"
	announceTo(t, c.nodes["node1"].url, ih, 7001, 0, "started")
	announceTo(t, c.nodes["node2"].url, ih, 7002, 10, "started")
	c.startNode("node3", testPassword)
	took := testkit.Eventually(t, 5*time.Second, "node3 resynced", func() bool { return scrapeOf(t, c.nodes["node3"].url, ih) == counts{1, 1, 0} })
	t.Logf("joining node resynced in %s", took)
	// Restart node3 (its keyspace stays): new peers since then reach it.
	c.nodes["node3"].stop(t)
	announceTo(t, c.nodes["node1"].url, ih, 7004, 10, "started")
	c.startNode("node3", testPassword)
	testkit.Eventually(t, 5*time.Second, "restarted node3 resynced", func() bool { return scrapeOf(t, c.nodes["node3"].url, ih) == counts{1, 2, 0} })
}

func TestLinkSoftSplitHealed(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.waitLinked("node1", "node2")
	rdb := c.redis.Client(t)
	if err := rdb.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	ih := "after-the-split-0001"
	took := testkit.Eventually(t, 5*time.Second, "link healed", func() bool {
		announceTo(t, c.nodes["node1"].url, ih, 7001, 10, "started")
		return scrapeOf(t, c.nodes["node2"].url, ih).leechers == 1
	})
	t.Logf("healed after CLIENT KILL TYPE pubsub in %s", took)
	c.waitLinked("node1", "node2")

	// A silent split: the hub is gone, subscriptions stay up. Nodes notice
	// the missing heartbeats and say so.
	c.hub.stop(t)
	testkit.Eventually(t, 2*time.Second, "split detected", func() bool {
		resp, err := http.Get(c.nodes["node1"].url + "/link/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"state":"split"`)
	})
	c.startHub()
	c.waitLinked("node1", "node2")

	// Reset by hand: needs the token.
	req, _ := http.NewRequest("POST", c.nodes["node1"].admin+"/admin/link/reset", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("reset without token: %v %v", resp, err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token-123")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("reset with token: %v %v", resp, err)
	}
	c.resetHub()
	c.waitLinked("node1", "node2")
	announceTo(t, c.nodes["node2"].url, ih, 7002, 10, "started")
	testkit.Eventually(t, time.Second, "converges after resets", func() bool { return scrapeOf(t, c.nodes["node1"].url, ih).leechers == 2 })
}

func TestLinkSurvivesRedisRestart(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.waitLinked("node1", "node2")
	if err := c.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	ih := "after-redis-restart1"
	took := testkit.Eventually(t, 10*time.Second, "recovered", func() bool {
		resp, err := http.Get(fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-TT0001-000000007001&port=7001&left=1", c.nodes["node1"].url, url.QueryEscape(ih)))
		if err == nil {
			resp.Body.Close()
		}
		return scrapeOrZero(c.nodes["node2"].url, ih).leechers == 1
	})
	t.Logf("recovered from a Redis restart in %s", took)
}

// scrapeOrZero is scrapeOf for moments when the node may answer with a failure.
func scrapeOrZero(base, ih string) counts {
	resp, err := http.Get(base + "/scrape?info_hash=" + url.QueryEscape(ih))
	if err != nil {
		return counts{}
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if bencode.Unmarshal(b, &m) != nil {
		return counts{}
	}
	files, _ := m["files"].(map[string]any)
	f, _ := files[ih].(map[string]any)
	if f == nil {
		return counts{}
	}
	return counts{f["complete"].(int64), f["incomplete"].(int64), f["downloaded"].(int64)}
}

// logSink receives the cluster processes' logs (set TRACKLINK_TEST_LOGS=1 to see them).
var logSink io.Writer = io.Discard

func init() {
	if os.Getenv("TRACKLINK_TEST_LOGS") != "" {
		logSink = os.Stderr
	}
}

// TestLinkTwoHubs: two hubs split the relay's partitions between them
// (each lists its half in /status and exports hub_partitions_owned), so
// each change is relayed by one of them; counts stay exact, and when one
// stops, the other takes its partitions and relays alone.
func TestLinkTwoHubs(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	first := c.hub
	c.hub = startProc(t, runHub, c.env("TRACKER_LINK_PASSWORD="+testPassword, "TRACKER_HUB_NAME=hub2"))
	hubs := []*proc{first, c.hub}
	testkit.Eventually(t, 5*time.Second, "two hubs split the partitions", func() bool {
		seen := map[int]bool{}
		for _, h := range hubs {
			st, err := hubStatus(h.url)
			if err != nil || len(st.Partitions) != link.DefaultPartitions/2 || hubCounter(t, h.url, "hub_partitions_owned") != link.DefaultPartitions/2 {
				return false
			}
			for _, p := range st.Partitions {
				seen[p] = true
			}
		}
		return len(seen) == link.DefaultPartitions
	})
	c.waitLinked("node1", "node2")
	// Each partition taken is listened to once its subscription is made
	// (which asks for its takeover resync); before, changes are resynced,
	// not relayed, and the count below is of relays.
	testkit.Eventually(t, 5*time.Second, "every partition taken is listened to", func() bool {
		for _, h := range hubs {
			if hubCounter(t, h.url, `hub_resync_requests_total{reason="takeover"}`) < hubCounter(t, h.url, "hub_partition_takeovers_total") {
				return false
			}
		}
		return true
	})
	time.Sleep(300 * time.Millisecond) // the takeover resyncs run
	relayed := func() float64 {
		return hubCounter(t, first.url, "hub_relayed_updates_total") + hubCounter(t, c.hub.url, "hub_relayed_updates_total")
	}
	before := relayed()
	// Torrents over many partitions; each announce is one change,
	// relayed into the other node once.
	var ihs []string
	for i := range 16 {
		ih := fmt.Sprintf("two-hubs-torrent-%03d", i)
		ih = string(rune('a'+i)) + ih[1:]
		ihs = append(ihs, ih)
		announceTo(t, c.nodes["node1"].url, ih, 7001, 10, "started")
		announceTo(t, c.nodes["node1"].url, ih, 7001, 0, "completed")
		announceTo(t, c.nodes["node2"].url, ih, 7002, 10, "started")
	}
	want := counts{seeders: 1, leechers: 1, downloaded: 1}
	for _, n := range []string{"node1", "node2"} {
		for _, ih := range ihs {
			testkit.Eventually(t, time.Second, "exact counts on "+n, func() bool {
				got := scrapeOf(t, c.nodes[n].url, ih)
				return got == want
			})
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := relayed() - before; got != float64(3*len(ihs)) {
		t.Fatalf("the two hubs relayed %v changes, want each of %d once", got, 3*len(ihs))
	}
	first.stop(t)
	testkit.Eventually(t, 5*time.Second, "the second hub takes every partition", func() bool {
		st, err := hubStatus(c.hub.url)
		return err == nil && len(st.Partitions) == link.DefaultPartitions
	})
	ih2 := "two-hubs-torrent-zzz"
	announceTo(t, c.nodes["node2"].url, ih2, 7003, 10, "started")
	testkit.Eventually(t, time.Second, "second hub alone relays", func() bool { return scrapeOf(t, c.nodes["node1"].url, ih2).leechers == 1 })
}

// TestReplicasOfOneNode: two processes serve node "beta" (as
// docker-compose.friends.yml runs them). Under announces at both, the hub
// refuses nothing, relays both to alpha, and resyncs once per process
// start, not again: its resync counter stays flat while they work.
func TestReplicasOfOneNode(t *testing.T) {
	c := newCluster(t, "alpha", "beta")
	c.waitLinked("alpha", "beta")
	beta2 := startProc(t, runNode, c.env("TRACKER_NODE_ID=beta", "TRACKER_LINK_PASSWORD="+testPassword))
	testkit.Eventually(t, 5*time.Second, "hub sees beta's second process", func() bool {
		st, err := hubStatus(c.hub.url)
		return err == nil && len(st.Nodes["beta"].Processes) == 2
	})
	time.Sleep(300 * time.Millisecond) // the resync beta's second process asked for runs
	before := hubCounter(t, c.hub.url, "hub_resyncs_total")
	ih := strings.Repeat("r", 20)
	for i := 0; i < 100; i++ {
		base := c.nodes["beta"].url
		if i%2 == 1 {
			base = beta2.url
		}
		announceTo(t, base, ih, 20000+i, 1, "started")
	}
	testkit.Eventually(t, 2*time.Second, "both replicas' peers at alpha", func() bool {
		return scrapeOf(t, c.nodes["alpha"].url, ih).leechers == 100
	})
	time.Sleep(500 * time.Millisecond) // five heartbeats of each process
	if n := hubCounter(t, c.hub.url, `hub_rejected_total{reason="replay"}`); n != 0 {
		t.Fatalf("%v messages of replicas refused as replays", n)
	}
	if after := hubCounter(t, c.hub.url, "hub_resyncs_total"); after != before {
		t.Fatalf("resyncs went from %v to %v while the replicas worked", before, after)
	}
	if j := hubCounter(t, c.hub.url, `hub_resync_requests_total{reason="join"}`); j != 3 {
		t.Fatalf("%v joins asked for resyncs; want 3 (alpha, beta and beta's second process)", j)
	}

	// A third process of beta whose clock is 2 s ahead publishes 200
	// updates while the two real ones serve announces: every change is
	// relayed, none is refused, and it asks for one resync.
	rdb := c.redis.Client(t)
	ctx := context.Background()
	key := link.NewMaster(testPassword).NodeKey("beta")
	session := link.NewSession()
	skewed := strings.Repeat("s", 20)
	for i := 1; i <= 200; i++ {
		now := time.Now().Add(2 * time.Second).UnixMilli()
		ch := bittorrent.PeerChange{InfoHash: bittorrent.InfoHash([]byte(skewed)), Op: bittorrent.OpLeecher, Seen: now,
			Peer: string([]byte{10, 2, byte(i >> 8), byte(i), 0x1a, 0xe1})}
		b, err := link.EncodeUp(key, &link.Message{Kind: link.KindUpdates, Node: "beta", Session: session, Seq: uint64(i), Time: now, Changes: []bittorrent.PeerChange{ch}})
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Publish(ctx, c.channel+":up", b).Err(); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			announceTo(t, beta2.url, ih, 21000+i, 1, "started")
			announceTo(t, c.nodes["beta"].url, ih, 22000+i, 1, "started")
		}
	}
	testkit.Eventually(t, 3*time.Second, "the skewed replica's 200 peers at alpha", func() bool {
		return scrapeOf(t, c.nodes["alpha"].url, skewed).leechers == 200
	})
	testkit.Eventually(t, 3*time.Second, "the real replicas' peers at alpha", func() bool {
		return scrapeOf(t, c.nodes["alpha"].url, ih).leechers == 120
	})
	for _, reason := range []string{"replay", "stale", "bad_seen", "seq_jump"} {
		if n := hubCounter(t, c.hub.url, `hub_rejected_total{reason="`+reason+`"}`); n != 0 {
			t.Fatalf("%v messages refused as %s", n, reason)
		}
	}
	if j := hubCounter(t, c.hub.url, `hub_resync_requests_total{reason="join"}`); j != 4 {
		t.Fatalf("%v joins; want 4 (one more for the skewed process)", j)
	}
}

// TestNodeWithItsOwnKeyOnly: a friend's node holds only what `tracker
// link key` printed for it, not the network secret; it links and
// converges. A node that signs with another node's key is refused.
func TestNodeWithItsOwnKeyOnly(t *testing.T) {
	c := newCluster(t, "node1")
	var out strings.Builder
	if err := run(context.Background(), []string{"link", "key", "friend"}, []string{"TRACKER_LINK_PASSWORD=" + testPassword}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var creds []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "TRACKER_") {
			creds = append(creds, line)
		}
	}
	if len(creds) != 3 || strings.Contains(out.String(), testPassword) {
		t.Fatalf("tracker link key printed %q", out.String())
	}
	c.nodes["friend"] = startProc(t, runNode, c.env(creds...))
	c.waitLinked("node1", "friend")
	ih := "friend-torrent-00001"
	announceTo(t, c.nodes["friend"].url, ih, 7301, 1, "started")
	testkit.Eventually(t, time.Second, "friend's peer at node1", func() bool { return scrapeOf(t, c.nodes["node1"].url, ih).leechers == 1 })
	announceTo(t, c.nodes["node1"].url, ih, 7302, 0, "started")
	testkit.Eventually(t, time.Second, "node1's peer at friend", func() bool { return scrapeOf(t, c.nodes["friend"].url, ih).seeders == 1 })

	// Mallory holds friend's key but claims to be node "mallory".
	var key string
	for _, kv := range creds {
		if v, ok := strings.CutPrefix(kv, "TRACKER_LINK_KEY="); ok {
			key = v
		}
	}
	badMAC := hubCounter(t, c.hub.url, `hub_rejected_total{reason="bad_mac"}`)
	mallory := startProc(t, runNode, c.env(append(creds[1:], "TRACKER_NODE_ID=mallory", "TRACKER_LINK_KEY="+key)...))
	announceTo(t, mallory.url, "mallory-torrent-0001", 7303, 1, "started")
	testkit.Eventually(t, 2*time.Second, "mallory's messages refused", func() bool {
		return hubCounter(t, c.hub.url, `hub_rejected_total{reason="bad_mac"}`) > badMAC
	})
	if st, _ := hubStatus(c.hub.url); len(st.Nodes["mallory"].Processes) != 0 {
		t.Fatal("mallory was registered")
	}
	if got := scrapeOf(t, c.nodes["node1"].url, "mallory-torrent-0001"); got != (counts{}) {
		t.Fatalf("mallory's peer reached node1: %+v", got)
	}
}

// TestShutdownUnderLoad: a node stopped (SIGTERM: its context ends) while
// clients announce fails no request it had accepted: requests in flight
// finish through the store and the link before those stop.
func TestShutdownUnderLoad(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.waitLinked("node1", "node2")
	n1 := c.nodes["node1"]
	var ok, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-TT0001-%012d&port=%d&uploaded=0&downloaded=0&left=1",
					n1.url, url.QueryEscape(fmt.Sprintf("shutdown-torrent-%03d", w)), w*100000+i, 10000+i%50000)
				resp, err := hc.Get(u)
				if err != nil {
					continue // not accepted: the listener is closed
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), "failure reason") {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, string(body))
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	before := ok.Load()
	n1.stop(t)
	close(stop)
	wg.Wait()
	if before == 0 {
		t.Fatal("no load before the stop")
	}
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d accepted announces failed during the shutdown (%d succeeded); first: %v", f, ok.Load(), firstFailure.Load())
	}
}
