package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestIndexerRefreshesOncePerInterval: an entry is due again only
// IndexRefresh after it was written, per node; a forgotten one is due at
// once; a full queue forgets what it could not take.
func TestIndexerRefreshesOncePerInterval(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	x := NewIndexer(rdb, "idxtest", 1, 0)
	ih := hash("indexed")
	at := func(ms int64) bittorrent.PeerChange {
		return bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: ms}
	}
	if due := x.Due("a", at(1000), at(1001)); len(due) != 1 || len(due[IndexKey("idxtest", "a", ih)]) != 1 {
		t.Fatalf("first changes: %v", due)
	}
	if due := x.Due("a", at(1000+IndexRefresh.Milliseconds()-1)); due != nil {
		t.Fatalf("due again within the refresh: %v", due)
	}
	if due := x.Due("b", at(2000)); len(due) != 1 {
		t.Fatal("another node's entry is not due")
	}
	due := x.Due("a", at(1001+IndexRefresh.Milliseconds()))
	if len(due) != 1 {
		t.Fatal("not due after the refresh")
	}
	x.Forget(due)
	if x.Due("a", at(1002+IndexRefresh.Milliseconds())) == nil {
		t.Fatal("a forgotten entry is not due")
	}
	// The queue holds one batch: the second is forgotten and due again.
	if !x.Queue("c", at(1)) || x.Queue("d", at(1)) {
		t.Fatal("queue of one: want the first taken and the second refused")
	}
	if x.Due("d", at(2)) == nil {
		t.Fatal("an entry the queue refused is not due again")
	}
	done := make(chan struct{})
	close(done)
	x.Run(context.Background(), done, func(err error) { t.Errorf("index write: %v", err) })
	if n := rdb.ZCard(context.Background(), IndexKey("idxtest", "c", ih)).Val(); n != 1 {
		t.Fatalf("Run wrote %d entries of c's index, want 1", n)
	}
}

// TestRelayIndexesTargets: a relayed swarm is in the target node's swarm
// index, so the node's resync reads and admin page counts see it.
func TestRelayIndexesTargets(t *testing.T) {
	_, r, node := newRelayPair(t, "relayidx")
	ctx := context.Background()
	ih := hash("relayed-indexed")
	p := string(peer(1, false).AppendBinary(nil, false))
	if _, err := r.Apply(ctx, []Target{{Node: "target", Changes: []bittorrent.PeerChange{{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: time.Now().UnixMilli(), Peer: p}}}}); err != nil {
		t.Fatal(err)
	}
	ihs, _, err := r.Indexed(ctx, "target", 0, nil)
	if err != nil || len(ihs) != 1 || ihs[0] != ih {
		t.Fatalf("target's index %v, %v", ihs, err)
	}
	if h, err := node.Held(ctx, 10, nil); err != nil || h != (Held{Swarms: 1, Seeders: 1}) {
		t.Fatalf("held %+v, %v", h, err)
	}
}

// BenchmarkIndexerDue: what a node without the link pays per announce to
// keep its swarm index, for a torrent whose entry is not due (the common
// case: an entry is written once a minute).
func BenchmarkIndexerDue(b *testing.B) {
	x := NewIndexer(nil, "tl", 1, 0)
	c := bittorrent.PeerChange{InfoHash: hash("bench"), Op: bittorrent.OpLeecher, Seen: time.Now().UnixMilli()}
	x.Due("node", c)
	b.ReportAllocs()
	for b.Loop() {
		if x.Due("node", c) != nil {
			b.Fatal("due again")
		}
	}
}

// TestIndexerBounded: past its bound an indexer forgets what it wrote
// (each entry is then written once more), never grows beyond it.
func TestIndexerBounded(t *testing.T) {
	x := NewIndexer(nil, "idxtest", 1, 0)
	x.max = 100
	for i := range 1000 {
		if x.Due("n", bittorrent.PeerChange{InfoHash: bittorrent.InfoHash{byte(i), byte(i >> 8)}, Seen: 1}) == nil {
			t.Fatalf("entry %d not due", i)
		}
		if len(x.written) > x.max {
			t.Fatalf("%d entries remembered, bound %d", len(x.written), x.max)
		}
	}
}

// TestIndexWritesTrim: a node without the link (no hub, so no resync ever
// trims) keeps its swarm index bounded by the torrents active within the
// peer lifetime: writing entries trims the parts written into. Each
// generation of torrents is seen once, a lifetime and a refresh after the
// one before; after each, the index holds that generation only.
func TestIndexWritesTrim(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	const prefix, node, perPart = "idxtrim", "solo", 3
	lifetime := time.Minute
	x := NewIndexer(rdb, prefix, 4*IndexParts*perPart, lifetime)
	clock := time.Now()
	x.now = func() time.Time { return clock }
	sink := IndexSink{X: x, Node: node}
	keys := IndexKeys(prefix, node)
	indexed := func() int64 {
		var n int64
		for _, k := range keys {
			n += rdb.ZCard(ctx, k).Val()
		}
		return n
	}
	for g := range 5 {
		clock = clock.Add(lifetime + indexSlack + IndexRefresh)
		for part := range IndexParts {
			for j := range perPart {
				ih := bittorrent.InfoHash{byte(part), byte(g), byte(j)}
				sink.LocalChange(bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: clock.UnixMilli()})
			}
		}
		done := make(chan struct{})
		close(done)
		x.Run(ctx, done, func(err error) { t.Errorf("index write: %v", err) })
		if n := indexed(); n != IndexParts*perPart {
			t.Fatalf("generation %d: %d entries indexed, want the %d live ones", g, n, IndexParts*perPart)
		}
	}
}

