package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// newRelayPair returns a relayer and the store of node "target" under prefix,
// on the shared redis-server, with a one-hour peer lifetime.
func newRelayPair(t *testing.T, prefix string) (redis.UniversalClient, *Relayer, *Store) {
	t.Helper()
	rdb := testkit.SharedRedis(t).Client(t)
	cfg := Config{Prefix: prefix, NodeID: "target", PeerLifetime: time.Hour, CompletedTTL: 2 * time.Hour, Timeout: time.Second}
	r, err := NewRelayer(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	node, err := New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rdb, r, node
}

// TestRelayIdempotent: applying relayed changes twice, out of order, or
// after a stop never double-counts, never resurrects, never regresses.
func TestRelayIdempotent(t *testing.T) {
	rdb, r, node := newRelayPair(t, "relaytest")
	ctx := context.Background()
	ih := hash("relayed")
	p := string(peer(1, false).AppendBinary(nil, false))
	now := time.Now().UnixMilli()
	ch := func(op bittorrent.ChangeOp, completion bool, seen int64) bittorrent.PeerChange {
		return bittorrent.PeerChange{InfoHash: ih, Op: op, Completion: completion, Seen: seen, Peer: p}
	}
	apply := func(cs ...bittorrent.PeerChange) int {
		t.Helper()
		n, err := r.Apply(ctx, []Target{{Node: "target", Changes: cs}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	state := func() bittorrent.Scrape {
		t.Helper()
		sc, err := node.Scrape(ctx, []bittorrent.InfoHash{ih})
		if err != nil {
			t.Fatal(err)
		}
		return sc[0]
	}
	started, completed, stopped := ch(bittorrent.OpLeecher, false, now-3000), ch(bittorrent.OpSeeder, true, now-2000), ch(bittorrent.OpStopped, false, now-1000)

	apply(started, completed)
	if s := state(); s.Complete != 1 || s.Incomplete != 0 || s.Downloaded != 1 {
		t.Fatalf("after start+complete: %+v", s)
	}
	// A second hub relays the same, in order and out of order.
	if n := apply(started, completed); n != 0 {
		t.Fatalf("duplicates applied: %d", n)
	}
	apply(completed)
	apply(started)
	if s := state(); s.Complete != 1 || s.Incomplete != 0 || s.Downloaded != 1 {
		t.Fatalf("after duplicates: %+v", s)
	}
	apply(stopped)
	if s := state(); s.Complete != 0 || s.Incomplete != 0 {
		t.Fatalf("after stop: %+v", s)
	}
	// Late copies of what came before the stop do not bring the peer back
	// nor count its completion again.
	if n := apply(started, completed); n != 0 {
		t.Fatalf("late copies applied: %d", n)
	}
	if s := state(); s.Complete != 0 || s.Downloaded != 1 {
		t.Fatalf("after late copies: %+v", s)
	}
	// A newer announce after the stop is a new session of the peer.
	apply(ch(bittorrent.OpLeecher, false, now))
	if s := state(); s.Incomplete != 1 {
		t.Fatalf("after re-announce: %+v", s)
	}
	// Expired changes are not stored at all.
	other := bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: now - 2*time.Hour.Milliseconds(), Peer: string(peer(2, false).AppendBinary(nil, false))}
	if n := apply(other); n != 0 {
		t.Fatal("expired change applied")
	}
	// The relayed peer keeps its origin time, and its set lives until it expires.
	k := node.ks.Swarm(ih)
	if op, seen := PeerClass(rdb.ZScore(ctx, k.Peers, p).Val()); op != bittorrent.OpLeecher || seen != now {
		t.Fatalf("a %v seen at %d, want a leecher seen at the origin's %d", op, seen, now)
	}
	if ttl := rdb.TTL(ctx, k.Peers).Val(); ttl < 59*time.Minute || ttl > 61*time.Minute {
		t.Fatalf("TTL %s, want about the peer lifetime", ttl)
	}
}

// TestRelaySameMillisecond: a start and a completion in the same
// millisecond still make a seeder, and duplicates of either change nothing.
func TestRelaySameMillisecond(t *testing.T) {
	_, r, node := newRelayPair(t, "relaytest2")
	ctx := context.Background()
	ih := hash("same ms")
	p := string(peer(1, false).AppendBinary(nil, false))
	now := time.Now().UnixMilli()
	l := bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: now, Peer: p}
	c := bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpSeeder, Completion: true, Seen: now, Peer: p}
	for _, batch := range [][]bittorrent.PeerChange{{l, c}, {l, c}, {c}, {l}} {
		if _, err := r.Apply(ctx, []Target{{Node: "target", Changes: batch}}); err != nil {
			t.Fatal(err)
		}
	}
	sc, err := node.Scrape(ctx, []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Complete != 1 || sc[0].Incomplete != 0 || sc[0].Downloaded != 1 {
		t.Fatalf("got %+v, want one seeder counted once", sc[0])
	}
}

// TestRelayPartialSeeds: a relayed partial seed is stored as one, moves
// up (leecher, partial seed, seeder) at the same millisecond but never
// down, and a resync reads it back with its op.
func TestRelayPartialSeeds(t *testing.T) {
	_, r, node := newRelayPair(t, "relaytest3")
	ctx := context.Background()
	ih := hash("partial relayed")
	p1 := string(peer(1, false).AppendBinary(nil, false))
	p2 := string(peer(2, false).AppendBinary(nil, false))
	now := time.Now().UnixMilli()
	ch := func(op bittorrent.ChangeOp, seen int64, p string) bittorrent.PeerChange {
		return bittorrent.PeerChange{InfoHash: ih, Op: op, Seen: seen, Peer: p}
	}
	state := func(batch ...bittorrent.PeerChange) bittorrent.Scrape {
		t.Helper()
		if _, err := r.Apply(ctx, []Target{{Node: "target", Changes: batch}}); err != nil {
			t.Fatal(err)
		}
		sc, err := node.Scrape(ctx, []bittorrent.InfoHash{ih})
		if err != nil {
			t.Fatal(err)
		}
		return sc[0]
	}
	if s := state(ch(bittorrent.OpLeecher, now-10, p1), ch(bittorrent.OpPartial, now-5, p1)); s.Incomplete != 1 || s.Downloaders != 0 {
		t.Fatalf("leecher then partial seed: %+v", s)
	}
	// Same millisecond: partial seed to seeder yes, back to leecher no.
	if s := state(ch(bittorrent.OpLeecher, now-5, p1)); s.Downloaders != 0 {
		t.Fatalf("a leecher at the same ms demoted the partial seed: %+v", s)
	}
	if s := state(ch(bittorrent.OpSeeder, now-5, p1)); s.Complete != 1 || s.Incomplete != 0 {
		t.Fatalf("a seeder at the same ms: %+v", s)
	}
	if s := state(ch(bittorrent.OpPartial, now-5, p1)); s.Complete != 1 || s.Incomplete != 0 {
		t.Fatalf("a partial seed at the same ms demoted the seeder: %+v", s)
	}
	// Newer: back to partial seed; a second one comes and stops.
	if s := state(ch(bittorrent.OpPartial, now-4, p1), ch(bittorrent.OpPartial, now-4, p2)); s.Complete != 0 || s.Incomplete != 2 || s.Downloaders != 0 {
		t.Fatalf("two partial seeds: %+v", s)
	}
	if s := state(ch(bittorrent.OpStopped, now-3, p2)); s.Incomplete != 1 {
		t.Fatalf("partial seed stopped: %+v", s)
	}
	got, _, err := r.Swarms(ctx, "target", []bittorrent.InfoHash{ih}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The resync reads the live partial seed and the stop.
	if want := []bittorrent.PeerChange{ch(bittorrent.OpPartial, now-4, p1), ch(bittorrent.OpStopped, now-3, p2)}; len(got[0]) != 2 || got[0][0] != want[0] || got[0][1] != want[1] {
		t.Fatalf("resync read %+v, want %+v", got[0], want)
	}
}

// TestIndexedInPages: an index larger than a page (and than Redis's compact
// encoding, which ZSCAN returns whole) is read in pages: every live entry
// once, expired ones trimmed.
func TestIndexedInPages(t *testing.T) {
	rdb, r, _ := newRelayPair(t, "idxpages")
	ctx := context.Background()
	now := time.Now().UnixMilli()
	const live, expired = 2500, 300
	for i := 0; i < live+expired; i++ {
		var ih bittorrent.InfoHash
		// Half in part 0 (larger than a page), the rest in every part.
		ih[0], ih[1], ih[2] = byte(i%(3*IndexParts)), byte(i>>8), byte(i)
		if i%2 == 0 {
			ih[0] = 0
		}
		score := now
		if i >= live {
			score = now - 2*time.Hour.Milliseconds() - indexSlack.Milliseconds()
		}
		if err := rdb.ZAdd(ctx, IndexKey("idxpages", "n1", ih), redis.Z{Score: float64(score), Member: string(ih[:])}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := r.Indexed(ctx, "n1", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[bittorrent.InfoHash]bool{}
	for _, ih := range got {
		n := int(ih[1])<<8 | int(ih[2])
		if n >= live || seen[ih] {
			t.Fatalf("entry %d returned (expired or twice)", n)
		}
		seen[ih] = true
	}
	if len(seen) != live {
		t.Fatalf("%d live entries read, want %d", len(seen), live)
	}
	var n int64
	for _, key := range IndexKeys("idxpages", "n1") {
		n += rdb.ZCard(ctx, key).Val()
	}
	if n != live {
		t.Fatalf("index holds %d entries after the read, want %d (expired trimmed)", n, live)
	}
}
