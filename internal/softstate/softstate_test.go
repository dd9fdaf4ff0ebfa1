package softstate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// The Redis store reads swarms for the soft state (New finds it out by a
// type assertion, which a changed signature would fail in silence).
var _ SwarmReader = (*redisstore.Store)(nil)

// countingStore is the real store, counting what reaches it.
type countingStore struct {
	*redisstore.Store
	mu                 sync.Mutex
	announces, scrapes int
	refreshes          int
}

func (c *countingStore) Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	c.mu.Lock()
	c.announces++
	c.mu.Unlock()
	return c.Store.Announce(ctx, req, numWant)
}

func (c *countingStore) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	c.mu.Lock()
	c.scrapes++
	c.mu.Unlock()
	return c.Store.Scrape(ctx, hashes)
}

func (c *countingStore) Refresh(ctx context.Context, cs []bittorrent.PeerChange) (int, int, error) {
	c.mu.Lock()
	c.refreshes += len(cs)
	c.mu.Unlock()
	return c.Store.Refresh(ctx, cs)
}

func (c *countingStore) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	c.mu.Lock()
	c.announces += len(b.Announces)
	c.scrapes += len(b.Scrapes)
	c.mu.Unlock()
	for i, r := range b.Announces {
		b.AnnounceResults[i], b.AnnounceErrs[i] = c.Store.Announce(ctx, r, b.NumWant[i])
	}
	for i, h := range b.Scrapes {
		b.ScrapeResults[i], b.ScrapeErrs[i] = c.Store.Scrape(ctx, h)
	}
}

func (c *countingStore) counts() (int, int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.announces, c.scrapes, c.refreshes
}

var nodeSeq int

func newSoft(t *testing.T, cfg Config) (*Store, *countingStore, *prometheus.Registry) {
	t.Helper()
	rdb := testkit.SharedRedis(t).Client(t)
	nodeSeq++
	st, err := redisstore.New(rdb, redisstore.Config{Prefix: "soft", NodeID: fmt.Sprintf("n%d-%d", os.Getpid(), nodeSeq),
		PeerLifetime: time.Hour, CompletedTTL: 2 * time.Hour, Timeout: 2 * time.Second, BindKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: st}
	reg := prometheus.NewRegistry()
	cfg.PeerLifetime, cfg.Sample = time.Hour, 50
	if cfg.CacheSwarms == 0 {
		cfg.CacheSwarms, cfg.WriteBehindQueue, cfg.PeerSlots = 1024, 1024, 1<<20 // a table this large: two test peers share a slot about once in 10,000 runs
	}
	s, err := New(cfg, cs, cs, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cs, reg
}

func peer(i int) bittorrent.Peer {
	return bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1000+i))}
}

func ann(ih bittorrent.InfoHash, i int, left uint64, ev bittorrent.Event) *bittorrent.AnnounceRequest {
	return &bittorrent.AnnounceRequest{InfoHash: ih, Peer: peer(i), Left: left, Event: ev, NumWant: 50, Key: fmt.Sprintf("k%d", i), Family: bittorrent.OnlyIPv4}
}