// TestIndexTrimOncePerRefresh: a part is trimmed at most once per
// IndexRefresh (not on every write), below the cutoff the readers use, and
// never by a time ahead of the indexer's clock (a relayed change seen
// ahead, within the link's skew).
func TestIndexTrimOncePerRefresh(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	const prefix, node = "idxtrimonce", "n"
	x := NewIndexer(rdb, prefix, 1, time.Minute)
	keep := (time.Minute + indexSlack).Milliseconds()
	clock := time.Now()
	x.now = func() time.Time { return clock }
	key := IndexKeys(prefix, node)[7]
	write := func(b byte, seen int64) {
		t.Helper()
		ih := bittorrent.InfoHash{7, b}
		due := x.Due(node, bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: seen})
		pipe := rdb.Pipeline()
		adds := x.Add(ctx, pipe, due)
		pipe.Exec(ctx)
		if err := x.Failed(due, adds); err != nil {
			t.Fatal(err)
		}
	}
	plant := func(member string, score int64) {
		t.Helper()
		if err := rdb.ZAdd(ctx, key, redis.Z{Score: float64(score), Member: member}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	has := func(member string) bool { return rdb.ZScore(ctx, key, member).Err() == nil }

	now := clock.UnixMilli()
	plant("expired", now-keep)
	plant("live", now-keep+1)
	write(1, now)
	if has("expired") || !has("live") {
		t.Fatalf("first write: expired kept %v, live kept %v; want it trimmed at the readers' cutoff", has("expired"), has("live"))
	}
	// Within the refresh: no second trim.
	clock = clock.Add(IndexRefresh - time.Second)
	plant("expired2", clock.UnixMilli()-keep-1)
	write(2, clock.UnixMilli())
	if !has("expired2") {
		t.Fatal("trimmed twice within one refresh")
	}
	// A refresh later, trimmed again; a change seen an hour ahead of the
	// clock trims by the clock.
	clock = clock.Add(time.Second)
	now = clock.UnixMilli()
	plant("live2", now-keep+1)
	write(3, now+time.Hour.Milliseconds())
	if has("expired2") || !has("live2") {
		t.Fatalf("a refresh later: expired kept %v, live kept %v", has("expired2"), has("live2"))
	}
}

// TestRelayTrimsIndex: the hub's relayer trims the parts of a node's index
// it writes into, as a node's own writers do.
func TestRelayTrimsIndex(t *testing.T) {
	rdb, r, _ := newRelayPair(t, "relaytrim")
	ctx := context.Background()
	ih := hash("relayed-trims")
	old := ih
	old[19]++
	key := IndexKey("relaytrim", "target", ih)
	now := time.Now().UnixMilli()
	rdb.ZAdd(ctx, key, redis.Z{Score: float64(now - 3*time.Hour.Milliseconds()), Member: string(old[:])})
	p := string(peer(1, false).AppendBinary(nil, false))
	if _, err := r.Apply(ctx, []Target{{Node: "target", Changes: []bittorrent.PeerChange{{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: now, Peer: p}}}}); err != nil {
		t.Fatal(err)
	}
	if got := rdb.ZRange(ctx, key, 0, -1).Val(); len(got) != 1 || got[0] != string(ih[:]) {
		t.Fatalf("index part after a relay: %q, want only the relayed swarm", got)
	}
}

// TestIndexedReadsOnlyThePartsAsked: a hub that relays some partitions
// reads only their parts of a node's index (part i: first byte i).
func TestIndexedReadsOnlyThePartsAsked(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	r, err := NewRelayer(rdb, Config{Prefix: "partsread", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	now := float64(time.Now().UnixMilli())
	for b := range 256 {
		ih := bittorrent.InfoHash{byte(b), 1}
		rdb.ZAdd(ctx, IndexKey("partsread", "n", ih), redis.Z{Score: now, Member: string(ih[:])})
	}
	got, _, err := r.Indexed(ctx, "n", 0, func(part int) bool { return part%16 == 3 })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 16 {
		t.Fatalf("%d info hashes read, want the 16 of partition 3 of 16", len(got))
	}
	for _, ih := range got {
		if ih[0]%16 != 3 {
			t.Fatalf("read %x, of partition %d", ih[:1], ih[0]%16)
		}
	}
}
