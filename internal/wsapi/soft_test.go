package wsapi

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/embedded"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// softConfig is testConfig with the soft state on.
func softConfig(window time.Duration) Config {
	cfg := testConfig()
	cfg.ReadCache, cfg.WriteBehind, cfg.WriteBehindQueue = time.Second, window, 1000
	return cfg
}

// refreshMsg is a regular re-announce (no event).
func refreshMsg(ih, peer []byte, offers int, tag byte) map[string]any {
	m := announceMsg(ih, peer, 100, offers, tag)
	delete(m, "event")
	return m
}

// peerScore is a peer's score in the node's Redis (false: not there).
func peerScore(t *testing.T, rdb redis.UniversalClient, ih, peer []byte) (float64, bool) {
	t.Helper()
	ks, err := redisstore.NewKeyspace("tl", "n1")
	if err != nil {
		t.Fatal(err)
	}
	var h [20]byte
	copy(h[:], ih)
	s, err := rdb.ZScore(context.Background(), ks.RTC(h).Peers, string(peer)).Result()
	if err == redis.Nil {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return s, true
}

// TestSoftRefresh: a re-announce without event of a peer on its socket is
// answered from the soft state (the swarm read once): counts of the local
// peers and of another process's, offers delivered here to local peers and
// published to the other process's, and its last seen written behind.
func TestSoftRefresh(t *testing.T) {
	t.Run("redis", func(t *testing.T) { testSoftRefresh(t, testkit.StartRedis(t).Client(t)) })
	t.Run("embedded", func(t *testing.T) {
		emb, err := embedded.Open("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emb.Close)
		c := redis.NewClient(&redis.Options{Addr: emb.Addr()})
		t.Cleanup(func() { c.Close() })
		testSoftRefresh(t, c)
	})
}

func testSoftRefresh(t *testing.T, rdb redis.UniversalClient) {
	node := onRedis(rdb)
	a, b := startProc(t, node, softConfig(20*time.Millisecond), allowAll{}), startProc(t, node, softConfig(20*time.Millisecond), allowAll{})
	ih := id20(1)
	var locals []*client
	for i := range 4 {
		c := dial(t, a.url)
		c.send(announceMsg(ih, id20(byte(10+i)), 100, 0, 0))
		c.recv()
		locals = append(locals, c)
	}
	q := dial(t, b.url)
	q.send(announceMsg(ih, id20(20), 100, 0, 0))
	q.recv()
	before, _ := peerScore(t, rdb, ih, id20(10))
	time.Sleep(5 * time.Millisecond)

	locals[0].send(refreshMsg(ih, id20(10), 4, 50))
	if r := locals[0].recv(); r["incomplete"] != 5.0 || r["complete"] != 0.0 {
		t.Fatalf("refresh's reply: %v", r)
	}
	// Four offers, four other peers: each gets one.
	seen := map[any]bool{}
	for _, c := range append(locals[1:], q) {
		o := c.recv()
		if o["peer_id"] != l1(id20(10)) || o["offer"] == nil || seen[o["offer_id"]] {
			t.Fatalf("offer: %v", o)
		}
		seen[o["offer_id"]] = true
	}
	for label, want := range map[string]float64{"read": 1, "hit": 1} {
		if n := testutil.ToFloat64(a.srv.m.soft.WithLabelValues(label)); n != want {
			t.Errorf("soft %s: %v, want %v", label, n, want)
		}
	}
	if l, r := testutil.ToFloat64(a.srv.m.offers.WithLabelValues("local")), testutil.ToFloat64(a.srv.m.offers.WithLabelValues("remote")); l != 3 || r != 1 {
		t.Errorf("offers local %v, remote %v; want 3 and 1", l, r)
	}
	testkit.Eventually(t, 5*time.Second, "the refresh written behind", func() bool {
		s, ok := peerScore(t, rdb, ih, id20(10))
		return ok && s > before
	})
	// (counted once the write's reply is in)
	testkit.Eventually(t, 5*time.Second, "one refresh counted as written", func() bool {
		return testutil.ToFloat64(a.srv.m.behind.WithLabelValues("written")) == 1
	})

	// The second refresh within the cache age reads nothing.
	locals[1].send(refreshMsg(ih, id20(11), 0, 0))
	if r := locals[1].recv(); r["incomplete"] != 5.0 {
		t.Fatalf("second refresh's reply: %v", r)
	}
	if n := testutil.ToFloat64(a.srv.m.soft.WithLabelValues("read")); n != 1 {
		t.Errorf("swarm read %v times, want 1", n)
	}

	// An answer to a peer of this process is delivered here.
	locals[2].send(map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(id20(12)), "to_peer_id": l1(id20(10)),
		"offer_id": l1(id20(50)), "answer": map[string]any{"type": "answer", "sdp": "v=0 answer"}})
	if ans := locals[0].recv(); ans["peer_id"] != l1(id20(12)) || ans["answer"] == nil {
		t.Fatalf("answer: %v", ans)
	}
	if n := testutil.ToFloat64(a.srv.m.answers.WithLabelValues("local")); n != 1 {
		t.Errorf("local answers: %v, want 1", n)
	}
}

// TestSoftLeaveAndStop: the local peers are always fresh (a closed socket
// is neither counted nor offered at once), and a refresh waiting to be
// written never brings back a peer that left or stopped.
func TestSoftLeaveAndStop(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	a := startProc(t, onRedis(rdb), softConfig(300*time.Millisecond), allowAll{})
	ih := id20(2)
	p1, p2 := dial(t, a.url), dial(t, a.url)
	p1.send(announceMsg(ih, id20(30), 100, 0, 0))
	p1.recv()
	p2.send(announceMsg(ih, id20(31), 100, 0, 0))
	p2.recv()
	p2.send(refreshMsg(ih, id20(31), 0, 0)) // queued
	if r := p2.recv(); r["incomplete"] != 2.0 {
		t.Fatalf("p2's refresh: %v", r)
	}
	p2.ws.Close()
	testkit.Eventually(t, 5*time.Second, "p2 out of Redis", func() bool {
		_, ok := peerScore(t, rdb, ih, id20(31))
		return !ok
	})
	p1.send(refreshMsg(ih, id20(30), 1, 70))
	if r := p1.recv(); r["incomplete"] != 1.0 {
		t.Fatalf("p1's refresh after p2 left: %v", r)
	}
	if n := testutil.ToFloat64(a.srv.m.dropped.WithLabelValues("no_peer")); n != 1 {
		t.Errorf("offers without a peer: %v, want 1 (p2 is gone)", n)
	}
	p1.send(map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(id20(30)), "left": 100, "event": "stopped"})
	p1.recv()
	if _, ok := peerScore(t, rdb, ih, id20(30)); ok {
		t.Fatal("p1 in Redis after its stop's reply")
	}
	// Past the window, neither is back.
	time.Sleep(700 * time.Millisecond)
	for _, p := range [][]byte{id20(30), id20(31)} {
		if _, ok := peerScore(t, rdb, ih, p); ok {
			t.Fatalf("peer %q brought back by a refresh", p)
		}
	}
}

