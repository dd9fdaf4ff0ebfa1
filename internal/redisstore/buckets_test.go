package redisstore

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// layout reads a swarm as the scripts left it: its number of buckets (0:
// one set) and every member of every bucket, failing the test when a
// bucket holds more than 128 members (it would leave Redis's compact
// encoding) or a member is in two buckets.
func layout(t *testing.T, rdb redis.UniversalClient, k SwarmKeys) (int, map[string]float64) {
	t.Helper()
	ctx := context.Background()
	keys := []string{k.Peers}
	n := 0
	b, err := rdb.HGet(ctx, k.Buckets, "b").Result()
	switch {
	case err == redis.Nil: // one set
	case err != nil:
		t.Fatal(err)
	default:
		if n, err = strconv.Atoi(b); err != nil {
			t.Fatalf("buckets hash: b = %q", b)
		}
		keys = keys[:0]
		for i := range n {
			keys = append(keys, k.Bucket(i))
		}
		if rdb.Exists(ctx, k.Peers).Val() != 0 {
			t.Fatal("a swarm in buckets has a one-set key too")
		}
	}
	all := map[string]float64{}
	for i, key := range keys {
		zs, err := rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(zs) > 128 {
			t.Fatalf("bucket %d of %d holds %d members", i, n, len(zs))
		}
		// The embedded store has no encodings (OBJECT is not there).
		if enc, err := rdb.ObjectEncoding(ctx, key).Result(); err == nil && enc != "listpack" {
			t.Fatalf("bucket %d of %d is a %s", i, n, enc)
		}
		for _, z := range zs {
			m := z.Member.(string)
			if _, dup := all[m]; dup {
				t.Fatalf("member %x in two buckets", m)
			}
			all[m] = z.Score
		}
	}
	return n, all
}

