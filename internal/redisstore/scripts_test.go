package redisstore

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// The scripts called directly (FCALL against a real redis-server with the
// library loaded), not through the store: what each call writes and
// answers, in the layout the scripts' headers describe. The store's own
// tests cover them through Store and Relayer.

// scriptCaller builds calls of announce.lua and apply.lua at a fixed
// cutoff, with the arguments the node and the hub would send.
type scriptCaller struct {
	rdb    redis.UniversalClient
	ks     Keyspace
	cutoff int64
}

func newScriptCaller(t *testing.T, prefix string) *scriptCaller {
	t.Helper()
	rdb := testkit.SharedRedis(t).Client(t)
	if err := LoadFunctions(context.Background(), rdb); err != nil {
		t.Fatal(err)
	}
	ks, err := NewKeyspace(prefix, "n1")
	if err != nil {
		t.Fatal(err)
	}
	return &scriptCaller{rdb: rdb, ks: ks, cutoff: 1_000_000}
}

// announce calls announce.lua for one announce and returns its reply.
func (c *scriptCaller) announce(t *testing.T, ih bittorrent.InfoHash, op bittorrent.ChangeOp, seen int64, member, flags string, want int, bind string) []any {
	t.Helper()
	keys := c.ks.Swarm(ih).announceList()
	args := []any{"600", "6000", c.cutoff}
	for _, o := range bandOrder {
		lo, _ := liveRange(o, c.cutoff)
		args = append(args, lo)
	}
	args = append(args, expiredBounds(c.cutoff)...)
	args = append(args, changeScore(op, seen), member, opLetter(op, false)+flags, want, bind)
	r, err := c.rdb.FCall(context.Background(), library.announce, keys[:], args...).Slice()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// apply calls apply.lua for changes of one swarm and returns how many it
// applied.
func (c *scriptCaller) apply(t *testing.T, ih bittorrent.InfoHash, now int64, changes ...bittorrent.PeerChange) int64 {
	t.Helper()
	args := append([]any{now, c.cutoff, 3_600_000, 7200}, expiredBounds(c.cutoff)...)
	args = append(args, len(changes))
	for _, ch := range changes {
		args = append(args, opLetter(ch.Op, ch.Completion), changeScore(ch.Op, ch.Seen), ch.Peer)
	}
	n, err := c.rdb.FCall(context.Background(), library.apply, c.ks.Swarm(ih).relayList(), args...).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func v4member(i int) string { return string([]byte{10, 0, byte(i >> 8), byte(i), 0x1a, 0xe1}) }

func TestAnnounceScript(t *testing.T) {
	c := newScriptCaller(t, "script-announce")
	ctx := context.Background()
	ih := hash("announce script")
	sw := c.ks.Swarm(ih)
	now := c.cutoff + 10_000

	// A first leecher starts the swarm (flag 2) and gets no candidates
	// but itself.
	r := c.announce(t, ih, bittorrent.OpLeecher, now, v4member(1), "00112345", 50, "")
	if r[0] != int64(0) || r[1] != int64(1) || r[2] != int64(2) {
		t.Fatalf("first leecher: reply %v, want 0 seeders, 1 leecher, flag 2", r[:4])
	}
	// A seeder that completed: counted once, not again on a repeat.
	for i, want := range []int64{1, 0} {
		r = c.announce(t, ih, bittorrent.OpSeeder, now+int64(i), v4member(2), "10112345", 50, "")
		if r[0] != int64(1) || r[1] != int64(1) || r[2] != want {
			t.Fatalf("completion %d: reply %v, want 1 seeder, 1 leecher, flag %d", i, r[:4], want)
		}
	}
	if n, _ := c.rdb.Get(ctx, sw.Completed).Int(); n != 1 {
		t.Errorf("completed counter %d, want 1", n)
	}
	// A leecher's candidates: one range of IPv4 members as one string.
	r = c.announce(t, ih, bittorrent.OpLeecher, now, v4member(1), "00112345", 50, "")
	if r[3] != int64(1) || len(r[4].(string)) != 2*bittorrent.PeerLen4 {
		t.Errorf("candidates: %v", r[3:])
	}
	// The seeder's score is its band plus its time.
	if sc := c.rdb.ZScore(ctx, sw.Peers, v4member(2)).Val(); int64(sc) != classBand(bittorrent.OpSeeder)+now+1 {
		t.Errorf("seeder's score %d", int64(sc))
	}
	// A stop removes the peer and leaves its tombstone at its time.
	c.announce(t, ih, bittorrent.OpStopped, now+5, v4member(1), "00112345", 50, "")
	if c.rdb.ZScore(ctx, sw.Peers, v4member(1)).Err() != redis.Nil {
		t.Error("stopped peer still held")
	}
	if sc := c.rdb.ZScore(ctx, sw.Stopped, v4member(1)).Val(); int64(sc) != now+5 {
		t.Errorf("tombstone %d, want %d", int64(sc), now+5)
	}
	// create "0": a swarm with no live peer is not started (-1).
	other := hash("not started")
	if r = c.announce(t, other, bittorrent.OpLeecher, now, v4member(3), "0002345", 50, ""); r[2] != int64(-1) {
		t.Errorf("new swarm at the cap: flag %v, want -1", r[2])
	}
	// A key binds a live peer: another key is refused (-2).
	keyed := hash("keyed")
	c.announce(t, keyed, bittorrent.OpLeecher, now, v4member(4), "00112345", 50, "=abcdefgh")
	if r = c.announce(t, keyed, bittorrent.OpLeecher, now+1, v4member(4), "00112345", 50, "=zzzzzzzz"); r[2] != int64(-2) {
		t.Errorf("another key: flag %v, want -2", r[2])
	}
}

// TestAnnounceScriptBuckets: BUCKET members make a set buckets (and a
// hash with the fields Go reads), from the script alone.
func TestAnnounceScriptBuckets(t *testing.T) {
	c := newScriptCaller(t, "script-buckets")
	ctx := context.Background()
	ih := hash("bucketed by script")
	sw := c.ks.Swarm(ih)
	now := c.cutoff + 10_000
	for i := range bucketSize {
		c.announce(t, ih, bittorrent.OpLeecher, now, v4member(i), "00112345", 0, "")
	}
	if c.rdb.Exists(ctx, sw.Peers).Val() != 0 {
		t.Fatalf("a swarm of %d members is still one set", bucketSize)
	}
	vals, err := c.rdb.HMGet(ctx, sw.Buckets, metaFields...).Result()
	if err != nil {
		t.Fatal(err)
	}
	b, counts, err := parseMeta(vals, c.cutoff)
	if err != nil || b < 2 || counts == nil || counts.leechers != bucketSize {
		t.Fatalf("buckets hash %v: %d buckets, counts %+v, %v", vals, b, counts, err)
	}
	total := int64(0)
	for i := range b {
		total += c.rdb.ZCard(ctx, sw.Bucket(i)).Val()
	}
	if total != bucketSize {
		t.Errorf("buckets hold %d members, want %d", total, bucketSize)
	}
	r := c.announce(t, ih, bittorrent.OpSeeder, now, v4member(1000), "00112345", 10, "")
	if r[0] != int64(1) || r[1] != int64(bucketSize) {
		t.Errorf("counts of a bucketed swarm: %v", r[:3])
	}
}

func TestApplyScript(t *testing.T) {
	c := newScriptCaller(t, "script-apply")
	ctx := context.Background()
	ih := hash("apply script")
	sw := c.ks.Swarm(ih)
	now := c.cutoff + 10_000
	p := v4member(1)
	ch := func(op bittorrent.ChangeOp, completion bool, seen int64) bittorrent.PeerChange {
		return bittorrent.PeerChange{Op: op, Completion: completion, Seen: seen, Peer: p}
	}
	for i, tc := range []struct {
		change bittorrent.PeerChange
		want   int64
	}{
		{ch(bittorrent.OpLeecher, false, now), 1},
		{ch(bittorrent.OpLeecher, false, now), 0},        // the same again
		{ch(bittorrent.OpLeecher, false, now-1), 0},      // older
		{ch(bittorrent.OpSeeder, true, now), 1},          // same ms, higher class
		{ch(bittorrent.OpLeecher, false, now), 0},        // same ms, lower class
		{ch(bittorrent.OpStopped, false, now), 1},        // a stop wins the tie
		{ch(bittorrent.OpSeeder, false, now), 0},         // not back at the stop's time
		{ch(bittorrent.OpLeecher, false, c.cutoff-1), 0}, // expired
		{ch(bittorrent.OpPartial, false, now+1), 1},      // newer than the stop
		{ch(bittorrent.OpStopped, false, now+1), 1},      // stop at the same ms
		{ch(bittorrent.OpStopped, false, now+1), 0},      // a stop held already
	} {
		if got := c.apply(t, ih, now+2, tc.change); got != tc.want {
			t.Fatalf("change %d (%v): applied %d, want %d", i, tc.change, got, tc.want)
		}
	}
	if n, _ := c.rdb.Get(ctx, sw.Completed).Int(); n != 1 {
		t.Errorf("completed %d, want 1", n)
	}
	if c.rdb.ZScore(ctx, sw.Peers, p).Err() != redis.Nil {
		t.Error("stopped peer held")
	}
	if ttl := c.rdb.TTL(ctx, sw.Stopped).Val(); ttl <= 0 {
		t.Errorf("tombstones' TTL %v", ttl)
	}
	// Many peers in one call: the set becomes buckets, counted.
	var many []bittorrent.PeerChange
	for i := range 2 * bucketSize {
		many = append(many, bittorrent.PeerChange{Op: bittorrent.OpSeeder, Seen: now, Peer: v4member(100 + i)})
	}
	big := hash("apply many")
	if got := c.apply(t, big, now+2, many...); got != int64(len(many)) {
		t.Fatalf("applied %d of %d", got, len(many))
	}
	vals, _ := c.rdb.HMGet(ctx, c.ks.Swarm(big).Buckets, metaFields...).Result()
	if b, counts, err := parseMeta(vals, c.cutoff); err != nil || b < 2 || counts == nil || counts.seeders != int64(len(many)) {
		t.Errorf("buckets hash %v: %d buckets, %+v, %v", vals, b, counts, err)
	}
}
