package redisstore

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/embedded"
	"github.com/tracklink/tracklink/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// backend is a Redis the conformance suite runs against.
type backend struct {
	name   string
	client func(t *testing.T) redis.UniversalClient
}

var nodeSeq atomic.Int64

// suite is one run of the conformance suite: a Redis, and whether members
// carry peer ids.
type suite struct {
	rdb       redis.UniversalClient
	peerIDs   bool
	pipelined bool // announce through a running Pipeliner
	batched   bool // announce through AnnounceBatch, a batch of one (pipelined: the Pipeliner's)
}

// testStore is a store as the suite drives it: directly or pipelined.
type testStore struct {
	*Store
	announce func(context.Context, *bittorrent.AnnounceRequest, int) (bittorrent.AnnounceResult, error)
}

// p returns test peer i as the store gives it back.
func (su suite) p(i int, v6 bool) bittorrent.Peer {
	p := peer(i, v6)
	if !su.peerIDs {
		p.ID = bittorrent.PeerID{}
	}
	return p
}

// newStore returns a store in a keyspace of its own, with a clock the test
// moves by hand.
func newStore(t *testing.T, su suite, lifetime time.Duration) (*testStore, *fakeClock) {
	t.Helper()
	rdb := su.rdb
	s, err := New(rdb, Config{
		PeerIDs:      su.peerIDs,
		Prefix:       "test",
		NodeID:       fmt.Sprintf("n%d", nodeSeq.Add(1)),
		PeerLifetime: lifetime,
		CompletedTTL: 10 * lifetime,
		Timeout:      2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Now()}
	s.now = clk.Now
	ts := &testStore{Store: s, announce: s.Announce}
	type batcher interface {
		AnnounceBatch(context.Context, []*bittorrent.AnnounceRequest, []int, []bittorrent.AnnounceResult, []error)
	}
	var by batcher = s
	if su.pipelined {
		p := NewPipeliner(s, 2, 16, 64)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { p.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		ts.announce, by = p.Announce, p
	}
	if su.batched {
		ts.announce = func(ctx context.Context, r *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
			out, errs := make([]bittorrent.AnnounceResult, 1), make([]error, 1)
			by.AnnounceBatch(ctx, []*bittorrent.AnnounceRequest{r}, []int{numWant}, out, errs)
			return out[0], errs[0]
		}
	}
	return ts, clk
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func backends() []backend {
	return []backend{
		{"redis", func(t *testing.T) redis.UniversalClient { return testkit.SharedRedis(t).Client(t) }},
		// Three masters and three replicas: swarms spread over shards,
		// and replicas answer nothing (every call goes to a master).
		{"cluster", func(t *testing.T) redis.UniversalClient { return testkit.SharedRedisCluster(t).Client(t) }},
		{"embedded", func(t *testing.T) redis.UniversalClient {
			srv, err := embedded.Open("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { srv.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done; srv.Close() })
			c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { c.Close() })
			return c
		}},
	}
}

func peer(i int, v6 bool) bittorrent.Peer {
	var p bittorrent.Peer
	copy(p.ID[:], fmt.Sprintf("-TL0001-%012d", i))
	if v6 {
		p.Addr = netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)), uint16(10000+i))
	} else {
		p.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(10000+i))
	}
	return p
}

func req(ih bittorrent.InfoHash, p bittorrent.Peer, left uint64, ev bittorrent.Event) *bittorrent.AnnounceRequest {
	return &bittorrent.AnnounceRequest{InfoHash: ih, Peer: p, Left: left, Event: ev, NumWant: -1}
}

func hash(s string) bittorrent.InfoHash {
	var h bittorrent.InfoHash
	copy(h[:], s)
	return h
}

func announce(t *testing.T, s *testStore, r *bittorrent.AnnounceRequest, numWant int) bittorrent.AnnounceResult {
	t.Helper()
	a, err := s.announce(context.Background(), r, numWant)
	if err != nil {
		t.Fatalf("announce: %v", err)
	}
	return a
}

func peerSet(ps []bittorrent.Peer) map[bittorrent.Peer]bool {
	m := make(map[bittorrent.Peer]bool, len(ps))
	for _, p := range ps {
		m[p] = true
	}
	return m
}

func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		f    func(*testing.T, suite)
	}{
		{"counts and samples", testCountsAndSamples},
		{"seeders not sent to seeders", testSeederGetsLeechers},
		{"stop and complete", testStopComplete},
		{"expiry by score", testExpiryByScore},
		{"swarm key TTL", testKeyTTL},
		{"address families", testFamilies},
		{"one family only", testOneFamily},
		{"large swarm sample", testLargeSample},
		{"numwant", testNumWant},
		{"keyspaces apart", testKeyspaces},
		{"exact counts under concurrency", testConcurrentCounts},
		{"functions flushed", testFunctionsFlushed},
		{"peer identity", testIdentity},
		{"the change it wrote", testChange},
		{"partial seeds (BEP 21)", testPartialSeeds},
		{"key binding", testKeyBinding},
		{"buckets", testBuckets},
		{"packs follow their buckets", testPacks},
	}
	for _, b := range backends() {
		for _, mode := range []suite{{}, {peerIDs: true}, {pipelined: true}, {batched: true}, {pipelined: true, batched: true}} {
			t.Run(fmt.Sprintf("%s/peerids=%v/pipelined=%v/batched=%v", b.name, mode.peerIDs, mode.pipelined, mode.batched), func(t *testing.T) {
				for _, tc := range tests {
					t.Run(tc.name, func(t *testing.T) {
						su := mode
						su.rdb = b.client(t)
						tc.f(t, su)
					})
				}
			})
		}
	}
}

// testIdentity: with ids, a peer is (address, port, id); without, a new id
// on the same address and port is the same peer.
func testIdentity(t *testing.T, su suite) {
	s, _ := newStore(t, su, time.Minute)
	ih := hash("identity")
	p := peer(1, false)
	announce(t, s, req(ih, p, 10, bittorrent.Started), 0)
	p.ID[0] ^= 0xff
	a := announce(t, s, req(ih, p, 10, bittorrent.Started), 0)
	want := 1
	if su.peerIDs {
		want = 2
	}
	if a.Leechers != want {
		t.Fatalf("same address and port with a new id: %d leechers, want %d", a.Leechers, want)
	}
}