// testBuckets: a swarm of more than 128 peers is held in buckets of at
// most 128 (Redis's compact encoding), each peer in exactly one; its
// counts stay exact through joins, re-announces, class changes,
// completions, stops and expiry, in announces and in scrapes; its samples
// hold live peers only, and every one of them in time; and once it has
// shrunk it is one set again.
func testBuckets(t *testing.T, su suite) {
	s, clk := newStore(t, su, time.Minute)
	ctx := context.Background()
	ih := hash("buckets")
	k := s.ks.Swarm(ih)
	member := func(i int) string { return string(su.p(i, i%2 == 1).AppendBinary(nil, su.peerIDs)) }
	// 600 peers, half of them IPv6; every third a seeder.
	const n = 600
	seeder := map[int]bool{}
	for i := range n {
		clk.Add(time.Millisecond)
		left := uint64(10)
		if i%3 == 0 {
			left, seeder[i] = 0, true
		}
		announce(t, s, req(ih, peer(i, i%2 == 1), left, bittorrent.Started), 0)
	}
	live := map[int]bool{}
	for i := range n {
		live[i] = true
	}
	check := func(what string) {
		t.Helper()
		wantS, wantL := 0, 0
		for i := range live {
			if seeder[i] {
				wantS++
			} else {
				wantL++
			}
		}
		b, all := layout(t, s.rdb, k)
		if len(live) > 128 && b < 2 {
			t.Fatalf("%s: %d live peers in %d buckets", what, len(live), b)
		}
		members := map[string]bool{}
		for i := range live {
			members[member(i)] = true
		}
		for m, score := range all {
			if _, seen := PeerClass(score); seen > clk.Now().Add(-time.Minute).UnixMilli() && !members[m] {
				t.Fatalf("%s: a member held that is not a live peer", what)
			}
		}
		sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
		if err != nil {
			t.Fatal(err)
		}
		if sc[0].Complete != wantS || sc[0].Incomplete != wantL {
			t.Fatalf("%s: scrape %d seeders, %d leechers, want %d, %d", what, sc[0].Complete, sc[0].Incomplete, wantS, wantL)
		}
		// A re-announce of a live peer (a leecher) counts the same, and
		// its sample holds live peers other than itself only.
		var self int
		for i := range live {
			if !seeder[i] {
				self = i
				break
			}
		}
		clk.Add(time.Millisecond)
		a := announce(t, s, req(ih, peer(self, self%2 == 1), 10, bittorrent.None), 50)
		if a.Seeders != wantS || a.Leechers != wantL {
			t.Fatalf("%s: announce counts %d seeders, %d leechers, want %d, %d", what, a.Seeders, a.Leechers, wantS, wantL)
		}
		if want := min(50, len(live)-1); len(a.Peers) != want {
			t.Fatalf("%s: %d peers in the answer, want %d", what, len(a.Peers), want)
		}
		for _, p := range a.Peers {
			i := int(p.Addr.Port()) - 10000
			if !live[i] || i == self {
				t.Fatalf("%s: answered peer %d (live %v, self %d)", what, i, live[i], self)
			}
		}
	}
	check("600 joined")
	if b, all := layout(t, s.rdb, k); b < 8 || len(all) != n {
		t.Fatalf("600 peers: %d buckets, %d members; want at least 8 buckets (at most 128 each) and 600", b, len(all))
	}

	// Every live peer is given in time, about as often as any other; a
	// seeder gets leechers only. Each leecher is in about 1 answer in 8 (a
	// simulation of the sampling over this swarm's buckets: 11.1 to 13.6
	// %), so 200 answers miss one with a chance of about 3e-9 and give one
	// fewer than 3 times with a chance below 1e-4.
	given := map[int]int{}
	for range 200 {
		a := announce(t, s, req(ih, peer(0, false), 0, bittorrent.None), 50)
		for _, p := range a.Peers {
			i := int(p.Addr.Port()) - 10000
			if seeder[i] {
				t.Fatalf("seeder given seeder %d", i)
			}
			given[i]++
		}
	}
	if len(given) != 400 {
		t.Fatalf("200 answers of 50 gave a seeder %d distinct leechers of 400", len(given))
	}
	for i, n := range given {
		if n < 3 {
			t.Fatalf("leecher %d given %d times in 200 answers of 50 of 400", i, n)
		}
	}

	// Class changes, completions counted once, re-announces, stops.
	completed := func() int {
		sc, err := s.Scrape(ctx, []bittorrent.InfoHash{ih})
		if err != nil {
			t.Fatal(err)
		}
		return sc[0].Downloaded
	}
	done := completed()
	for i := 1; i < 60; i += 3 { // leechers (i%3 == 1)
		clk.Add(time.Millisecond)
		announce(t, s, req(ih, peer(i, i%2 == 1), 0, bittorrent.Completed), 0)
		announce(t, s, req(ih, peer(i, i%2 == 1), 0, bittorrent.Completed), 0)
		seeder[i] = true
	}
	if got := completed() - done; got != 20 {
		t.Fatalf("%d completions counted, want 20 (each once)", got)
	}
	for i := 100; i < 140; i++ {
		announce(t, s, req(ih, peer(i, i%2 == 1), 10, bittorrent.Stopped), 0)
		delete(live, i)
	}
	check("20 completed, 40 stopped")

	// keepOnly: the live peers below n announce again after a while, the
	// others do not, and expire.
	keepOnly := func(n int, again, expire time.Duration) {
		clk.Add(again)
		for i := range live {
			if i < n {
				left := uint64(10)
				if seeder[i] {
					left = 0
				}
				announce(t, s, req(ih, peer(i, i%2 == 1), left, bittorrent.None), 0)
			}
		}
		clk.Add(expire)
		for i := range live {
			if i >= n {
				delete(live, i)
			}
		}
	}
	// Expiry: a scrape counts the expired out before any write (each
	// bucket counted); an announce then trims.
	keepOnly(400, 40*time.Second, 21*time.Second)
	check("200 expired")
	// Down to 40: the swarm is one set again.
	keepOnly(40, 10*time.Second, 55*time.Second)
	check("shrunk to 40")
	if b, all := layout(t, s.rdb, k); b != 0 || len(all) != len(live) {
		t.Fatalf("shrunk to %d: %d buckets, %d members; want one set of them", len(live), b, len(all))
	}
}