func mustAnnounce(t *testing.T, s *Store, r *bittorrent.AnnounceRequest) bittorrent.AnnounceResult {
	t.Helper()
	res, err := s.Announce(context.Background(), r, 50)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestReadCache: a refresh of a known peer is answered from the cache
// while it is fresh, and written behind; joins, completions, stops,
// changes of key and announces of unknown peers reach the store; after
// ReadCache the store answers again.
func TestReadCache(t *testing.T) {
	s, cs, reg := newSoft(t, Config{ReadCache: time.Second, WriteBehind: time.Second})
	clk := time.Now()
	s.now = func() time.Time { return clk }
	ih := bittorrent.InfoHash{1}
	for i := range 10 {
		mustAnnounce(t, s, ann(ih, i, uint64(i%2), bittorrent.Started))
	}
	a0, _, _ := cs.counts()
	// Regular re-announces of known peers: from the cache.
	for i := range 10 {
		res := mustAnnounce(t, s, ann(ih, i, uint64(i%2), bittorrent.None))
		if res.Seeders+res.Leechers < 9 {
			t.Fatalf("peer %d: counts %d+%d from the cache, want 10 in all", i, res.Seeders, res.Leechers)
		}
		for _, p := range res.Peers {
			if p.Addr == peer(i).Addr {
				t.Fatalf("peer %d was given itself", i)
			}
			if i%2 == 0 {
				// A seeder (left 0) is given leechers only.
				var j int
				fmt.Sscanf(p.Addr.Addr().String(), "10.0.0.%d", &j)
				if j%2 == 0 {
					t.Fatalf("seeder %d was given seeder %d", i, j)
				}
			}
		}
		if res.Change.Op == 0 || res.Change.Peer == "" {
			t.Fatalf("a cached answer carries no change for the link: %+v", res.Change)
		}
	}
	if a, _, _ := cs.counts(); a != a0 {
		t.Fatalf("%d refreshes reached the store; want 0 (cached)", a-a0)
	}
	if got := testutil.ToFloat64(s.m.announceHit); got != 10 {
		t.Fatalf("hits counted %v, want 10", got)
	}
	if n := s.behind.len(); n != 10 {
		t.Fatalf("%d refreshes queued, want 10", n)
	}
	// Not refreshes: a new peer, a completion, another key, a stop.
	mustAnnounce(t, s, ann(ih, 20, 1, bittorrent.None))
	mustAnnounce(t, s, ann(ih, 1, 0, bittorrent.Completed))
	other := ann(ih, 3, 1, bittorrent.None)
	other.Key = "another"
	if _, err := s.Announce(context.Background(), other, 50); err != bittorrent.ErrKeyMismatch {
		t.Fatalf("another key: %v, want the store's refusal", err)
	}
	mustAnnounce(t, s, ann(ih, 5, 1, bittorrent.Stopped))
	if a, _, _ := cs.counts(); a != a0+4 {
		t.Fatalf("%d of 4 changes reached the store", a-a0)
	}
	// The stopped peer is no longer handed out from the cache.
	for range 20 {
		for _, p := range mustAnnounce(t, s, ann(ih, 7, 1, bittorrent.None)).Peers {
			if p.Addr == peer(5).Addr {
				t.Fatal("the cache handed out a peer that stopped through this process")
			}
		}
	}
	// Once the cache is older than ReadCache, the swarm is read again (a
	// plain read, not the store's announce) and answers.
	clk = clk.Add(time.Second)
	a1, _, _ := cs.counts()
	r0 := testutil.ToFloat64(s.m.announceRead)
	mustAnnounce(t, s, ann(ih, 7, 1, bittorrent.None))
	if a, _, _ := cs.counts(); a != a1 || testutil.ToFloat64(s.m.announceRead) != r0+1 {
		t.Fatal("a refresh with the cache stale was not answered from a read of its swarm")
	}
	if reads := testutil.CollectAndCount(reg, "tracker_read_cache_total"); reads == 0 {
		t.Fatal("no read cache metrics")
	}
}

// TestWriteBehind: refreshes queued are written within the window, many
// in one call, and at stop; a full queue writes before the answer.
func TestWriteBehind(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Minute, WriteBehind: 20 * time.Millisecond, CacheSwarms: 1024, WriteBehindQueue: 5, PeerSlots: 1 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	ih := bittorrent.InfoHash{2}
	for i := range 10 {
		mustAnnounce(t, s, ann(ih, i, 1, bittorrent.Started))
	}
	a0, _, _ := cs.counts()
	for i := range 8 {
		mustAnnounce(t, s, ann(ih, i, 1, bittorrent.None))
	}
	// 5 queued, 3 written by the store as announces.
	if a, _, _ := cs.counts(); a != a0+3 || s.behind.len() != 5 {
		t.Fatalf("queue of 5: %d announces reached the store and %d are queued; want 3 and 5", a-a0, s.behind.len())
	}
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Second)
	for s.behind.len() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("refreshes not written within 2s of a 20 ms window")
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline = time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(s.m.written) != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("written %v refreshes, want 5", testutil.ToFloat64(s.m.written))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// At stop, what is queued is written, and later refreshes go to
	// the store.
	mustAnnounce(t, s, ann(ih, 9, 1, bittorrent.None))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.behind.len(); n != 0 {
		t.Fatalf("%d refreshes left unwritten at stop", n)
	}
	_, _, r := cs.counts()
	if r != 6 {
		t.Fatalf("%d refreshes written, want 6", r)
	}
	a1, _, _ := cs.counts()
	mustAnnounce(t, s, ann(ih, 8, 1, bittorrent.None))
	if a, _, _ := cs.counts(); a != a1+1 {
		t.Fatal("a refresh after the stop was queued, not written")
	}
}

