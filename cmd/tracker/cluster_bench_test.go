package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// BenchmarkPropagation: announce at node1, time until node2's keyspace
// holds the peer. Reports p50 and p99 (target p99 < 50 ms on loopback).
func BenchmarkPropagation(b *testing.B) {
	c := newCluster(b, "node1", "node2", "node3")
	c.waitLinked("node1", "node2", "node3")
	rdb := c.redis.Client(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ih := fmt.Sprintf("propagation-%08d", i)
		key := fmt.Sprintf("tl:{node2:%x}:m", ih)
		start := time.Now()
		resp, err := http.Get(fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-TT0001-%012d&port=7001&left=1", c.nodes["node1"].url, ih, i))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		for rdb.ZCard(ctx, key).Val() == 0 {
			if time.Since(start) > 5*time.Second {
				b.Fatal("not propagated within 5s")
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkHubRelay: a source node publishes full batches of changes; the
// hub relays each to the three other live nodes. Reports changes taken in
// per second and keyspace writes per second (target ≥ 100,000 updates/s).
func BenchmarkHubRelay(b *testing.B) {
	c := newCluster(b, "node1", "node2", "node3")
	c.waitLinked("node1", "node2", "node3")
	src := newBenchSource(b, c.redis.Client(b), c.channel+":up", "benchsrc")
	relayBench(b, c.hub.url, src, 3)
}

// BenchmarkHubRelayMembers: the same with members on a redis-server each
// (TRACKER_HUB_MEMBERS): the source in the first member, one live node in
// each other member.
func BenchmarkHubRelayMembers(b *testing.B) {
	for _, members := range []int{2, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			var entries []string
			var sources []*benchSource
			for i := range members {
				r := testkit.StartRedis(b)
				node := fmt.Sprintf("m%dn", i)
				entries = append(entries, fmt.Sprintf(`{"name": "m%d", "nodes": [%q], "redis_url": %q}`, i, node, r.URL()))
				sources = append(sources, newBenchSource(b, r.Client(b), "tl:link:up", node))
			}
			path := filepath.Join(b.TempDir(), "members.json")
			if err := os.WriteFile(path, []byte(`{"members": [`+strings.Join(entries, ",")+`]}`), 0o600); err != nil {
				b.Fatal(err)
			}
			hub := startProc(b, runHub, []string{"TRACKER_HUB_MEMBERS=" + path, "TRACKER_LINK_PASSWORD=" + testPassword,
				"TRACKER_HTTP_ADDR=127.0.0.1:0", "TRACKER_UDP_ADDR=off", "TRACKER_LINK_HEARTBEAT=100ms", "TRACKER_LOG_LEVEL=warn"})
			// Each member's node is live at the hub once it said hello
			// on its channel (again until the hub's subscription hears).
			for _, s := range sources {
				deadline := time.Now().Add(10 * time.Second)
				for !hubKnows(b, hub.url, s.node) {
					if time.Now().After(deadline) {
						b.Fatalf("the hub did not hear %s", s.node)
					}
					s.hello()
					time.Sleep(20 * time.Millisecond)
				}
			}
			relayBench(b, hub.url, sources[0], members-1)
		})
	}
}

// benchSource publishes as one node on one Redis.
type benchSource struct {
	b       testing.TB
	rdb     redis.UniversalClient
	channel string
	node    string
	key     link.Key
	session uint64
	seq     uint64
	streams map[int]uint64 // by partition (publishPartitioned)
}

func newBenchSource(b testing.TB, rdb redis.UniversalClient, channel, node string) *benchSource {
	return &benchSource{b: b, rdb: rdb, channel: channel, node: node, key: link.NewMaster(testPassword).NodeKey(node), session: uint64(time.Now().UnixNano())}
}

func (s *benchSource) publish(changes []bittorrent.PeerChange, kind link.Kind) {
	s.seq++
	msg, err := link.EncodeUp(s.key, &link.Message{Kind: kind, Node: s.node, Session: s.session, Seq: s.seq, Time: time.Now().UnixMilli(), Changes: changes})
	if err != nil {
		s.b.Fatal(err)
	}
	if err := s.rdb.Publish(context.Background(), s.channel, msg).Err(); err != nil {
		s.b.Fatal(err)
	}
}

func (s *benchSource) hello() { s.publish(nil, link.KindHello) }

// relayBench publishes b.N full messages from src and waits until the hub
// has written each change into targets nodes.
func relayBench(b *testing.B, hubURL string, src *benchSource, targets int) {
	const perMsg = link.MaxChanges
	src.hello()
	before := hubCounter(b, hubURL, "hub_relayed_updates_total")
	now := time.Now().UnixMilli()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		src.publish(relayChanges(i, perMsg, now, false), link.KindUpdates)
	}
	want := before + float64(targets*perMsg*b.N)
	for hubCounter(b, hubURL, "hub_relayed_updates_total") < want {
		if time.Since(start) > 2*time.Minute {
			resp, _ := http.Get(hubURL + "/metrics")
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			b.Fatalf("relayed %v of %v\n%s", hubCounter(b, hubURL, "hub_relayed_updates_total")-before, want-before, grepHub(string(body)))
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(perMsg*b.N)/el, "changes/s")
	b.ReportMetric(float64(targets*perMsg*b.N)/el, "writes/s")
}

// relayChanges is message i of a relay benchmark: perMsg peers seen at
// now, ten a torrent; spread gives the torrents every first byte (so
// every partition), else they all begin alike.
func relayChanges(i, perMsg int, now int64, spread bool) []bittorrent.PeerChange {
	changes := make([]bittorrent.PeerChange, perMsg)
	for j := range changes {
		n := i*perMsg + j
		var ih bittorrent.InfoHash
		copy(ih[:], fmt.Sprintf("relay-%06d", n/10))
		if spread {
			ih[0] = byte(n / 10)
		}
		changes[j] = bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: now,
			Peer: string([]byte{10, byte(n >> 16), byte(n >> 8), byte(n), 0x1a, 0xe1})}
	}
	return changes
}

// BenchmarkResync100k: node1 holds 100k peers (10k torrents of 10) that
// nobody else has; node2 joins. Reports the time until node2 has them all
// (target < 5 s).
func BenchmarkResync100k(b *testing.B) {
	for range b.N {
		b.StopTimer()
		c := newCluster(b, "node1")
		c.waitLinked("node1")
		rdb := c.redis.Client(b)
		relay, err := redisstore.NewRelayer(rdb, redisstore.Config{Prefix: "tl", PeerLifetime: 48 * time.Minute, CompletedTTL: 720 * time.Hour, Timeout: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		now := time.Now().UnixMilli()
		const torrents, per = 10000, 10
		var ts []redisstore.Target
		idx := rdb.Pipeline()
		for i := 0; i < torrents; i++ {
			var ih bittorrent.InfoHash
			copy(ih[:], fmt.Sprintf("resync-%08d", i))
			cs := make([]bittorrent.PeerChange, per)
			for j := range cs {
				n := i*per + j
				cs[j] = bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.ChangeOp(1 + j%2), Seen: now, Peer: string([]byte{10, byte(n >> 16), byte(n >> 8), byte(n), 0x1a, 0xe1})}
			}
			ts = append(ts, redisstore.Target{Node: "node1", Changes: cs})
			idx.ZAdd(ctx, redisstore.IndexKey("tl", "node1", ih), redis.Z{Score: float64(now), Member: string(ih[:])})
			if len(ts) == 500 {
				if _, err := relay.Apply(ctx, ts); err != nil {
					b.Fatal(err)
				}
				ts = ts[:0]
			}
		}
		if _, err := idx.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		resyncs := hubCounter(b, c.hub.url, "hub_resyncs_total")
		resyncSecs := hubCounter(b, c.hub.url, "hub_resync_seconds_sum")
		b.StartTimer()
		start := time.Now()
		c.startNode("node2", testPassword)
		var last bittorrent.InfoHash
		copy(last[:], fmt.Sprintf("resync-%08d", torrents-1))
		lastKey := "tl:{node2:" + last.String() + "}:m"
		for hubCounter(b, c.hub.url, "hub_resyncs_total") <= resyncs || rdb.ZCard(ctx, lastKey).Val() != per {
			if time.Since(start) > time.Minute {
				b.Fatalf("resync did not finish within a minute: resyncs %v -> %v, last swarm on node2 has %d",
					resyncs, hubCounter(b, c.hub.url, "hub_resyncs_total"), rdb.ZCard(ctx, lastKey).Val())
			}
			time.Sleep(5 * time.Millisecond)
		}
		// From node2's start (its key derivation, the hub's derivation of
		// its key, then the resync), and the hub's resync alone.
		b.ReportMetric(time.Since(start).Seconds(), "s/resync")
		b.ReportMetric(hubCounter(b, c.hub.url, "hub_resync_seconds_sum")-resyncSecs, "hub-resync-s")
		b.StopTimer()
		var total int64
		iter := rdb.Scan(ctx, 0, "tl:{node2:*}:*", 1000).Iterator() // test-side check only
		for iter.Next(ctx) {
			total += rdb.ZCard(ctx, iter.Val()).Val()
		}
		if total != torrents*per {
			b.Fatalf("node2 holds %d peers after resync, want %d", total, torrents*per)
		}
		b.StartTimer()
	}
}

func grepHub(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "hub_") && !strings.Contains(l, "bucket") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// hubKnows reports whether the hub's status lists node as live.
func hubKnows(t testing.TB, hubURL, node string) bool {
	t.Helper()
	resp, err := http.Get(hubURL + "/status")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st struct {
		Nodes map[string]struct{ Live bool }
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return st.Nodes[node].Live
}
