package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestRefresh: a refresh written behind moves a held peer's time on and
// nothing else, never goes back in time, never brings back a stopped
// peer, puts back a peer Redis lost, and keeps a bucketed swarm's counts
// exact; on one Redis, a Redis Cluster and the embedded store.
func TestRefresh(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			su := suite{rdb: b.client(t)}
			testRefresh(t, su)
			testRefreshBuckets(t, su)
			testRefreshExtends(t, su)
		})
	}
}

func testRefresh(t *testing.T, su suite) {
	ctx := context.Background()
	s, clk := newStore(t, su, time.Hour)
	ih := hash("refresh")
	k := s.ks.Swarm(ih)
	member := func(i int) string { return string(peer(i, false).AppendBinary(nil, false)) }
	score := func(i int) float64 {
		t.Helper()
		sc, err := su.rdb.ZScore(ctx, k.Peers, member(i)).Result()
		if err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		return sc
	}
	refresh := func(cs ...bittorrent.PeerChange) (int, int) {
		t.Helper()
		r, a, err := s.Refresh(ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		return r, a
	}
	announce(t, s, req(ih, peer(1, false), 10, bittorrent.Started), 0)
	announce(t, s, req(ih, peer(2, false), 0, bittorrent.Started), 0)
	announce(t, s, req(ih, peer(3, false), 10, bittorrent.Started), 0)
	t0 := clk.Now().UnixMilli()

	// Moved on: the time, and the class kept.
	seen := t0 + 5000
	if r, a := refresh(bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: seen, Peer: member(1)},
		bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: seen, Peer: member(2)}); r != 2 || a != 0 {
		t.Fatalf("refreshed %d, added %d; want 2, 0", r, a)
	}
	if got, want := score(1), PeerScore(bittorrent.OpLeecher, seen); got != want {
		t.Fatalf("leecher's score %v, want %v", got, want)
	}
	if got, want := score(2), PeerScore(bittorrent.OpSeeder, seen); got != want {
		t.Fatalf("seeder's score %v, want %v", got, want)
	}
	// A refresh of the same millisecond as what Redis holds (a join and
	// its first refresh written together) is refreshed already: counted,
	// nothing written.
	if r, a := refresh(bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: seen, Peer: member(1)}); r != 1 || a != 0 {
		t.Fatalf("a refresh of the same time: refreshed %d, added %d; want 1, 0", r, a)
	}
	if got, want := score(1), PeerScore(bittorrent.OpLeecher, seen); got != want {
		t.Fatalf("a refresh of the same time moved the score to %v, want %v", got, want)
	}
	// An older refresh (written late, after a newer announce) is left.
	if r, a := refresh(bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: seen - 1000, Peer: member(1)}); r != 0 || a != 0 {
		t.Fatalf("an older refresh: refreshed %d, added %d; want 0, 0", r, a)
	}
	if got, want := score(1), PeerScore(bittorrent.OpLeecher, seen); got != want {
		t.Fatalf("an older refresh moved the score to %v, want %v", got, want)
	}
	// A stop after the refresh was answered: the refresh, written behind
	// it, does not bring the peer back.
	clk.Add(10 * time.Second)
	answeredAt := clk.Now().UnixMilli() - 10
	announce(t, s, req(ih, peer(3, false), 10, bittorrent.Stopped), 0)
	if r, a := refresh(bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: answeredAt, Peer: member(3)}); r != 0 || a != 0 {
		t.Fatalf("a refresh older than the stop: refreshed %d, added %d; want 0, 0", r, a)
	}
	if n := su.rdb.ZScore(ctx, k.Peers, member(3)).Err(); n == nil {
		t.Fatal("a refresh written behind a stop brought the stopped peer back")
	}
	// A peer that Redis lost (no stop recorded) is put back.
	if err := su.rdb.ZRem(ctx, k.Peers, member(1)).Err(); err != nil {
		t.Fatal(err)
	}
	if r, a := refresh(bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: clk.Now().UnixMilli(), Peer: member(1)}); r != 0 || a != 1 {
		t.Fatalf("a lost peer: refreshed %d, added %d; want 0, 1", r, a)
	}
	sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Complete != 1 || sc[0].Incomplete != 1 {
		t.Fatalf("counts %+v, want 1 seeder and 1 leecher", sc[0])
	}
	// The swarm's key lives on from the refresh (as from an announce),
	// once extendEvery has passed since this store last extended it.
	if err := su.rdb.Expire(ctx, k.Peers, 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Duration(s.extendEvery) * time.Second)
	refresh(bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: clk.Now().UnixMilli(), Peer: member(1)})
	if ttl := su.rdb.TTL(ctx, k.Peers).Val(); ttl < time.Hour-time.Minute {
		t.Fatalf("TTL after a refresh %s, want about the lifetime (1h)", ttl)
	}
	// A stop is no refresh.
	if _, _, err := s.Refresh(ctx, []bittorrent.PeerChange{{InfoHash: ih, Op: bittorrent.OpStopped, Seen: 1, Peer: member(1)}}); err == nil {
		t.Fatal("a stop was taken as a refresh")
	}
}