func testCountsAndSamples(t *testing.T, su suite) {
	s, _ := newStore(t, su, time.Minute)
	ih := hash("counts")
	a := announce(t, s, req(ih, peer(1, false), 100, bittorrent.Started), 50)
	if a.Seeders != 0 || a.Leechers != 1 || len(a.Peers) != 0 {
		t.Fatalf("first leecher: got %d seeders, %d leechers, %d peers; want 0, 1, 0", a.Seeders, a.Leechers, len(a.Peers))
	}
	a = announce(t, s, req(ih, peer(2, false), 100, bittorrent.Started), 50)
	if a.Leechers != 2 || len(a.Peers) != 1 || a.Peers[0] != su.p(1, false) {
		t.Fatalf("second leecher: got %d leechers, peers %v; want 2 and peer 1", a.Leechers, a.Peers)
	}
	// Re-announcing does not add the peer twice.
	a = announce(t, s, req(ih, peer(1, false), 50, bittorrent.None), 50)
	if a.Leechers != 2 || len(a.Peers) != 1 || a.Peers[0] != su.p(2, false) {
		t.Fatalf("re-announce: got %d leechers, peers %v; want 2 and peer 2", a.Leechers, a.Peers)
	}
	sc, err := s.Scrape(context.Background(), []bittorrent.InfoHash{ih, hash("nothing")})
	if err != nil {
		t.Fatal(err)
	}
	want := []bittorrent.Scrape{{InfoHash: ih, Incomplete: 2, Downloaders: 2}, {InfoHash: hash("nothing")}}
	for i := range want {
		if sc[i] != want[i] {
			t.Errorf("scrape[%d] = %+v, want %+v", i, sc[i], want[i])
		}
	}

	// In a swarm larger than asked for, a leecher's answer is a sample of
	// the whole swarm: seeders and leechers in proportion (30 and 90
	// here), neither kind left out, never the leecher itself.
	ih = hash("mix")
	for i := range 120 {
		left := uint64(10)
		if i < 30 {
			left = 0
		}
		announce(t, s, req(ih, peer(1000+i, false), left, bittorrent.Started), 0)
	}
	seeders := 0
	for range 10 {
		a := announce(t, s, req(ih, peer(1100, false), 10, bittorrent.None), 20)
		if len(a.Peers) != 20 || a.Seeders != 30 || a.Leechers != 90 {
			t.Fatalf("leecher in a swarm of 120: %d peers, %d seeders, %d leechers", len(a.Peers), a.Seeders, a.Leechers)
		}
		for _, p := range a.Peers {
			if p == su.p(1100, false) {
				t.Fatal("a leecher was given itself")
			}
			if n := int(p.Addr.Port()) - 10000; n >= 1000 && n < 1030 {
				seeders++
			}
		}
	}
	if seeders < 30 || seeders > 70 {
		t.Fatalf("%d seeders in 200 answered peers from a swarm of 30 seeders and 90 leechers, want about 50", seeders)
	}
}

// testPartialSeeds: a peer announcing paused with bytes left is a partial
// seed: incomplete but no downloader, given downloaders only, given to
// leechers; it moves between classes like any peer, and expires by score.
func testPartialSeeds(t *testing.T, su suite) {
	s, clk := newStore(t, su, time.Minute)
	ctx := context.Background()
	ih := hash("partial")
	scrape := func() bittorrent.Scrape {
		t.Helper()
		sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
		if err != nil {
			t.Fatal(err)
		}
		return sc[0]
	}
	announce(t, s, req(ih, peer(1, false), 0, bittorrent.Started), 0)  // seeder
	announce(t, s, req(ih, peer(2, false), 10, bittorrent.Started), 0) // leecher
	a := announce(t, s, req(ih, peer(3, false), 10, bittorrent.Paused), 50)
	if a.Change.Op != bittorrent.OpPartial || a.Seeders != 1 || a.Leechers != 2 {
		t.Fatalf("partial seed: op %v, %d/%d; want a partial seed, 1/2", a.Change.Op, a.Seeders, a.Leechers)
	}
	if len(a.Peers) != 1 || a.Peers[0] != su.p(2, false) {
		t.Fatalf("partial seed got %v, want the downloader only", a.Peers)
	}
	if got, want := scrape(), (bittorrent.Scrape{InfoHash: ih, Complete: 1, Incomplete: 2, Downloaders: 1}); got != want {
		t.Fatalf("scrape %+v, want %+v", got, want)
	}
	a = announce(t, s, req(ih, peer(2, false), 10, bittorrent.None), 50)
	if got := peerSet(a.Peers); len(a.Peers) != 2 || !got[su.p(1, false)] || !got[su.p(3, false)] {
		t.Fatalf("leecher got %v, want the seeder and the partial seed", a.Peers)
	}
	a = announce(t, s, req(ih, peer(1, false), 0, bittorrent.None), 50)
	if len(a.Peers) != 1 || a.Peers[0] != su.p(2, false) {
		t.Fatalf("seeder got %v, want the downloader only", a.Peers)
	}
	// Re-announcing paused keeps one entry; wanting more makes it a
	// leecher again, and having it all a seeder (paused or not).
	announce(t, s, req(ih, peer(3, false), 10, bittorrent.Paused), 0)
	if got := scrape(); got.Incomplete != 2 || got.Downloaders != 1 {
		t.Fatalf("paused twice: %+v", got)
	}
	announce(t, s, req(ih, peer(3, false), 10, bittorrent.None), 0)
	if got := scrape(); got.Incomplete != 2 || got.Downloaders != 2 {
		t.Fatalf("partial seed back to leecher: %+v", got)
	}
	announce(t, s, req(ih, peer(3, false), 10, bittorrent.Paused), 0)
	a = announce(t, s, req(ih, peer(3, false), 0, bittorrent.Paused), 0)
	if a.Change.Op != bittorrent.OpSeeder || a.Seeders != 2 || a.Leechers != 1 {
		t.Fatalf("paused with nothing left: op %v, %d/%d; want a seeder, 2/1", a.Change.Op, a.Seeders, a.Leechers)
	}
	announce(t, s, req(ih, peer(4, false), 10, bittorrent.Paused), 0)
	a = announce(t, s, req(ih, peer(4, false), 10, bittorrent.Stopped), 0)
	if a.Seeders != 2 || a.Leechers != 1 {
		t.Fatalf("partial seed stopped: %d/%d, want 2/1", a.Seeders, a.Leechers)
	}
	// A partial seed alone starts a swarm, and expires like any peer.
	lone := hash("partial alone")
	if a = announce(t, s, req(lone, peer(5, false), 10, bittorrent.Paused), 0); a.Leechers != 1 {
		t.Fatalf("lone partial seed: %+v", a)
	}
	clk.Add(time.Minute + time.Second)
	a = announce(t, s, req(lone, peer(6, false), 10, bittorrent.None), 50)
	if a.Leechers != 1 || len(a.Peers) != 0 {
		t.Fatalf("after the lifetime: %d leechers, peers %v; want the new one only", a.Leechers, a.Peers)
	}
}

