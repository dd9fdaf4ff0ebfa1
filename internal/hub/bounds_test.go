package hub

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestResyncTakesNothingOnTrust: node "evil" writes into its own keyspace
// (what its Redis user may do) a peer 50 years ahead, a stop 50 years
// ahead for node "good"'s real seeder, a multicast peer, a peer with port
// 0, an index part of the wrong type, a swarm key of the wrong type, and
// more swarms and peers than the bounds take. The resync completes (no
// error, so no retry loop), good keeps its seeder, gains none of the
// planted peers, only the bounded number of swarms, and every refusal is
// counted by reason.
func TestResyncTakesNothingOnTrust(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	scfg, relay, stores := realStores(t, rdb, "good")
	good := stores["good"]
	h := newTestHubOn(t, newChannel(), rdb, relay, nil)
	h.cfg.Bounds = Bounds{Swarms: 40, Peers: 5}
	for _, n := range []string{"good", "evil"} {
		h.handle(ctx, (&proc{node: n, session: 1}).msg(t, h, link.KindHello))
	}
	now := time.Now().UnixMilli()
	fifty := now + 50*365*24*3600*1000
	ih := bittorrent.InfoHash{1}
	seeder := bittorrent.Peer{Addr: netip.MustParseAddrPort("192.0.2.10:6881")}
	a, err := good.Announce(ctx, &bittorrent.AnnounceRequest{InfoHash: ih, Peer: seeder, Event: bittorrent.Started}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, redisstore.IndexKey(scfg.Prefix, "good", ih), redis.Z{Score: float64(a.Change.Seen), Member: string(ih[:])})

	evil, _ := redisstore.NewKeyspace(scfg.Prefix, "evil")
	bin := func(s string) string {
		return string(bittorrent.Peer{Addr: netip.MustParseAddrPort(s)}.AppendBinary(nil, false))
	}
	index := func(ih bittorrent.InfoHash) {
		rdb.ZAdd(ctx, redisstore.IndexKey(scfg.Prefix, "evil", ih), redis.Z{Score: float64(now), Member: string(ih[:])})
	}
	sw := evil.Swarm(ih)
	index(ih)
	rdb.ZAdd(ctx, sw.Peers,
		redis.Z{Score: redisstore.PeerScore(bittorrent.OpLeecher, fifty), Member: bin("198.51.100.1:80")},    // 50 years ahead
		redis.Z{Score: redisstore.PeerScore(bittorrent.OpLeecher, now), Member: bin("224.0.0.1:6881")},       // multicast
		redis.Z{Score: redisstore.PeerScore(bittorrent.OpLeecher, now), Member: bin("255.255.255.255:6881")}, // broadcast
		redis.Z{Score: redisstore.PeerScore(bittorrent.OpLeecher, now), Member: bin("198.51.100.2:0")},       // port 0
		redis.Z{Score: redisstore.PeerScore(bittorrent.OpLeecher, now), Member: "junk"},                      // no peer
	)
	rdb.ZAdd(ctx, sw.Stopped, redis.Z{Score: float64(fifty), Member: bin("192.0.2.10:6881")}) // good's seeder, stopped "in 50 years"
	// A swarm key of the wrong type, and an index part of the wrong type.
	wrong := bittorrent.InfoHash{2}
	index(wrong)
	rdb.Set(ctx, evil.Swarm(wrong).Peers, "x", time.Minute)
	rdb.Set(ctx, redisstore.IndexKey(scfg.Prefix, "evil", bittorrent.InfoHash{0}), "x", time.Minute)
	// One swarm of 9 valid peers (bound: 5), and 50 one-peer swarms
	// (bound: 40 swarms in all).
	big := bittorrent.InfoHash{3}
	index(big)
	for i := range 9 {
		rdb.ZAdd(ctx, evil.Swarm(big).Peers, redis.Z{Score: redisstore.PeerScore(bittorrent.OpLeecher, now), Member: bin(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), 6881).String())})
	}
	for i := range 50 {
		x := bittorrent.InfoHash{4, byte(i)}
		index(x)
		rdb.ZAdd(ctx, evil.Swarm(x).Peers, redis.Z{Score: redisstore.PeerScore(bittorrent.OpSeeder, now), Member: bin("198.51.100.200:6881")})
	}

	if _, err := h.Resync(ctx); err != nil {
		t.Fatalf("the resync failed on what one node planted (it would be retried every second): %v", err)
	}
	sc, err := good.Scrape(ctx, []bittorrent.InfoHash{ih, big})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Complete != 1 || sc[0].Incomplete != 0 {
		t.Errorf("good's swarm after the resync: %d seeders, %d leechers; want its seeder and nothing planted", sc[0].Complete, sc[0].Incomplete)
	}
	if sc[1].Incomplete > 5 {
		t.Errorf("good took %d peers of one swarm from evil, bound 5", sc[1].Incomplete)
	}
	held, _, err := relay.Indexed(ctx, "good", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) > 40+1 {
		t.Errorf("good holds %d swarms after the resync; evil's bound is 40 (and good's own)", len(held))
	}
	goodSw, _ := redisstore.NewKeyspace(scfg.Prefix, "good")
	if d := rdb.TTL(ctx, goodSw.Swarm(ih).Peers).Val(); d > 2*time.Hour {
		t.Errorf("good's swarm lives %s: a planted time reached it", d)
	}
	for reason, min := range map[string]float64{"bad_seen": 2, "bad_peer": 4, "bad_type": 2, "too_many_peers": 1, "too_many_swarms": 1} {
		if got := value(h.m.resyncRefused.WithLabelValues(reason)); got < min {
			t.Errorf("hub_resync_refused_total{reason=%q} = %v, want at least %v", reason, got, min)
		}
	}
	// Again: nothing changes, nothing fails (a planted key is no reason
	// to retry for ever).
	if _, err := h.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if sc, _ := good.Scrape(ctx, []bittorrent.InfoHash{ih}); sc[0].Complete != 1 {
		t.Error("good's seeder was removed by a second resync")
	}
}