// testRefreshExtends: refreshes extend a swarm's key TTLs (set, key
// bindings, completed counter) at most once per extendEvery, and only
// after one that Redis made; every write gives the keys the same TTL, so
// a key never expires under a peer a refresh wrote; a peer put back gets
// its set a TTL whatever the table says.
func testRefreshExtends(t *testing.T, su suite) {
	ctx := context.Background()
	s, clk := newStore(t, su, time.Hour)
	s.bind = true
	if s.extendEvery != 3600/extendFraction {
		t.Fatalf("extendEvery %ds, want an eighth of the lifetime", s.extendEvery)
	}
	ttl := time.Duration(s.keyTTL()) * time.Second
	ih := hash("refresh-extends")
	k := s.ks.Swarm(ih)
	member := func(i int) string { return string(peer(i, false).AppendBinary(nil, false)) }
	seeder := func(i int) *bittorrent.AnnounceRequest {
		r := req(ih, peer(i, false), 0, bittorrent.Completed)
		r.Key = fmt.Sprintf("k%07d", i)
		return r
	}
	announce(t, s, seeder(1), 0)
	for _, key := range []string{k.Peers, k.Keys} {
		if got := su.rdb.TTL(ctx, key).Val(); got <= ttl-2*time.Second || got > ttl {
			t.Fatalf("TTL of %s after an announce %s, want the key TTL %s", key, got, ttl)
		}
	}
	if got, want := su.rdb.TTL(ctx, k.Completed).Val(), time.Duration(s.completedKeyTTL())*time.Second; got <= want-2*time.Second || got > want {
		t.Fatalf("completed counter's TTL %s, want %s", got, want)
	}
	ttls := func() [3]time.Duration {
		return [3]time.Duration{su.rdb.TTL(ctx, k.Peers).Val(), su.rdb.TTL(ctx, k.Keys).Val(), su.rdb.TTL(ctx, k.Completed).Val()}
	}
	shorten := func() {
		t.Helper()
		for _, key := range []string{k.Peers, k.Keys, k.Completed} {
			if err := su.rdb.Expire(ctx, key, time.Hour/2).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	refresh := func() {
		t.Helper()
		if r, a, err := s.Refresh(ctx, []bittorrent.PeerChange{{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: clk.Now().UnixMilli(), Peer: member(1)}}); err != nil || r != 1 || a != 0 {
			t.Fatalf("refreshed %d, added %d, %v; want 1, 0", r, a, err)
		}
	}
	// The first refresh of a swarm this store does not know extends all.
	shorten()
	clk.Add(time.Second)
	refresh()
	for i, got := range ttls() {
		if got < 3*time.Hour/4 {
			t.Fatalf("TTL %d after a first refresh %s, want it extended", i, got)
		}
	}
	// Within extendEvery of it: nothing extended.
	shorten()
	clk.Add(time.Duration(s.extendEvery)*time.Second - 2*time.Second)
	refresh()
	for i, got := range ttls() {
		if got > time.Hour/2 {
			t.Fatalf("TTL %d after a refresh within extendEvery %s, want it left (30m)", i, got)
		}
	}
	// extendEvery after the last extension: extended again.
	clk.Add(2 * time.Second)
	refresh()
	for i, got := range ttls() {
		if got < 3*time.Hour/4 {
			t.Fatalf("TTL %d after a refresh extendEvery later %s, want it extended", i, got)
		}
	}
	// A failed call records nothing: the next refresh extends.
	shorten()
	clk.Add(time.Duration(s.extendEvery) * time.Second)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.Refresh(cctx, []bittorrent.PeerChange{{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: clk.Now().UnixMilli(), Peer: member(1)}}); err == nil {
		t.Fatal("a refresh on a cancelled context did not fail")
	}
	clk.Add(time.Second)
	refresh()
	if got := ttls(); got[0] < 3*time.Hour/4 || got[1] < 3*time.Hour/4 || got[2] < 3*time.Hour/4 {
		t.Fatalf("TTLs %v after a failed call then a refresh, want them extended", got)
	}
	// A peer put back into a set Redis lost is in a set with a TTL, even
	// within extendEvery.
	if err := su.rdb.Del(ctx, k.Peers).Err(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	if r, a, err := s.Refresh(ctx, []bittorrent.PeerChange{{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: clk.Now().UnixMilli(), Peer: member(1)}}); err != nil || r != 0 || a != 1 {
		t.Fatalf("refreshed %d, added %d, %v; want 0, 1", r, a, err)
	}
	if got := su.rdb.TTL(ctx, k.Peers).Val(); got <= ttl-2*time.Second || got > ttl {
		t.Fatalf("TTL of a set a peer was put back in %s, want the key TTL %s", got, ttl)
	}
	// A store of a short lifetime (under extendFraction seconds)
	// extends on every refresh.
	short, sclk := newStore(t, su, 5*time.Second)
	ih2 := hash("refresh-extends-short")
	announce(t, short, req(ih2, peer(1, false), 0, bittorrent.Started), 0)
	for range 2 {
		if err := su.rdb.Expire(ctx, short.ks.Swarm(ih2).Peers, time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		sclk.Add(10 * time.Millisecond)
		if r, _, err := short.Refresh(ctx, []bittorrent.PeerChange{{InfoHash: ih2, Op: bittorrent.OpSeeder, Seen: sclk.Now().UnixMilli(), Peer: member(1)}}); err != nil || r != 1 {
			t.Fatalf("refreshed %d, %v", r, err)
		}
		if got := su.rdb.TTL(ctx, short.ks.Swarm(ih2).Peers).Val(); got < 5*time.Second {
			t.Fatalf("TTL %s after a refresh with a 5s lifetime, want it extended every time", got)
		}
	}
}

// testRefreshBuckets: refreshes of a swarm in buckets, of peers held and
// of one lost, keep its counts exact.
func testRefreshBuckets(t *testing.T, su suite) {
	ctx := context.Background()
	s, clk := newStore(t, su, time.Hour)
	ih := hash("refresh-buckets")
	const n = 300
	for i := range n {
		announce(t, s, req(ih, peer(i, false), uint64(i%2), bittorrent.Started), 0)
	}
	clk.Add(time.Second)
	var cs []bittorrent.PeerChange
	for i := range n {
		op := bittorrent.OpSeeder
		if i%2 == 1 {
			op = bittorrent.OpLeecher
		}
		cs = append(cs, bittorrent.PeerChange{InfoHash: ih, Op: op, Seen: clk.Now().UnixMilli(), Peer: string(peer(i, false).AppendBinary(nil, false))})
	}
	r, a, err := s.Refresh(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if r != n || a != 0 {
		t.Fatalf("refreshed %d, added %d; want %d, 0", r, a, n)
	}
	sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Complete != n/2 || sc[0].Incomplete != n/2 {
		t.Fatalf("counts %+v after refreshes, want %d and %d", sc[0], n/2, n/2)
	}
}

// TestRefreshChecksArguments: a Redis user's call with bad arguments is
// refused whole, before anything is written.
func TestRefreshChecksArguments(t *testing.T) {
	rdb := suite{rdb: backends()[0].client(t)}.rdb
	ctx := context.Background()
	s, _ := newStore(t, suite{rdb: rdb}, time.Hour)
	if _, err := s.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	k := s.ks.Swarm(hash("bad")).announceList()
	keys := k[:]
	head := []any{3601, 7200, 1000, 2000, 3000, 4000}
	for _, tc := range []struct {
		name string
		args []any
	}{
		{"no swarm part", head},
		{"bad flags", append(append([]any{}, head...), "2x", 1, 5, "123456")},
		{"count past the arguments", append(append([]any{}, head...), "000", 5, 5, "123456")},
		{"bad member", append(append([]any{}, head...), "000", 1, 5, "12345")},
		{"bad score", append(append([]any{}, head...), "000", 1, "-5", "123456")},
	} {
		err := rdb.FCall(ctx, library.refresh, keys, tc.args...).Err()
		if err == nil || !strings.Contains(err.Error(), "tracklink refresh") {
			t.Errorf("%s: %v, want a refusal", tc.name, err)
		}
	}
	if n := rdb.Exists(ctx, keys...).Val(); n != 0 {
		t.Fatalf("a refused call wrote %d keys", n)
	}
}

// TestReadSwarms: a small swarm is read whole, its live peers with their
// classes and times; a larger one, an empty one and one with a member no
// writer of ours writes are not; on one Redis, a Redis Cluster and the
// embedded store (each writes scores in ZSCAN its own way).
func TestReadSwarms(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { testReadSwarms(t, suite{rdb: b.client(t)}) })
	}
}

func testReadSwarms(t *testing.T, su suite) {
	ctx := context.Background()
	s, clk := newStore(t, su, time.Hour)
	small, big, bad, none := hash("read-small"), hash("read-big"), hash("read-bad"), hash("read-none")
	for i := range 4 {
		announce(t, s, req(small, peer(i, false), uint64(i%2), bittorrent.Started), 0)
	}
	for i := range 11 {
		announce(t, s, req(big, peer(i, false), 1, bittorrent.Started), 0)
	}
	announce(t, s, req(bad, peer(1, false), 1, bittorrent.Started), 0)
	su.rdb.ZAdd(ctx, s.ks.Swarm(bad).Peers, redis.Z{Score: 1, Member: "short"})
	// One peer of the small swarm expired (not trimmed yet).
	su.rdb.ZAdd(ctx, s.ks.Swarm(small).Peers, redis.Z{Score: float64(clk.Now().Add(-2 * time.Hour).UnixMilli()), Member: string(peer(9, false).AppendBinary(nil, false))})
	out, whole, _, err := s.ReadSwarms(ctx, []bittorrent.InfoHash{small, big, bad, none}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !whole[0] || whole[1] || whole[2] || whole[3] {
		t.Fatalf("whole %v, want only the small swarm", whole)
	}
	if len(out[0]) != 4 {
		t.Fatalf("%d live peers read, want 4", len(out[0]))
	}
	seeders := 0
	for _, c := range out[0] {
		if c.Op == bittorrent.OpSeeder {
			seeders++
		}
	}
	if seeders != 2 {
		t.Fatalf("%d seeders read, want 2", seeders)
	}
	for _, c := range out[0] {
		if c.InfoHash != small || c.Seen != clk.Now().UnixMilli() {
			t.Fatalf("read %+v, want swarm %x seen at %d", c, small, clk.Now().UnixMilli())
		}
	}
}

// TestReadSwarmsKeyChecks: in the read's round trip, a peer's key binding
// agrees with the key it was bound to (in any case, as clients send hex),
// and with no key only when none binds it; another key, no key for a
// bound peer, or a key for an unbound one do not. Without bindings every
// check agrees.
func TestReadSwarmsKeyChecks(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			rdb := b.client(t)
			s, _ := newStore(t, suite{rdb: rdb}, time.Hour)
			s.bind = true
			ih := hash("read-keys")
			keyed, bare := req(ih, peer(1, false), 1, bittorrent.Started), req(ih, peer(2, false), 1, bittorrent.Started)
			keyed.Key = "a1b2c3d4"
			announce(t, s, keyed, 0)
			announce(t, s, bare, 0)
			m := func(r *bittorrent.AnnounceRequest) string { return string(r.Peer.AppendBinary(nil, false)) }
			checks := []bittorrent.KeyCheck{
				{InfoHash: ih, Peer: m(keyed), Key: "a1b2c3d4"},
				{InfoHash: ih, Peer: m(keyed), Key: "A1B2C3D4"},
				{InfoHash: ih, Peer: m(keyed), Key: "ffffffff"},
				{InfoHash: ih, Peer: m(keyed), Key: ""},
				{InfoHash: ih, Peer: m(bare), Key: ""},
				{InfoHash: ih, Peer: m(bare), Key: "a1b2c3d4"},
			}
			want := []bool{true, true, false, false, true, false}
			out, whole, ok, err := s.ReadSwarms(ctx, []bittorrent.InfoHash{ih}, 10, checks)
			if err != nil || !whole[0] || len(out[0]) != 2 {
				t.Fatalf("read: %v, whole %v, %d peers; want the swarm's 2", err, whole, len(out[0]))
			}
			if !slices.Equal(ok, want) {
				t.Fatalf("key checks %v, want %v", ok, want)
			}
			// A bindings key of another type (a hostile Redis user's)
			// fails its check only.
			odd := hash("read-keys-odd")
			announce(t, s, req(odd, peer(3, false), 1, bittorrent.Started), 0)
			rdb.Set(ctx, s.ks.Swarm(odd).Keys, "x", 0)
			_, whole, ok, err = s.ReadSwarms(ctx, []bittorrent.InfoHash{ih, odd}, 10, append(checks[:1:1], bittorrent.KeyCheck{InfoHash: odd, Peer: m(bare), Key: ""}))
			if err != nil || !whole[0] || !whole[1] || !ok[0] || ok[1] {
				t.Fatalf("with a bindings key of another type: %v, whole %v, checks %v; want no error, both read, only its check false", err, whole, ok)
			}
			s.bind = false
			if _, _, ok, err = s.ReadSwarms(ctx, nil, 10, checks); err != nil || slices.Contains(ok, false) {
				t.Fatalf("without bindings: %v %v, want every check to agree", ok, err)
			}
		})
	}
}

// TestParseScore: a score as ZSCAN writes it, an integer or a double's
// digits, is read when it is a whole number, and refused otherwise.
func TestParseScore(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1796687015000", 1796687015000, true},
		{"17592186044416", 17592186044416, true},
		{"1.796687015e+12", 1796687015000, true},
		{"0", 0, true},
		{"1.5", 0, false},
		{"", 0, false},
		{"abc", 0, false},
		{"inf", 0, false},
		{"nan", 0, false},
		{"1e300", 0, false},
	} {
		got, ok := parseScore(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseScore(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestRefreshWithoutScript: refreshes of peers held in one-set swarms are
// written with one ZADD a swarm, no function call; one the ZADD cannot
// settle (a peer not held) goes to the function.
func TestRefreshWithoutScript(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	s, clk := newStore(t, suite{rdb: rdb}, time.Hour)
	member := func(i int) string { return string(peer(i, false).AppendBinary(nil, false)) }
	var cs []bittorrent.PeerChange
	for sw := range 3 {
		ih := hash(fmt.Sprintf("plain-%d", sw))
		for i := range 4 {
			announce(t, s, req(ih, peer(i, false), uint64(i%2), bittorrent.Started), 0)
			op := bittorrent.OpLeecher
			if i%2 == 0 {
				op = bittorrent.OpSeeder
			}
			cs = append(cs, bittorrent.PeerChange{InfoHash: ih, Op: op, Peer: member(i)})
		}
	}
	fcalls := func() int64 {
		t.Helper()
		info, err := rdb.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "cmdstat_fcall:calls="); ok {
				n, _ := strconv.ParseInt(v[:strings.IndexByte(v, ',')], 10, 64)
				return n
			}
		}
		return 0
	}
	clk.Add(time.Second)
	for i := range cs {
		cs[i].Seen = clk.Now().UnixMilli()
	}
	before := fcalls()
	if r, a, err := s.Refresh(ctx, cs); err != nil || r != len(cs) || a != 0 {
		t.Fatalf("refreshed %d, added %d, %v; want %d, 0", r, a, err, len(cs))
	}
	if n := fcalls() - before; n != 0 {
		t.Fatalf("%d function calls for refreshes of held peers, want none", n)
	}
	for _, c := range cs {
		if got, want := rdb.ZScore(ctx, s.ks.Swarm(c.InfoHash).Peers, c.Peer).Val(), PeerScore(c.Op, c.Seen); got != want {
			t.Fatalf("score %v, want %v", got, want)
		}
	}
	// A peer Redis lost: its swarm goes to the function, which puts it
	// back; the other peers of that swarm are counted once.
	if err := rdb.ZRem(ctx, s.ks.Swarm(cs[0].InfoHash).Peers, cs[0].Peer).Err(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	for i := range cs {
		cs[i].Seen = clk.Now().UnixMilli()
	}
	if r, a, err := s.Refresh(ctx, cs); err != nil || r != len(cs)-1 || a != 1 {
		t.Fatalf("refreshed %d, added %d, %v; want %d, 1", r, a, err, len(cs)-1)
	}
	if n := fcalls() - before; n != 1 {
		t.Fatalf("%d function calls, want 1 (the swarm with a lost peer)", n)
	}
}