// TestSoftCrashLosesOnlyRefreshes: what Redis holds while refreshes wait
// (what a kill -9 leaves) has every join and stop already answered; a
// peer whose refresh waits is there with its previous time, alive.
func TestSoftCrashLosesOnlyRefreshes(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	a := startProc(t, onRedis(rdb), softConfig(time.Second), allowAll{})
	ih := id20(3)
	p1, p2, p3 := dial(t, a.url), dial(t, a.url), dial(t, a.url)
	p1.send(announceMsg(ih, id20(40), 100, 0, 0))
	p1.recv()
	p2.send(announceMsg(ih, id20(41), 100, 0, 0))
	p2.recv()
	joined, ok := peerScore(t, rdb, ih, id20(40))
	if !ok {
		t.Fatal("a join not in Redis after its reply")
	}
	time.Sleep(5 * time.Millisecond)
	p1.send(refreshMsg(ih, id20(40), 0, 0))
	p1.recv()
	p2.send(map[string]any{"action": "announce", "info_hash": l1(ih), "peer_id": l1(id20(41)), "left": 100, "event": "stopped"})
	p2.recv()
	p3.send(announceMsg(ih, id20(42), 0, 0, 0))
	p3.recv()
	if n := testutil.ToFloat64(a.srv.m.soft.WithLabelValues("hit")); n != 1 {
		t.Fatalf("refreshes answered from the soft state: %v, want 1", n)
	}
	if s, ok := peerScore(t, rdb, ih, id20(40)); !ok || s != joined {
		t.Fatalf("p1 while its refresh waits: %v %v, want its join's %v", s, ok, joined)
	}
	if _, ok := peerScore(t, rdb, ih, id20(41)); ok {
		t.Fatal("a stop not in Redis after its reply")
	}
	if _, ok := peerScore(t, rdb, ih, id20(42)); !ok {
		t.Fatal("a join not in Redis after its reply")
	}
}

// procStore is a SoftStore that only names its process.
type procStore struct{ SoftStore }

func (procStore) Process() string { return "here" }

// TestSoftBookkeeping: an answer may skip the store only for a peer this
// process holds on that socket and trusts; a peer read without a process
// is never an offer target; a socket that lost its peer to another socket
// of the process does not drop that socket's queued refresh when it goes.
func TestSoftBookkeeping(t *testing.T) {
	sf := newSoft(softConfig(time.Second), procStore{})
	now := time.UnixMilli(1_000_000)
	sf.now = func() time.Time { return now }
	a, b := &conn{}, &conn{}
	m := member{bittorrent.InfoHash{9}, bittorrent.PeerID{1}}

	if sf.holds(m, a) || sf.holds(m, nil) {
		t.Fatal("held before it joined")
	}
	sf.joined(m, a, false)
	if !sf.holds(m, a) || sf.holds(m, b) {
		t.Fatal("held by a: want true for a, false for b")
	}
	now = now.Add(time.Duration(sf.knownFor+1) * time.Millisecond)
	if sf.holds(m, a) {
		t.Fatal("still trusted past knownFor (the store may have let it expire)")
	}

	// b takes the peer over; a's going must not drop b's queued refresh.
	sf.joined(m, b, false)
	sf.queue.Add(m, bittorrent.RTCRefresh{InfoHash: m.ih, PeerID: m.peer, At: now.UnixMilli()})
	sf.left(m, a)
	if sf.queue.Len() != 1 {
		t.Fatal("a's leaving dropped b's queued refresh")
	}
	sf.left(m, b)
	if sf.queue.Len() != 0 {
		t.Fatal("b's leaving kept its queued refresh")
	}

	// A peer read without a process is not kept as a remote target.
	var sw softSwarm
	sw.local = map[bittorrent.PeerID]*localPeer{}
	sw.fill("here", &bittorrent.RTCSwarm{Leechers: 3, Whole: true, Peers: []bittorrent.RTCPeer{
		{ID: bittorrent.PeerID{2}, Process: "there"}, {ID: bittorrent.PeerID{3}}, {ID: bittorrent.PeerID{4}, Process: "here"},
	}}, now.UnixMilli())
	if len(sw.remote) != 1 || sw.remote[0].ID != (bittorrent.PeerID{2}) || sw.remoteLeechers != 1 {
		t.Fatalf("remote targets %+v (%d leechers), want only peer 2", sw.remote, sw.remoteLeechers)
	}
}