// TestStoreAnnounceDropsQueuedRefresh: a seeder's refresh waiting in the
// queue is taken out when the same peer's next announce (now a leecher:
// a change of class, so not a refresh) goes to the store; written after
// it, the seeder's band would outrank the leecher with an older time.
func TestStoreAnnounceDropsQueuedRefresh(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Minute, WriteBehind: time.Second})
	ctx := context.Background()
	ih := bittorrent.InfoHash{7}
	mustAnnounce(t, s, ann(ih, 1, 0, bittorrent.Started)) // a seeder
	mustAnnounce(t, s, ann(ih, 1, 0, bittorrent.None))    // its refresh, queued
	if n := s.behind.len(); n != 1 {
		t.Fatalf("%d refreshes queued, want 1", n)
	}
	time.Sleep(5 * time.Millisecond)                   // the leecher's time is later
	mustAnnounce(t, s, ann(ih, 1, 5, bittorrent.None)) // now a leecher: to the store
	if n := s.behind.len(); n != 0 {
		t.Fatalf("%d refreshes still queued after the peer's announce reached the store, want 0", n)
	}
	// Whatever is written now leaves the peer a leecher.
	if _, _, err := cs.Refresh(ctx, s.behind.take(false)); err != nil {
		t.Fatal(err)
	}
	sc, err := cs.Scrape(ctx, []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Complete != 0 || sc[0].Incomplete != 1 {
		t.Fatalf("swarm after the flush: %d seeders, %d leechers; want 0 and 1", sc[0].Complete, sc[0].Incomplete)
	}
}

// TestOff: with TRACKER_READ_CACHE=0 every announce reaches the store.
func TestOff(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: 0, WriteBehind: 100 * time.Millisecond})
	ih := bittorrent.InfoHash{4}
	for range 3 {
		mustAnnounce(t, s, ann(ih, 1, 1, bittorrent.None))
	}
	if a, _, _ := cs.counts(); a != 3 {
		t.Fatalf("off: %d announces reached the store, want 3", a)
	}
}

// TestCacheBounded: the cache holds at most its swarms, whatever the
// info hashes.
func TestCacheBounded(t *testing.T) {
	c := newCache(128)
	now := time.Now()
	for i := range 10000 {
		ih := bittorrent.InfoHash{byte(i), byte(i >> 8), 7}
		c.markLarge(ih, now)
	}
	if n := c.swarms(); n > 128 {
		t.Fatalf("%d swarms cached, cap 128", n)
	}
}

// TestSeederViewDerived: a leecher's answer that holds the whole swarm,
// every leecher of which this process knows, answers seeders too (with
// leechers only); one peer it does not know stops that.
func TestSeederViewDerived(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Second, WriteBehind: time.Second})
	clk := time.Now()
	s.now = func() time.Time { return clk }
	ih := bittorrent.InfoHash{5}
	for i := range 10 {
		mustAnnounce(t, s, ann(ih, i, uint64(i%2), bittorrent.Started))
	}
	clk = clk.Add(time.Second)
	mustAnnounce(t, s, ann(ih, 1, 1, bittorrent.Started)) // a leecher's answer from the store
	a0, _, _ := cs.counts()
	r0 := testutil.ToFloat64(s.m.announceRead)
	res := mustAnnounce(t, s, ann(ih, 0, 0, bittorrent.None)) // a seeder: from the cache
	if a, _, _ := cs.counts(); a != a0 || testutil.ToFloat64(s.m.announceRead) != r0 {
		t.Fatal("a seeder's refresh read the store or its swarm after a leecher's answer held the whole swarm")
	}
	if len(res.Peers) != 5 || res.Seeders != 5 || res.Leechers != 5 {
		t.Fatalf("seeder's answer from the derived view: %d peers, %d seeders, %d leechers; want 5, 5, 5", len(res.Peers), res.Seeders, res.Leechers)
	}
	for _, p := range res.Peers {
		if (p.Addr.Port()-1000)%2 == 0 {
			t.Fatalf("a seeder was given seeder %v", p.Addr)
		}
	}
	// A leecher this process does not know (written by another process
	// into the same keyspace): nothing is derived.
	other, err := New(Config{ReadCache: 0}, cs, cs, s.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Announce(context.Background(), ann(ih, 99, 1, bittorrent.Started), 50); err != nil {
		t.Fatal(err)
	}
	clk = clk.Add(time.Second)
	mustAnnounce(t, s, ann(ih, 1, 1, bittorrent.Started))
	a1, _, _ := cs.counts()
	r1 := testutil.ToFloat64(s.m.announceRead)
	res = mustAnnounce(t, s, ann(ih, 0, 0, bittorrent.None))
	if testutil.ToFloat64(s.m.announceRead) != r1+1 {
		t.Fatal("a seeder's view was derived though a leecher of the swarm is not known here")
	}
	// The read that answered instead holds every class as Redis does.
	if a, _, _ := cs.counts(); a != a1 || res.Leechers != 6 || len(res.Peers) != 6 {
		t.Fatalf("the seeder's answer after a read: %d leechers, %d peers, %d store announces; want 6, 6, 0", res.Leechers, len(res.Peers), a-a1)
	}
}