// TestLinkRefusesNonUnicastPeers: a message signed with the node's own key
// that carries a multicast, broadcast or port-0 peer is refused (bad_peer)
// and nothing of it relayed.
func TestLinkRefusesNonUnicastPeers(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx := context.Background()
	h.handle(ctx, (&proc{node: "alpha", session: 1}).msg(t, h, link.KindHello))
	p := &proc{node: "beta", session: 1}
	h.handle(ctx, p.msg(t, h, link.KindHello))
	for i, addr := range []string{"224.0.0.1:6881", "255.255.255.255:6881", "0.0.0.0:6881", "192.0.2.1:0", "[ff02::1]:6881"} {
		c := p.change(i)
		c.Peer = string(bittorrent.Peer{Addr: netip.MustParseAddrPort(addr)}.AppendBinary(nil, false))
		h.handle(ctx, p.msg(t, h, link.KindUpdates, c))
	}
	h.handle(ctx, p.msg(t, h, link.KindUpdates, p.change(9)))
	h.flush()
	if got := h.rejected("bad_peer"); got != 5 {
		t.Errorf("%v messages refused as bad_peer, want 5", got)
	}
	if got := h.relay.to("alpha"); got != 1 {
		t.Errorf("%d changes relayed, want the one valid", got)
	}
}

// TestProcessesPerNodeCapped: a key holder opening sessions without end
// gets MaxProcesses of them; the others are refused, the node's real
// processes go on, and the public status stays bounded.
func TestProcessesPerNodeCapped(t *testing.T) {
	h := newTestHub(t, newChannel())
	h.cfg.MaxProcesses = 8
	ctx := context.Background()
	for i := range 100 {
		h.handle(ctx, (&proc{node: "beta", session: uint64(1000 + i)}).msg(t, h, link.KindHeartbeat))
	}
	if got := h.rejected("too_many_processes"); got != 92 {
		t.Errorf("%v sessions refused, want 92", got)
	}
	if n := h.Status().Nodes["beta"]; n.ProcessCount != 8 || n.LiveProcesses != 8 {
		t.Errorf("beta has %d processes (%d live), want 8", n.ProcessCount, n.LiveProcesses)
	}
	other := &proc{node: "alpha", session: 1}
	h.handle(ctx, other.msg(t, h, link.KindHello))
	if n := h.Status().Nodes["alpha"]; !n.Live {
		t.Error("another node was refused because of beta's sessions")
	}
}