// testKeyBinding: a live peer is bound to its key in the store, so every
// replica of the node refuses a change of it sent with another key or
// none; the binding ends with the peer's stop or expiry, and bindings of
// expired peers do not pile up.
func testKeyBinding(t *testing.T, su suite) {
	s, clk := newStore(t, su, time.Minute)
	s.bind = true
	replica := *s.Store // another process of the same node: nothing shared but Redis
	ctx := context.Background()
	ih := hash("keys")
	keyed := func(i int, left uint64, ev bittorrent.Event, key string) *bittorrent.AnnounceRequest {
		r := req(ih, peer(i, false), left, ev)
		r.Key = key
		return r
	}
	announce(t, s, keyed(1, 10, bittorrent.Started, "AbCd1234"), 0)
	announce(t, s, keyed(2, 10, bittorrent.Started, ""), 0)
	// The same key in another case is the same key (HTTP hex vs UDP).
	announce(t, s, keyed(1, 10, bittorrent.None, "abcd1234"), 0)
	for _, r := range []*bittorrent.AnnounceRequest{
		keyed(1, 10, bittorrent.Stopped, "ffff0000"),
		keyed(1, 10, bittorrent.Stopped, ""),
		keyed(1, 0, bittorrent.Completed, "ffff0000"),
		keyed(1, 10, bittorrent.Paused, ""),
	} {
		for name, announce := range map[string]func(context.Context, *bittorrent.AnnounceRequest, int) (bittorrent.AnnounceResult, error){"this process": s.announce, "a replica": replica.Announce} {
			if _, err := announce(ctx, r, 0); err != bittorrent.ErrKeyMismatch {
				t.Fatalf("%s, %v with key %q: err %v, want %v", name, r.Event, r.Key, err, bittorrent.ErrKeyMismatch)
			}
		}
	}
	// Refused changes changed nothing; a peer without a key is not bound.
	a := announce(t, s, keyed(2, 10, bittorrent.None, "12345678"), 0)
	if a.Seeders != 0 || a.Leechers != 2 {
		t.Fatalf("after refused changes: %d/%d, want 0/2", a.Seeders, a.Leechers)
	}
	// Its own stop ends the binding; the address and port are free again.
	a = announce(t, s, keyed(1, 10, bittorrent.Stopped, "ABCD1234"), 0)
	if a.Leechers != 1 {
		t.Fatalf("own stop: %d leechers, want 1", a.Leechers)
	}
	announce(t, s, keyed(1, 10, bittorrent.Started, "99999999"), 0)
	// So does its expiry: another key may take over a silent peer's place.
	clk.Add(time.Minute + time.Second)
	announce(t, s, keyed(1, 10, bittorrent.Started, "77777777"), 0)
	if _, err := s.announce(ctx, keyed(1, 10, bittorrent.None, "99999999"), 0); err != bittorrent.ErrKeyMismatch {
		t.Fatalf("the expired peer's key still counts: %v", err)
	}
	// Bindings of peers that expired are dropped as new ones come: 100
	// keyed peers expire, 300 others come, and the hash holds little more
	// than the 300 (about 6 stale ones are expected to be left).
	churn := hash("key churn")
	for i := range 100 {
		r := keyed(i, 10, bittorrent.Started, fmt.Sprintf("a%07d", i))
		r.InfoHash = churn
		announce(t, s, r, 0)
	}
	clk.Add(time.Minute + time.Second)
	for i := 100; i < 400; i++ {
		r := keyed(i, 10, bittorrent.Started, fmt.Sprintf("b%07d", i))
		r.InfoHash = churn
		announce(t, s, r, 0)
	}
	k := s.ks.Swarm(churn)
	if n := su.rdb.HLen(ctx, k.Keys).Val(); n < 300 || n > 340 {
		t.Fatalf("%d bindings for 300 live keyed peers, want 300 to 340", n)
	}
	if ttl := su.rdb.TTL(ctx, k.Keys).Val(); ttl <= 0 || ttl > time.Duration(s.keyTTL())*time.Second {
		t.Fatalf("bindings' TTL %s, want the swarm's key TTL (%ds: the peer lifetime + 1s + an eighth)", ttl, s.keyTTL())
	}
}

func testSeederGetsLeechers(t *testing.T, su suite) {
	s, _ := newStore(t, su, time.Minute)
	ih := hash("seeders")
	for i := 0; i < 5; i++ {
		announce(t, s, req(ih, peer(i, false), 0, bittorrent.Started), 0)
	}
	for i := 5; i < 8; i++ {
		announce(t, s, req(ih, peer(i, false), 10, bittorrent.Started), 0)
	}
	a := announce(t, s, req(ih, peer(0, false), 0, bittorrent.None), 50)
	if a.Seeders != 5 || a.Leechers != 3 {
		t.Fatalf("counts %d/%d, want 5/3", a.Seeders, a.Leechers)
	}
	got := peerSet(a.Peers)
	if len(a.Peers) != 3 || !got[su.p(5, false)] || !got[su.p(6, false)] || !got[su.p(7, false)] {
		t.Fatalf("seeder got %v, want exactly the 3 leechers", a.Peers)
	}
	a = announce(t, s, req(ih, peer(5, false), 10, bittorrent.None), 50)
	if len(a.Peers) != 7 || peerSet(a.Peers)[su.p(5, false)] {
		t.Fatalf("leecher got %d peers %v, want the 7 others", len(a.Peers), a.Peers)
	}
}