// TestAdoptsPeersOfOtherProcesses: a regular re-announce of a peer that
// another process of the node wrote (a replica: same keyspace, its own
// soft state) is answered from a read of its swarm, and the peer is known
// here from then on (its next refresh a cache hit), when Redis holds it
// live in the announce's class with the announce's key; with another key,
// another class, or a peer Redis does not hold, the announce goes to the
// store, which refuses or writes it as before. Over HTTP (Announce) and
// in a front end's batch (Batch).
func TestAdoptsPeersOfOtherProcesses(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Second, WriteBehind: time.Second})
	replica, err := New(Config{ReadCache: time.Second, WriteBehind: time.Second, CacheSwarms: 1024, WriteBehindQueue: 1024, PeerSlots: 1 << 20,
		PeerLifetime: time.Hour, Sample: 50}, cs, cs, s.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ih := bittorrent.InfoHash{9}
	for i := range 8 {
		if _, err := replica.Announce(context.Background(), ann(ih, i, uint64(i%2), bittorrent.Started), 50); err != nil {
			t.Fatal(err)
		}
	}
	a0, _, _ := cs.counts()
	res := mustAnnounce(t, s, ann(ih, 1, 1, bittorrent.None))
	if a, _, _ := cs.counts(); a != a0 || res.Seeders != 4 || res.Leechers != 4 || len(res.Peers) != 7 {
		t.Fatalf("a replica's peer's refresh: %d store announces, %+v; want 0, and 4 seeders, 4 leechers, 7 peers from a read", a-a0, res)
	}
	if got := testutil.ToFloat64(s.m.adopted); got != 1 {
		t.Fatalf("adopted %v, want 1", got)
	}
	h0 := testutil.ToFloat64(s.m.announceHit)
	mustAnnounce(t, s, ann(ih, 1, 1, bittorrent.None))
	if testutil.ToFloat64(s.m.announceHit) != h0+1 {
		t.Fatal("an adopted peer's next refresh was not a cache hit")
	}
	// In a batch: peer 3, like peer 1.
	b := &bittorrent.StoreBatch{Announces: []*bittorrent.AnnounceRequest{ann(ih, 3, 1, bittorrent.None)}, NumWant: []int{50},
		AnnounceResults: make([]bittorrent.AnnounceResult, 1), AnnounceErrs: make([]error, 1)}
	s.Batch(context.Background(), b)
	if a, _, _ := cs.counts(); b.AnnounceErrs[0] != nil || a != a0 || testutil.ToFloat64(s.m.adopted) != 2 {
		t.Fatalf("a batch's refresh of a replica's peer: %v, %d store announces, adopted %v; want none, 0, 2", b.AnnounceErrs[0], a-a0, testutil.ToFloat64(s.m.adopted))
	}
	// Not adopted: another key (refused by the store), another class (a
	// leecher that reports left 0 without completing: written by the
	// store), a peer Redis does not hold (written by the store).
	other := ann(ih, 5, 1, bittorrent.None)
	other.Key = "another"
	if _, err := s.Announce(context.Background(), other, 50); err != bittorrent.ErrKeyMismatch {
		t.Fatalf("another key: %v, want the store's refusal", err)
	}
	mustAnnounce(t, s, ann(ih, 7, 0, bittorrent.None))
	mustAnnounce(t, s, ann(ih, 30, 1, bittorrent.None))
	if a, _, _ := cs.counts(); a != a0+3 || testutil.ToFloat64(s.m.adopted) != 2 {
		t.Fatalf("%d of 3 announces that are not refreshes of held peers reached the store; adopted %v, want 2", a-a0, testutil.ToFloat64(s.m.adopted))
	}
}