// testPacks: the samples of a bucketed swarm, read from its packs where
// every member is 6 bytes (IPv4 without ids) and from its buckets where
// not (peer ids), follow the swarm through stops, completions and joins:
// a seeder is given every live leecher and nothing else, in time.
func testPacks(t *testing.T, su suite) {
	s, clk := newStore(t, su, time.Minute)
	ctx := context.Background()
	ih := hash("packs")
	k := s.ks.Swarm(ih)
	// 400 IPv4 peers, every fourth a seeder.
	seeder, live := map[int]bool{}, map[int]bool{}
	join := func(i int, left uint64) {
		clk.Add(time.Millisecond)
		announce(t, s, req(ih, peer(i, false), left, bittorrent.Started), 0)
		live[i], seeder[i] = true, left == 0
	}
	for i := range 400 {
		join(i, uint64(min(i%4, 1)))
	}
	// answers has seeder 0 ask n times and checks that it was given live
	// leechers only, each of them at least once. A leecher is in about 1
	// answer in 6 of 50 of 300 (1 in 5 of 250), so 150 answers miss one
	// with a chance below 1e-11.
	answers := func(what string, n int) {
		t.Helper()
		given := map[int]bool{}
		for range n {
			clk.Add(time.Millisecond)
			a := announce(t, s, req(ih, peer(0, false), 0, bittorrent.None), 50)
			for _, p := range a.Peers {
				i := int(p.Addr.Port()) - 10000
				if !live[i] || seeder[i] {
					t.Fatalf("%s: seeder given peer %d (live %v, seeder %v)", what, i, live[i], seeder[i])
				}
				given[i] = true
			}
		}
		for i := range live {
			if !seeder[i] && !given[i] {
				t.Fatalf("%s: leecher %d never given in %d answers", what, i, n)
			}
		}
	}
	answers("400 joined", 150)
	if b, _ := layout(t, s.rdb, k); b < 4 {
		t.Fatalf("400 peers in %d buckets", b)
	}
	// Samples come from packs when every member is 6 bytes; with ids
	// every pack read is "-" (none: read the bucket).
	packs, err := s.rdb.HVals(ctx, k.Packs()).Result()
	if err != nil {
		t.Fatal(err)
	}
	made := 0
	for _, p := range packs {
		if p != "-" {
			made++
		}
	}
	if len(packs) == 0 || (made > 0) == su.peerIDs {
		t.Fatalf("peer ids %v: %d packs read, %d of them made", su.peerIDs, len(packs), made)
	}

	for i := 1; i < 120; i++ {
		switch {
		case seeder[i]:
		case i < 80: // 60 leechers stop
			announce(t, s, req(ih, peer(i, false), 10, bittorrent.Stopped), 0)
			delete(live, i)
		default: // 30 complete
			clk.Add(time.Millisecond)
			announce(t, s, req(ih, peer(i, false), 0, bittorrent.Completed), 0)
			seeder[i] = true
		}
	}
	for i := 400; i < 440; i++ {
		join(i, 10)
	}
	answers("60 stopped, 30 completed, 40 joined", 150)

	// Expiry: the even peers announce again, the odd ones expire.
	clk.Add(40 * time.Second)
	for i := range live {
		if i%2 == 0 {
			left := uint64(10)
			if seeder[i] {
				left = 0
			}
			announce(t, s, req(ih, peer(i, false), left, bittorrent.None), 0)
		}
	}
	clk.Add(21 * time.Second)
	for i := range live {
		if i%2 == 1 {
			delete(live, i)
		}
	}
	answers("the odd expired", 150)
}