func testStopComplete(t *testing.T, su suite) {
	rdb := su.rdb
	s, _ := newStore(t, su, time.Minute)
	ctx := context.Background()
	ih := hash("stopcomplete")
	announce(t, s, req(ih, peer(1, false), 10, bittorrent.Started), 0)
	announce(t, s, req(ih, peer(2, false), 10, bittorrent.Started), 0)
	a := announce(t, s, req(ih, peer(1, false), 0, bittorrent.Completed), 0)
	if !a.Change.Completion || a.Seeders != 1 || a.Leechers != 1 {
		t.Fatalf("completed: %+v, want a counted completion and 1/1", a)
	}
	// A repeated completion from a seeder is not counted again.
	a = announce(t, s, req(ih, peer(1, false), 0, bittorrent.Completed), 0)
	if a.Change.Completion {
		t.Fatal("second completion of the same peer was counted")
	}
	// Completed with bytes left is not a completion.
	a = announce(t, s, req(ih, peer(2, false), 5, bittorrent.Completed), 0)
	if a.Change.Completion || a.Leechers != 1 {
		t.Fatalf("completed with left>0: %+v", a)
	}
	a = announce(t, s, req(ih, peer(2, false), 5, bittorrent.Stopped), 50)
	if a.Seeders != 1 || a.Leechers != 0 || len(a.Peers) != 0 {
		t.Fatalf("stopped: %+v, want 1/0 and no peers", a)
	}
	// Stopping a peer that is not there leaves counts alone, never negative.
	a = announce(t, s, req(ih, peer(3, false), 5, bittorrent.Stopped), 0)
	if a.Seeders != 1 || a.Leechers != 0 {
		t.Fatalf("stopping an absent peer: %+v", a)
	}
	a = announce(t, s, req(ih, peer(1, false), 0, bittorrent.Stopped), 0)
	if a.Seeders != 0 || a.Leechers != 0 {
		t.Fatalf("last stop: %+v", a)
	}
	sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Downloaded != 1 || sc[0].Complete != 0 || sc[0].Incomplete != 0 {
		t.Fatalf("scrape after stops: %+v, want downloaded 1 and nobody", sc[0])
	}
	// The empty swarm's sorted set is gone; the counter stays.
	k := s.ks.Swarm(ih)
	if n := rdb.Exists(ctx, k.Peers).Val(); n != 0 {
		t.Fatal("the peers' sorted set is left for an empty swarm")
	}
	// The stops of the two live peers are remembered (tombstones, score =
	// the stop's time, living no longer than a peer would); the stop of
	// absent peer 3 wrote nothing.
	tomb := rdb.ZRangeWithScores(ctx, k.Stopped, 0, -1).Val()
	if len(tomb) != 2 {
		t.Fatalf("tombstones %v, want peers 1 and 2", tomb)
	}
	for _, z := range tomb {
		m := z.Member.(string)
		if m != string(peer(1, false).AppendBinary(nil, su.peerIDs)) && m != string(peer(2, false).AppendBinary(nil, su.peerIDs)) {
			t.Fatalf("tombstone of %x, which was not live", m)
		}
		if int64(z.Score) != s.now().UnixMilli() {
			t.Fatalf("tombstone at %v, want the stop's time %d", z.Score, s.now().UnixMilli())
		}
	}
	if ttl := rdb.TTL(ctx, k.Stopped).Val(); ttl <= 0 || ttl > time.Duration(s.keyTTL())*time.Second {
		t.Fatalf("tombstones TTL %v, want at most the swarm's key TTL (%ds: the peer lifetime + 1s + an eighth)", ttl, s.keyTTL())
	}
}

func testExpiryByScore(t *testing.T, su suite) {
	rdb := su.rdb
	s, clk := newStore(t, su, 30*time.Second)
	ctx := context.Background()
	ih := hash("expiry")
	announce(t, s, req(ih, peer(1, false), 0, bittorrent.Started), 0)
	announce(t, s, req(ih, peer(2, false), 10, bittorrent.Started), 0)
	clk.Add(20 * time.Second)
	announce(t, s, req(ih, peer(3, false), 10, bittorrent.Started), 0)
	clk.Add(11 * time.Second) // peers 1 and 2 are 31s old now; 3 is 11s old
	sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Complete != 0 || sc[0].Incomplete != 1 {
		t.Fatalf("scrape counted expired peers: %+v", sc[0])
	}
	// A re-announce counts and answers the live only. A small swarm is
	// read whole, and the read removes the expired members it finds.
	k := s.ks.Swarm(ih)
	stored := func() int64 { return rdb.ZCard(ctx, k.Peers).Val() }
	a := announce(t, s, req(ih, peer(3, false), 10, bittorrent.None), 50)
	if a.Seeders != 0 || a.Leechers != 1 || len(a.Peers) != 0 || stored() != 1 {
		t.Fatalf("re-announce among expired peers: %+v, %d stored (want 1: the expired removed)", a, stored())
	}
	a = announce(t, s, req(ih, peer(4, false), 10, bittorrent.Started), 50)
	if a.Seeders != 0 || a.Leechers != 2 || len(a.Peers) != 1 || a.Peers[0] != su.p(3, false) {
		t.Fatalf("announce returned expired peers: %+v", a)
	}

	// A large swarm (more members than are read whole): a re-announce
	// counts the live only and trims nothing (the common case stays
	// cheap); a random draw among expired members answers live ones only,
	// and a peer that joins trims the expired.
	ih = hash("expiry-draw")
	k = s.ks.Swarm(ih)
	for i := range 6 {
		announce(t, s, req(ih, peer(200+i, false), 10, bittorrent.Started), 0)
	}
	old := time.Now().Add(-time.Hour).UnixMilli()
	expire := func() {
		for i := range 40 {
			rdb.ZAdd(ctx, k.Peers, redis.Z{Score: PeerScore(bittorrent.OpLeecher, old), Member: string(peer(100+i, false).AppendBinary(nil, su.peerIDs))})
		}
	}
	expire()
	a = announce(t, s, req(ih, peer(200, false), 10, bittorrent.None), 0)
	if a.Leechers != 6 || stored() != 46 {
		t.Fatalf("re-announce in a large swarm among expired peers: %+v, %d stored (want 46: no trim)", a, stored())
	}
	for range 20 {
		expire()
		a := announce(t, s, req(ih, peer(200, false), 10, bittorrent.None), 2)
		if a.Leechers != 6 || len(a.Peers) > 2 {
			t.Fatalf("draw among expired: %+v", a)
		}
		for _, p := range a.Peers {
			if port := p.Addr.Port(); port >= 10100 && port < 10140 {
				t.Fatalf("draw answered an expired peer: %+v", a)
			}
		}
	}
	expire()
	announce(t, s, req(ih, peer(206, false), 10, bittorrent.Started), 0)
	if n := stored(); n != 7 {
		t.Fatalf("%d members stored after a join, want 7: the expired trimmed", n)
	}
}