// TestBatchReadsSwarms: in a front end's batch, refreshes of swarms not
// cached are answered after a plain read of their swarms (no announce
// reaches the store), and a swarm too large to read whole sends its
// refreshes to the store.
func TestBatchReadsSwarms(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Second, WriteBehind: time.Second})
	clk := time.Now()
	s.now = func() time.Time { return clk }
	small, large := bittorrent.InfoHash{6}, bittorrent.InfoHash{7}
	for i := range 10 {
		mustAnnounce(t, s, ann(small, i, uint64(i%2), bittorrent.Started))
	}
	for i := range readMax + 1 {
		mustAnnounce(t, s, ann(large, i, 1, bittorrent.Started))
	}
	clk = clk.Add(time.Second)
	batch := func(reqs ...*bittorrent.AnnounceRequest) *bittorrent.StoreBatch {
		t.Helper()
		b := &bittorrent.StoreBatch{Announces: reqs, AnnounceResults: make([]bittorrent.AnnounceResult, len(reqs)), AnnounceErrs: make([]error, len(reqs))}
		for range reqs {
			b.NumWant = append(b.NumWant, 50)
		}
		s.Batch(context.Background(), b)
		for i, err := range b.AnnounceErrs {
			if err != nil {
				t.Fatalf("announce %d: %v", i, err)
			}
		}
		return b
	}
	a0, _, _ := cs.counts()
	b := batch(ann(small, 0, 0, bittorrent.None), ann(small, 1, 1, bittorrent.None), ann(small, 3, 1, bittorrent.None))
	if a, _, _ := cs.counts(); a != a0 {
		t.Fatalf("%d refreshes of a small swarm reached the store as announces; want 0 (read)", a-a0)
	}
	for i, r := range b.AnnounceResults {
		if r.Seeders != 5 || r.Leechers != 5 || r.Change.Peer == "" {
			t.Fatalf("answer %d: %+v, want 5 seeders, 5 leechers and the change", i, r)
		}
	}
	if n := len(b.AnnounceResults[0].Peers); n != 5 {
		t.Fatalf("the seeder got %d peers, want the 5 leechers", n)
	}
	if n := len(b.AnnounceResults[1].Peers); n != 9 {
		t.Fatalf("a leecher got %d peers, want the 9 others", n)
	}
	if got := testutil.ToFloat64(s.m.announceRead); got != 3 {
		t.Fatalf("read answers counted %v, want 3", got)
	}
	a1, _, _ := cs.counts()
	batch(ann(large, 1, 1, bittorrent.None))
	batch(ann(large, 2, 1, bittorrent.None))
	if a, _, _ := cs.counts(); a != a1+1 {
		t.Fatalf("%d announces of a large swarm reached the store; want 1 (then cached)", a-a1)
	}
}

// TestConcurrentBatchesShareReads: batches that read swarms at the same
// time all get their answers (the reads merged into rounds), none from
// the store's announces.
func TestConcurrentBatchesShareReads(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Second, WriteBehind: time.Second})
	clk := time.Now()
	s.now = func() time.Time { return clk }
	const swarms = 16
	for h := range swarms {
		for i := range 4 {
			mustAnnounce(t, s, ann(bittorrent.InfoHash{8, byte(h)}, i, uint64(i%2), bittorrent.Started))
		}
	}
	clk = clk.Add(time.Second)
	a0, _, _ := cs.counts()
	var wg sync.WaitGroup
	for h := range swarms {
		wg.Go(func() {
			req := ann(bittorrent.InfoHash{8, byte(h)}, 1, 1, bittorrent.None)
			b := &bittorrent.StoreBatch{Announces: []*bittorrent.AnnounceRequest{req}, NumWant: []int{50},
				AnnounceResults: make([]bittorrent.AnnounceResult, 1), AnnounceErrs: make([]error, 1)}
			s.Batch(context.Background(), b)
			if b.AnnounceErrs[0] != nil || b.AnnounceResults[0].Seeders != 2 || len(b.AnnounceResults[0].Peers) != 3 {
				t.Errorf("swarm %d: %+v %v", h, b.AnnounceResults[0], b.AnnounceErrs[0])
			}
		})
	}
	wg.Wait()
	if a, _, _ := cs.counts(); a != a0 {
		t.Fatalf("%d announces reached the store; want 0", a-a0)
	}
}

// countingReader counts the swarm reads (rounds) that reach the store.
type countingReader struct {
	SwarmReader
	n atomic.Int64
}