// TestPublicStatusBounded: the public status lists at most
// PublicProcesses live processes of a node, the newest, with the counts of
// all.
func TestPublicStatusBounded(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx := context.Background()
	for i := range PublicProcesses + 30 {
		h.handle(ctx, (&proc{node: "beta", session: uint64(1 + i)}).msg(t, h, link.KindHeartbeat))
	}
	n := h.PublicStatus().Nodes["beta"]
	if len(n.Processes) != PublicProcesses || n.ProcessCount != PublicProcesses+30 || n.LiveProcesses != PublicProcesses+30 {
		t.Errorf("public status: %d processes listed, counts %d/%d", len(n.Processes), n.ProcessCount, n.LiveProcesses)
	}
	if len(h.Status().Nodes["beta"].Processes) != PublicProcesses+30 {
		t.Error("the full status (admin) lost processes")
	}
}

// TestResyncGate: one node's hellos without end ask for a resync once per
// wait, the wait doubling to its longest; a quiet node starts afresh.
func TestResyncGate(t *testing.T) {
	var g resyncGate
	first, longest := 2*time.Second, time.Minute
	t0 := time.Unix(1000, 0)
	passed, deferred := 0, 0
	var runs []time.Duration
	// Ten requests a second for ten minutes; a deferred one runs at its
	// time.
	var due time.Time
	for ms := 0; ms < 600_000; ms += 100 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if !due.IsZero() && !now.Before(due) {
			g.ran(due)
			runs = append(runs, due.Sub(t0))
			due = time.Time{}
		}
		pass, at := g.take(now, first, longest)
		switch {
		case pass:
			passed++
			runs = append(runs, now.Sub(t0))
		case !at.IsZero():
			deferred++
			due = at
		}
	}
	if passed != 1 {
		t.Errorf("%d requests passed at once, want the first only", passed)
	}
	// Resyncs at 0, 2, 6, 14, 30, 62 s, then once a minute: about 15 in
	// ten minutes instead of 6,000.
	if len(runs) < 10 || len(runs) > 16 {
		t.Errorf("%d resyncs in ten minutes of ten hellos a second: %v", len(runs), runs)
	}
	for i := 1; i < len(runs); i++ {
		if gap := runs[i] - runs[i-1]; gap < first || gap > longest {
			t.Errorf("resyncs %s and %s: %s apart", runs[i-1], runs[i], gap)
		}
	}
	if !due.IsZero() {
		g.ran(due)
	}
	// Quiet for twice the wait: the next request passes at once, and the
	// wait is the first again.
	now := t0.Add(time.Hour)
	if pass, _ := g.take(now, first, longest); !pass {
		t.Fatal("a request after an hour of quiet was deferred")
	}
	if _, at := g.take(now.Add(time.Second), first, longest); at.Sub(now) != first {
		t.Errorf("after quiet, the next request is deferred to %s, want %s", at.Sub(now), first)
	}
}