// TestRelayBuckets: relayed peers grow another node's swarm into buckets
// as announces do; counts stay exact when the same changes are applied
// again; and a resync reads every bucket back.
func TestRelayBuckets(t *testing.T) {
	rdb, r, node := newRelayPair(t, "relaybuckets")
	ctx := context.Background()
	ih := hash("relayed into buckets")
	now := time.Now().UnixMilli()
	var cs []bittorrent.PeerChange
	for i := range 500 {
		op := bittorrent.OpLeecher
		if i%4 == 0 {
			op = bittorrent.OpSeeder
		}
		cs = append(cs, bittorrent.PeerChange{InfoHash: ih, Op: op, Seen: now - int64(i), Peer: string(peer(i, i%2 == 0).AppendBinary(nil, false))})
	}
	for round := range 2 {
		n, err := r.Apply(ctx, []Target{{Node: "target", Changes: cs}})
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{500, 0}[round]; n != want {
			t.Fatalf("round %d: %d applied, want %d", round, n, want)
		}
		sc, err := node.Scrape(ctx, []bittorrent.InfoHash{ih})
		if err != nil {
			t.Fatal(err)
		}
		if sc[0].Complete != 125 || sc[0].Incomplete != 375 {
			t.Fatalf("round %d: %+v, want 125 seeders and 375 leechers", round, sc[0])
		}
	}
	b, all := layout(t, rdb, node.ks.Swarm(ih))
	if b < 4 || len(all) != 500 {
		t.Fatalf("%d buckets, %d members; want at least 4 and 500", b, len(all))
	}
	back, _, err := r.Swarms(ctx, "target", []bittorrent.InfoHash{ih}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(back[0]) != 500 {
		t.Fatalf("resync read %d peers of 500", len(back[0]))
	}
	held := map[string]bittorrent.ChangeOp{}
	for _, c := range back[0] {
		held[c.Peer] = c.Op
	}
	for _, c := range cs {
		if held[c.Peer] != c.Op {
			t.Fatalf("resync read peer %x as %v, want %v", c.Peer, held[c.Peer], c.Op)
		}
	}
	// A stop relayed into a bucket is counted out.
	stop := cs[1]
	stop.Op, stop.Seen = bittorrent.OpStopped, now+1
	if n, err := r.Apply(ctx, []Target{{Node: "target", Changes: []bittorrent.PeerChange{stop}}}); err != nil || n != 1 {
		t.Fatalf("stop: %d applied, %v", n, err)
	}
	if sc, err := node.Scrape(ctx, []bittorrent.InfoHash{ih}); err != nil || sc[0].Incomplete != 374 {
		t.Fatalf("after a relayed stop: %+v, %v; want 374 leechers", sc, err)
	}
}

// TestParseMeta: a buckets hash is read only as the scripts write it; any
// other content is an error, never a count.
func TestParseMeta(t *testing.T) {
	const cutoff = 1000
	for _, tc := range []struct {
		name    string
		vals    []any
		buckets int
		counts  *swarmCount
		err     bool
	}{
		{"no hash: one set", []any{nil, nil, nil, nil, nil}, 0, nil, false},
		{"live counts", []any{"8", "3", "4", "1", "1001"}, 8, &swarmCount{seeders: 3, leechers: 4, partial: 1}, false},
		{"lo passed: count the buckets", []any{"8", "3", "4", "1", "1000"}, 8, nil, false},
		{"a field missing", []any{"8", "3", nil, "1", "1001"}, 0, nil, true},
		{"not a number", []any{"8", "x", "4", "1", "1001"}, 0, nil, true},
		{"no buckets", []any{"0", "3", "4", "1", "1001"}, 0, nil, true},
		{"too many buckets", []any{"1025", "3", "4", "1", "1001"}, 0, nil, true},
		{"short reply", []any{"8"}, 0, nil, true},
	} {
		n, c, err := parseMeta(tc.vals, cutoff)
		if (err != nil) != tc.err || n != tc.buckets || (c == nil) != (tc.counts == nil) || c != nil && *c != *tc.counts {
			t.Errorf("%s: %d buckets, counts %+v, error %v", tc.name, n, c, err)
		}
	}
}