func (c *countingReader) ReadSwarms(ctx context.Context, h []bittorrent.InfoHash, max int, checks []bittorrent.KeyCheck) ([][]bittorrent.PeerChange, []bool, []bool, error) {
	c.n.Add(1)
	return c.SwarmReader.ReadSwarms(ctx, h, max, checks)
}

// TestQueueFullGoesToStore: with the write-behind queue full, a known
// peer's re-announce goes to the store at once, without reading its swarm
// first (what the read found could not be answered), and is counted full
// once.
func TestQueueFullGoesToStore(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Minute, WriteBehind: time.Second, CacheSwarms: 1024, WriteBehindQueue: 1, PeerSlots: 1 << 20})
	cr := &countingReader{SwarmReader: s.reader}
	s.reader = cr
	ih := bittorrent.InfoHash{0xee}
	for i := range 4 {
		mustAnnounce(t, s, ann(ih, i, 1, bittorrent.Started))
	}
	mustAnnounce(t, s, ann(ih, 0, 1, bittorrent.None)) // queued: the queue (1) is full now
	a0, _, _ := cs.counts()
	mustAnnounce(t, s, ann(ih, 1, 1, bittorrent.None))
	if a, _, _ := cs.counts(); a != a0+1 || cr.n.Load() != 0 || testutil.ToFloat64(s.m.full) != 1 {
		t.Fatalf("queue full: %d store announces, %d swarm reads, full counted %v; want 1, 0, 1", a-a0, cr.n.Load(), testutil.ToFloat64(s.m.full))
	}
}

// TestReadRounds: with a linger, the reads of concurrent announces share
// one round trip, and a leader whose request ends (an HTTP client that
// hung up) does not fail the others' reads; a lone client's rounds stop
// lingering after two that caught nothing.
func TestReadRounds(t *testing.T) {
	s, cs, _ := newSoft(t, Config{ReadCache: time.Second, WriteBehind: time.Second, ReadLinger: 200 * time.Millisecond})
	cr := &countingReader{SwarmReader: s.reader}
	s.reader = cr
	clk := time.Now()
	s.now = func() time.Time { return clk }
	for h := range 8 {
		for i := range 3 {
			mustAnnounce(t, s, ann(bittorrent.InfoHash{0xe0, byte(h)}, i, 1, bittorrent.Started))
		}
	}
	clk = clk.Add(2 * time.Second)
	a0, _, _ := cs.counts()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { // the leader, whose request ends while it lingers
		s.Announce(ctx, ann(bittorrent.InfoHash{0xe0, 0}, 1, 1, bittorrent.None), 50)
	})
	testkit.Eventually(t, time.Second, "a round led", func() bool {
		s.reads.mu.Lock()
		defer s.reads.mu.Unlock()
		return s.reads.cur != nil
	})
	for h := 1; h < 3; h++ {
		wg.Go(func() {
			if _, err := s.Announce(context.Background(), ann(bittorrent.InfoHash{0xe0, byte(h)}, 1, 1, bittorrent.None), 50); err != nil {
				t.Errorf("announce %d: %v", h, err)
			}
		})
	}
	testkit.Eventually(t, time.Second, "3 swarms in the round", func() bool {
		s.reads.mu.Lock()
		defer s.reads.mu.Unlock()
		return s.reads.cur != nil && len(s.reads.cur.hashes) == 3
	})
	cancel()
	wg.Wait()
	if a, _, _ := cs.counts(); cr.n.Load() != 1 || testutil.ToFloat64(s.m.announceRead) < 2 || a != a0 {
		t.Fatalf("%d rounds, %v read answers, %d store announces; want 1 round answering at least the 2 live requests, none to the store", cr.n.Load(), testutil.ToFloat64(s.m.announceRead), a-a0)
	}
	// A lone client: its first two rounds linger and catch nothing, the
	// next goes at once.
	for k := range 3 {
		clk = clk.Add(2 * time.Second)
		mustAnnounce(t, s, ann(bittorrent.InfoHash{0xe0, byte(3 + k)}, 1, 1, bittorrent.None))
	}
	s.reads.mu.Lock()
	backoff, skip := s.reads.lb.Step, s.reads.lb.Skip
	s.reads.mu.Unlock()
	if backoff != 1 || skip != 0 {
		t.Fatalf("after 3 lone rounds: backoff %d, skip %d; want 1 (two lingers caught nothing) and 0 (the third went at once)", backoff, skip)
	}
}