func testKeyTTL(t *testing.T, su suite) {
	rdb := su.rdb
	s, _ := newStore(t, su, time.Second)
	ctx := context.Background()
	ih := hash("ttl")
	announce(t, s, req(ih, peer(1, false), 0, bittorrent.Completed), 0)
	announce(t, s, req(ih, peer(2, false), 10, bittorrent.Started), 0)
	k := s.ks.Swarm(ih)
	for _, key := range []string{k.Peers, k.Completed} {
		ttl := rdb.TTL(ctx, key).Val()
		if ttl <= 0 || ttl > 10*time.Second {
			t.Fatalf("TTL of %s = %s, want within (0, 10s]", key, ttl)
		}
	}
	deadline := time.Now().Add(6 * time.Second)
	for rdb.Exists(ctx, k.Peers).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle swarm's keys did not expire within 6s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rdb.Exists(ctx, k.Completed).Val() != 1 {
		t.Fatal("completed counter expired with the peers; it must outlive them")
	}
}

func testFamilies(t *testing.T, su suite) {
	s, _ := newStore(t, su, time.Minute)
	ih := hash("families")
	announce(t, s, req(ih, peer(1, true), 0, bittorrent.Started), 0)
	announce(t, s, req(ih, peer(2, false), 0, bittorrent.Started), 0)
	a := announce(t, s, req(ih, peer(3, true), 10, bittorrent.Started), 50)
	got := peerSet(a.Peers)
	if len(a.Peers) != 2 || !got[su.p(1, true)] || !got[su.p(2, false)] {
		t.Fatalf("got %v, want the v6 and the v4 peer intact", a.Peers)
	}
	if !peer(1, true).Is6() || peer(2, false).Is6() {
		t.Fatal("family of test peers is wrong")
	}
}

// testChange: the store describes each change it wrote, for the link to
// publish as it is: the stored member, the op, the score and whether a
// completion was counted.
func testChange(t *testing.T, su suite) {
	s, clk := newStore(t, su, time.Minute)
	ih := hash("change")
	p := peer(7, false)
	member := string(p.AppendBinary(nil, su.peerIDs))
	for _, tc := range []struct {
		left       uint64
		ev         bittorrent.Event
		op         bittorrent.ChangeOp
		completion bool
	}{
		{10, bittorrent.Started, bittorrent.OpLeecher, false},
		{0, bittorrent.Completed, bittorrent.OpSeeder, true},
		{0, bittorrent.Completed, bittorrent.OpSeeder, false}, // counted once
		{0, bittorrent.Stopped, bittorrent.OpStopped, false},
	} {
		clk.Add(time.Second)
		c := announce(t, s, req(ih, p, tc.left, tc.ev), 10).Change
		want := bittorrent.PeerChange{InfoHash: ih, Op: tc.op, Completion: tc.completion, Seen: clk.Now().UnixMilli(), Peer: member}
		if c != want {
			t.Fatalf("%v: change %+v, want %+v", tc.ev, c, want)
		}
		if tc.op == bittorrent.OpStopped {
			continue
		}
		score := s.rdb.ZScore(context.Background(), s.ks.Swarm(ih).Peers, member).Val()
		if op, seen := PeerClass(score); op != tc.op || seen != c.Seen {
			t.Fatalf("%v: stored a %v seen at %d, change says a %v at %d", tc.ev, op, seen, tc.op, c.Seen)
		}
	}
}

// testOneFamily: an answer restricted to one family (UDP) carries only that
// family, all of it in a small swarm, and still numwant of it in a large
// swarm where that family is half of the peers.
func testOneFamily(t *testing.T, su suite) {
	s, clk := newStore(t, su, time.Minute)
	small := hash("one family small")
	for i := 0; i < 10; i++ {
		announce(t, s, req(small, peer(i, i%2 == 0), uint64(i%3), bittorrent.Started), 0)
	}
	for i, fam := range []bittorrent.Family{bittorrent.OnlyIPv4, bittorrent.OnlyIPv6} {
		r := req(small, peer(100, fam == bittorrent.OnlyIPv6), 1, bittorrent.None)
		r.Family = fam
		a := announce(t, s, r, 50)
		if len(a.Peers) != 5 {
			t.Fatalf("family %d: got %d peers, want the 5 of that family", fam, len(a.Peers))
		}
		for _, p := range a.Peers {
			if !fam.Carries(p) {
				t.Fatalf("family %d: got %v", fam, p.Addr)
			}
		}
		if a.Seeders+a.Leechers != 11+i {
			t.Fatalf("counts %d+%d, want every peer of both families", a.Seeders, a.Leechers)
		}
	}
	// A large swarm is sampled in windows of peers by last seen: here the
	// families take turns, one announce a millisecond, in one set (100)
	// and in buckets (400). An IPv4 answer first reads as many as a
	// two-family one, and more when that read held IPv6 peers; a swarm of
	// IPv4 peers only answers from the first read.
	for _, size := range []int{100, 400} {
		mixed, v4 := hash(fmt.Sprint("one family mixed ", size)), hash(fmt.Sprint("one family v4 ", size))
		for i := 0; i < size; i++ {
			clk.Add(time.Millisecond)
			announce(t, s, req(mixed, peer(i, i%2 == 0), 1, bittorrent.Started), 0)
			announce(t, s, req(v4, peer(i, false), 1, bittorrent.Started), 0)
		}
		for _, c := range []struct {
			ih  bittorrent.InfoHash
			fam bittorrent.Family
		}{{mixed, bittorrent.OnlyIPv6}, {mixed, bittorrent.OnlyIPv4}, {v4, bittorrent.OnlyIPv4}} {
			r := req(c.ih, peer(1000, c.fam == bittorrent.OnlyIPv6), 1, bittorrent.None)
			r.Family = c.fam
			for round := 0; round < 5; round++ {
				a := announce(t, s, r, 30)
				if len(a.Peers) != 30 {
					t.Fatalf("swarm of %d, family %d: got %d peers, want 30", size, c.fam, len(a.Peers))
				}
				for _, p := range a.Peers {
					if !c.fam.Carries(p) || p == r.Peer {
						t.Fatalf("swarm of %d, family %d: gave %v", size, c.fam, p.Addr)
					}
				}
			}
		}
	}
}