// TestHellosDoNotStormResyncs: a node sending hellos as fast as it likes
// gets every one counted, one resync at once, and the rest deferred into
// one.
func TestHellosDoNotStormResyncs(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx := context.Background()
	p := &proc{node: "beta", session: 1}
	for range 200 {
		h.handle(ctx, p.msg(t, h, link.KindHello))
	}
	if got := h.resyncRequests("join") + h.resyncRequests("hello"); got != 200 {
		t.Errorf("%v requests counted, want 200", got)
	}
	if got := value(h.m.resyncDeferred); got != 199 {
		t.Errorf("%v requests deferred, want 199", got)
	}
	// One signal now; the deferred one comes after the wait.
	select {
	case <-h.resync:
	default:
		t.Fatal("no resync asked for at once")
	}
	select {
	case <-h.resync:
		t.Fatal("a second resync asked for within the wait")
	case <-time.After(h.cfg.ResyncBackoff / 2):
	}
	select {
	case <-h.resync:
	case <-time.After(h.cfg.ResyncBackoff + time.Second):
		t.Fatal("the deferred resync never came")
	}
}

// TestReplayAfterForgetWithSkewedClock: a process whose clock runs ahead
// by almost the skew sends a message; it goes silent for longer than the
// node timeout (which is longer than the skew, as the configuration
// requires, but shorter than twice it). The process is not forgotten while
// that message would still pass the freshness check, so its replay is
// refused as a replay, never taken for a new process.
func TestReplayAfterForgetWithSkewedClock(t *testing.T) {
	h := newTestHub(t, newChannel())
	skew := h.only().cfg.MaxSkew // what the member's endpoint checks freshness with
	h.cfg.Link.MaxSkew = skew
	h.cfg.NodeTimeout = skew + skew/5
	ctx := context.Background()
	p := &proc{node: "beta", session: 9, clock: skew - skew/10}
	captured := p.msg(t, h, link.KindHello)
	h.handle(ctx, captured)
	// As if the process had gone silent a node timeout and a bit ago.
	back := h.cfg.NodeTimeout + skew/10
	h.mu.Lock()
	st := h.proc(procKey{"beta", 9})
	if st == nil {
		h.mu.Unlock()
		t.Fatal("the process's first message was not taken")
	}
	st.LastHeartbeat = st.LastHeartbeat.Add(-back)
	st.claimed -= back.Milliseconds()
	h.mu.Unlock()
	h.forget(ctx)
	joins := h.resyncRequests("join")
	h.handle(ctx, captured)
	if h.rejected("replay") != 1 || h.resyncRequests("join") != joins {
		t.Fatalf("the replay: %v refused as replay, %v joins (had %v)", h.rejected("replay"), h.resyncRequests("join"), joins)
	}
}

// TestByeAndSilent: a process that says bye (a clean stop) is relayed to no
// more at once and shows as left; a replay of its messages is still
// refused; a process not heard for three heartbeats shows as silent (and is
// still relayed to) before the node timeout forgets it.
func TestByeAndSilent(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx := context.Background()
	a, b := &proc{node: "alpha", session: 1}, &proc{node: "beta", session: 2}
	h.handle(ctx, a.msg(t, h, link.KindHello))
	hello := b.msg(t, h, link.KindHello)
	h.handle(ctx, hello)
	if n := len(h.live("alpha")); n != 1 {
		t.Fatalf("%d nodes to relay to before the bye, want 1", n)
	}
	h.handle(ctx, b.msg(t, h, link.KindBye))
	if n := len(h.live("alpha")); n != 0 {
		t.Fatal("beta is still relayed to after its bye")
	}
	if st := h.Status().Nodes["beta"]; st.State != "left" || st.Live {
		t.Fatalf("beta after its bye: %+v", st)
	}
	h.handle(ctx, hello)
	if h.rejected("replay") != 1 {
		t.Fatal("a replay of a process that left was not refused")
	}
	// alpha goes quiet for more than three heartbeats.
	h.mu.Lock()
	st := h.proc(procKey{"alpha", 1})
	st.LastHeartbeat = time.Now().Add(-4 * h.cfg.Link.Heartbeat)
	h.mu.Unlock()
	if n := h.Status().Nodes["alpha"]; n.State != "silent" || !n.Live {
		t.Fatalf("alpha after four heartbeats of silence: %+v", n)
	}
	if n := len(h.live("beta")); n != 1 {
		t.Fatal("a silent node is no longer relayed to before the node timeout")
	}
}