// testLargeSample: a swarm too large to answer whole is sampled in windows
// by last seen from random ranks, a class's share in proportion: a
// leecher gets every class and never an expired peer, a seeder
// downloaders only, and over many answers every live peer is given.
func testLargeSample(t *testing.T, su suite) {
	s, clk := newStore(t, su, time.Minute)
	ih := hash("large sample")
	// 60 leechers, 30 seeders, 10 partial seeds, one announce a millisecond.
	for i := range 100 {
		clk.Add(time.Millisecond)
		left, ev := uint64(10), bittorrent.Started
		switch {
		case i >= 90:
			ev = bittorrent.Paused
		case i >= 60:
			left = 0
		}
		announce(t, s, req(ih, peer(i, false), left, ev), 0)
	}
	// Expired members of every class, as left by peers that went away
	// since the last join.
	old := clk.Now().Add(-time.Hour).UnixMilli()
	k := s.ks.Swarm(ih)
	for i, op := range []bittorrent.ChangeOp{bittorrent.OpLeecher, bittorrent.OpLeecher, bittorrent.OpSeeder, bittorrent.OpPartial} {
		if err := su.rdb.ZAdd(context.Background(), k.Peers, redis.Z{Score: PeerScore(op, old+int64(i)), Member: string(peer(500+i, false).AppendBinary(nil, su.peerIDs))}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	class := func(p bittorrent.Peer) int { return int(p.Addr.Port()) - 10000 }
	given := map[int]bool{}
	kinds := [3]int{}
	for range 60 {
		a := announce(t, s, req(ih, peer(0, false), 10, bittorrent.None), 20)
		if a.Seeders != 30 || a.Leechers != 70 || len(a.Peers) != 20 {
			t.Fatalf("leecher: %d seeders, %d leechers, %d peers; want 30, 70, 20", a.Seeders, a.Leechers, len(a.Peers))
		}
		for _, p := range a.Peers {
			n := class(p)
			switch {
			case n == 0 || n >= 100:
				t.Fatalf("leecher given peer %d (itself or expired)", n)
			case n >= 90:
				kinds[2]++
			case n >= 60:
				kinds[1]++
			default:
				kinds[0]++
			}
			given[n] = true
		}
	}
	// Shares of 21 drawn: 12 or 13 leechers, 6 seeders, 2 partial seeds.
	if kinds[1] < 6*60-60 || kinds[2] < 60 || kinds[0] < 11*60 {
		t.Fatalf("classes given to a leecher in 60 answers: %v, want about 12, 6, 2 an answer", kinds)
	}
	if len(given) != 99 {
		t.Fatalf("60 answers of 20 gave %d distinct peers of the 99 others, want all", len(given))
	}
	clear(given)
	for range 60 {
		a := announce(t, s, req(ih, peer(60, false), 0, bittorrent.None), 20)
		if len(a.Peers) != 20 {
			t.Fatalf("seeder got %d peers, want 20", len(a.Peers))
		}
		for _, p := range a.Peers {
			if n := class(p); n >= 60 {
				t.Fatalf("seeder given peer %d, not a live downloader", n)
			}
			given[class(p)] = true
		}
	}
	if len(given) != 60 {
		t.Fatalf("60 answers of 20 gave a seeder %d distinct leechers of 60, want all", len(given))
	}
}

func testNumWant(t *testing.T, su suite) {
	s, _ := newStore(t, su, time.Minute)
	ih := hash("numwant")
	for i := 0; i < 300; i++ {
		announce(t, s, req(ih, peer(i, false), uint64(i%2), bittorrent.Started), 0)
	}
	seen := map[bittorrent.Peer]bool{}
	for round := 0; round < 20; round++ {
		a := announce(t, s, req(ih, peer(1, false), 1, bittorrent.None), 50)
		if len(a.Peers) != 50 {
			t.Fatalf("got %d peers, want 50", len(a.Peers))
		}
		set := peerSet(a.Peers)
		if len(set) != 50 {
			t.Fatalf("sample has duplicates: %d distinct of 50", len(set))
		}
		if set[su.p(1, false)] {
			t.Fatal("peer got itself")
		}
		for p := range set {
			seen[p] = true
		}
	}
	// 20 random samples of 50 out of 299 cover far more than one sample.
	if len(seen) < 150 {
		t.Fatalf("samples are not random: %d distinct peers over 20 samples", len(seen))
	}
	if a := announce(t, s, req(ih, peer(1, false), 1, bittorrent.None), 0); len(a.Peers) != 0 {
		t.Fatalf("numwant 0 returned %d peers", len(a.Peers))
	}
}

func testKeyspaces(t *testing.T, su suite) {
	a, _ := newStore(t, su, time.Minute)
	b, _ := newStore(t, su, time.Minute)
	ih := hash("shared torrent")
	announce(t, a, req(ih, peer(1, false), 10, bittorrent.Started), 0)
	got := announce(t, b, req(ih, peer(2, false), 10, bittorrent.Started), 50)
	if got.Leechers != 1 || len(got.Peers) != 0 {
		t.Fatalf("node b sees node a's peers without a link: %+v", got)
	}
}

func testConcurrentCounts(t *testing.T, su suite) {
	s, _ := newStore(t, su, time.Minute)
	ctx := context.Background()
	ih := hash("concurrent")
	const workers, peersEach, rounds = 8, 10, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				for i := 0; i < peersEach; i++ {
					p := peer(w*peersEach+i, i%2 == 0)
					// Every peer: start as leecher, complete, and the odd
					// ones stop at the end of the last round.
					for _, step := range []struct {
						left uint64
						ev   bittorrent.Event
					}{{10, bittorrent.Started}, {0, bittorrent.Completed}} {
						a, err := s.announce(ctx, req(ih, p, step.left, step.ev), 5)
						if err != nil {
							errs <- err
							return
						}
						if a.Seeders < 0 || a.Leechers < 0 || a.Seeders+a.Leechers > workers*peersEach {
							errs <- fmt.Errorf("impossible counts %d/%d", a.Seeders, a.Leechers)
							return
						}
					}
					if r == rounds-1 && i%2 == 1 {
						if _, err := s.announce(ctx, req(ih, p, 0, bittorrent.Stopped), 0); err != nil {
							errs <- err
							return
						}
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	// Every peer went leecher -> seeder each round, so each round counted
	// one completion per peer: rounds*workers*peersEach. Half stopped.
	want := bittorrent.Scrape{InfoHash: ih, Complete: workers * peersEach / 2, Incomplete: 0, Downloaded: rounds * workers * peersEach}
	if sc[0] != want {
		t.Fatalf("scrape = %+v, want %+v", sc[0], want)
	}
}

// testFunctionsFlushed: a Redis that lost the library (a restart without
// its data, FUNCTION FLUSH) costs a store that may load it one more round
// trip, counted.
func testFunctionsFlushed(t *testing.T, su suite) {
	s, _ := newStore(t, su, time.Minute)
	ctx := context.Background()
	if _, err := s.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	flushFunctions(t, su.rdb)
	announce(t, s, req(hash("noscript"), peer(1, false), 1, bittorrent.Started), 0)
	if s.FunctionsMissing() == 0 {
		t.Fatal("the calls that found the library missing were not counted")
	}
}

// flushFunctions deletes every function of rdb (every master).
func flushFunctions(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	err := masters(context.Background(), rdb, func(ctx context.Context, c *redis.Client) error { return c.FunctionFlush(ctx).Err() })
	if err != nil {
		t.Fatal(err)
	}
}

// TestAnnounceBatch: many announces in one pipeline, each its own script:
// the answers are in order and see the writes before them; a batch after
// FUNCTION FLUSH recovers by itself (credentials that may load it).
func TestAnnounceBatch(t *testing.T) {
	t.Run("redis", func(t *testing.T) { testAnnounceBatch(t, testkit.SharedRedis(t).Client(t)) })
	t.Run("cluster", func(t *testing.T) {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{testkit.StartOneNodeCluster(t).Addr()}})
		t.Cleanup(func() { c.Close() })
		testAnnounceBatch(t, c)
	})
}

func testAnnounceBatch(t *testing.T, rdb redis.UniversalClient) {
	s, _ := newStore(t, suite{rdb: rdb}, time.Minute)
	ih := hash("batch")
	const n = 20
	reqs := make([]*bittorrent.AnnounceRequest, n+1)
	want := make([]int, n+1)
	for i := range n {
		reqs[i], want[i] = req(ih, peer(i, i%3 == 0), uint64(i%2), bittorrent.Started), 50
	}
	// Another swarm in the same batch (another Cluster slot).
	reqs[n], want[n] = req(hash("batch, another swarm"), peer(1, false), 1, bittorrent.Started), 50
	out, errs := make([]bittorrent.AnnounceResult, n+1), make([]error, n+1)
	for round := 0; round < 2; round++ {
		if round == 1 {
			flushFunctions(t, s.rdb)
		}
		s.AnnounceBatch(context.Background(), reqs, want, out, errs)
		for i := range reqs {
			if errs[i] != nil {
				t.Fatalf("round %d, announce %d: %v", round, i, errs[i])
			}
		}
		// In the first round announce i sees the i peers written before
		// it, in the same call.
		if round == 0 {
			for i := range n {
				if got := out[i].Seeders + out[i].Leechers; got != i+1 {
					t.Fatalf("announce %d of the first round counts %d peers, want %d", i, got, i+1)
				}
			}
		}
		if a := out[n]; a.Leechers != 1 || a.Seeders != 0 || len(a.Peers) != 0 {
			t.Fatalf("the other swarm: %+v", a)
		}
	}
	// In the second round every announce sees all n peers.
	if got := out[n-1]; got.Seeders+got.Leechers != n || len(got.Peers) != n-1 {
		t.Fatalf("last answer: %d+%d peers, %d returned", got.Seeders, got.Leechers, len(got.Peers))
	}
}

func TestRedisDownFailsFast(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond, MaxRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	s, _ := newStore(t, suite{rdb: rdb}, time.Minute)
	s.timeout = 500 * time.Millisecond
	ih := hash("down")
	announce(t, s, req(ih, peer(1, false), 1, bittorrent.Started), 0)
	srv.Stop()
	start := time.Now()
	if _, err := s.Announce(context.Background(), req(ih, peer(2, false), 1, bittorrent.Started), 5); err == nil {
		t.Fatal("announce succeeded with Redis down")
	}
	// Bounded by the store's timeout: generous margin, this is not a speed test.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("announce with Redis down took %s", d)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The same client recovers by itself (a fresh Redis: no scripts loaded).
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Announce(context.Background(), req(ih, peer(2, false), 1, bittorrent.Started), 5)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNewSwarmCap: at its cap a store starts no new swarm (the announce
// is refused, nothing is written), while announces, stops and completions
// in live swarms go on; the budget refills with time; expired swarms are
// new again.
func TestNewSwarmCap(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			rdb := b.client(t)
			s, clk := newStore(t, suite{rdb: rdb}, time.Minute)
			s.swarms = &swarmBudget{perNano: 1.0 / 1e9, burst: 2, tokens: 2} // 1 a second, 2 at once
			ctx := context.Background()
			for i := 0; i < 2; i++ {
				if _, err := s.Announce(ctx, req(hash(fmt.Sprint("cap", i)), peer(1, false), 1, bittorrent.Started), 10); err != nil {
					t.Fatalf("new swarm %d within the burst: %v", i, err)
				}
			}
			third := hash("cap third")
			if _, err := s.Announce(ctx, req(third, peer(1, false), 1, bittorrent.Started), 10); err != bittorrent.ErrNoNewSwarms {
				t.Fatalf("third new swarm: %v, want ErrNoNewSwarms", err)
			}
			if n, _ := rdb.Exists(ctx, s.ks.Swarm(third).Peers).Result(); n != 0 {
				t.Fatal("a refused new swarm was written")
			}
			// Live swarms go on: a second peer, a completion, a stop.
			if r, err := s.Announce(ctx, req(hash("cap0"), peer(2, false), 1, bittorrent.Started), 10); err != nil || r.Leechers != 2 {
				t.Fatalf("join a live swarm at the cap: %+v %v", r, err)
			}
			if r, err := s.Announce(ctx, req(hash("cap0"), peer(2, false), 0, bittorrent.Completed), 10); err != nil || !r.Change.Completion {
				t.Fatalf("completion at the cap: %+v %v", r, err)
			}
			if _, err := s.Announce(ctx, req(third, peer(1, false), 1, bittorrent.Stopped), 10); err != nil {
				t.Fatalf("a stop is never refused: %v", err)
			}
			// The batch path refuses the same way.
			out, errs := make([]bittorrent.AnnounceResult, 2), make([]error, 2)
			s.AnnounceBatch(ctx, []*bittorrent.AnnounceRequest{req(third, peer(1, false), 1, bittorrent.Started), req(hash("cap1"), peer(3, false), 1, bittorrent.Started)}, []int{10, 10}, out, errs)
			if errs[0] != bittorrent.ErrNoNewSwarms || errs[1] != nil {
				t.Fatalf("batch at the cap: %v", errs)
			}
			// A second later there is one token again.
			clk.Add(time.Second)
			if _, err := s.Announce(ctx, req(third, peer(1, false), 1, bittorrent.Started), 10); err != nil {
				t.Fatalf("new swarm after the refill: %v", err)
			}
			if _, err := s.Announce(ctx, req(hash("cap fourth"), peer(1, false), 1, bittorrent.Started), 10); err != bittorrent.ErrNoNewSwarms {
				t.Fatalf("fourth new swarm: %v", err)
			}
		})
	}
}

// TestClusterBatchSurvivesAHungMaster: on a Redis Cluster, a batch of
// announces over every master while one master hangs (SIGSTOP): the
// announces of its slots fail after the timeout, the others succeed.
func TestClusterBatchSurvivesAHungMaster(t *testing.T) {
	rc := testkit.StartRedisCluster(t, 3, 0, 30*time.Second)
	var addrs []string
	for _, m := range rc.Masters {
		addrs = append(addrs, m.Addr())
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	s, err := New(rdb, Config{Prefix: "tl", NodeID: "hung", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 24
	reqs := make([]*bittorrent.AnnounceRequest, n)
	want := make([]int, n)
	onHung := make([]bool, n)
	hung, _ := rdb.MasterForKey(ctx, s.ks.Swarm(hash("hung-0")).Peers)
	for i := range reqs {
		reqs[i] = req(hash(fmt.Sprintf("hung-%d", i)), peer(i, false), 1, bittorrent.Started)
		m, err := rdb.MasterForKey(ctx, s.ks.Swarm(reqs[i].InfoHash).Peers)
		if err != nil {
			t.Fatal(err)
		}
		onHung[i] = m.Options().Addr == hung.Options().Addr
	}
	var paused *testkit.RedisServer
	for _, m := range rc.Masters {
		if m.Addr() == hung.Options().Addr {
			paused = m
		}
	}
	if err := paused.Pause(); err != nil {
		t.Fatal(err)
	}
	defer paused.Resume()
	out, errs := make([]bittorrent.AnnounceResult, n), make([]error, n)
	s.AnnounceBatch(ctx, reqs, want, out, errs)
	others := 0
	for i := range reqs {
		switch {
		case onHung[i] && errs[i] == nil:
			t.Errorf("announce %d, on the hung master, succeeded", i)
		case !onHung[i] && errs[i] != nil:
			t.Errorf("announce %d, on a live master, failed: %v", i, errs[i])
		case !onHung[i]:
			others++
		}
	}
	if others == 0 || others == n {
		t.Fatalf("test arithmetic: %d of %d announces on live masters", others, n)
	}
}

// TestPipelinerSharesCalls: batches queued by several callers while the
// worker is busy go to Redis together, each caller gets its own answers,
// and batches still queued when the pipeline stops are answered with an
// error, not left waiting.
func TestPipelinerSharesCalls(t *testing.T) {
	s, rdb := storeOnOwnRedis(t)
	p := NewPipeliner(s, 1, 1024, 64)
	const callers, per = 8, 4
	batch := func(c int) ([]bittorrent.AnnounceResult, []error) {
		reqs, want := make([]*bittorrent.AnnounceRequest, per), make([]int, per)
		for i := range reqs {
			reqs[i], want[i] = req(benchHash(c), peer(c*per+i, false), 1, bittorrent.Started), 50
		}
		out, errs := make([]bittorrent.AnnounceResult, per), make([]error, per)
		p.AnnounceBatch(context.Background(), reqs, want, out, errs)
		return out, errs
	}
	// Queue every batch before the worker runs: it takes them in one go.
	var wg sync.WaitGroup
	outs, errss := make([][]bittorrent.AnnounceResult, callers), make([][]error, callers)
	for c := range callers {
		wg.Go(func() { outs[c], errss[c] = batch(c) })
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(p.calls) < callers {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d batches queued", len(p.calls), callers)
		}
		time.Sleep(time.Millisecond)
	}
	before := scriptCallCount(t, rdb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	wg.Wait()
	if n := scriptCallCount(t, rdb) - before; n != 1 {
		t.Fatalf("%d batches took %d script calls, want 1", callers, n)
	}
	for c := range callers {
		for i := range per {
			if errss[c][i] != nil {
				t.Fatalf("caller %d announce %d: %v", c, i, errss[c][i])
			}
			// Each swarm is one caller's: the i-th peer finds i peers.
			if got := outs[c][i]; got.Leechers != i+1 || len(got.Peers) != i {
				t.Fatalf("caller %d announce %d: %d leechers, %d peers", c, i, got.Leechers, len(got.Peers))
			}
		}
	}
	cancel()
	<-done
	// Stopped: what is queued now is answered with an error.
	var left sync.WaitGroup
	left.Go(func() {
		_, errs := batch(callers)
		for _, err := range errs {
			if err == nil {
				t.Errorf("after the stop: %v", err)
			}
		}
	})
	for deadline := time.Now().Add(5 * time.Second); len(p.calls) < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the batch after the stop was not queued")
		}
	}
	go p.Run(ctx) // ctx is done: it answers the queue and returns
	left.Wait()
}

// scriptCallCount is how many function calls Redis has run (no
// line in INFO: none yet).
func scriptCallCount(t testing.TB, rdb *redis.Client) int64 {
	t.Helper()
	n, _ := infoInt(t, rdb, "commandstats", "cmdstat_fcall:calls=")
	return n
}

// infoInt reads the number that follows prefix on a line of an INFO
// section (up to a comma, if any), and whether the line is there.
func infoInt(t testing.TB, rdb redis.UniversalClient, section, prefix string) (int64, bool) {
	t.Helper()
	s, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			v, _, _ = strings.Cut(v, ",")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("INFO %s: %q: %v", section, line, err)
			}
			return n, true
		}
	}
	return 0, false
}
