package hub

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// network is a hub whose members each have a redis-server of their own.
type network struct {
	*testHub
	redis  map[string]*testkit.RedisServer // by member
	rdb    map[string]*redis.Client
	stores map[string]*redisstore.Store // by node
	scfg   redisstore.Config
}

// newNetwork starts one Redis per member (members: name -> node ids) and a
// hub with them, each member's writer on a backlog of backlog messages.
func newNetwork(t *testing.T, backlog int, members map[string][]string) *network {
	t.Helper()
	cfg := Config{
		Link:        link.Config{Password: password, Channel: newChannel(), Heartbeat: 100 * time.Millisecond, Flush: time.Millisecond, Queue: 16, MaxSkew: 5 * time.Second},
		Name:        "hub-test",
		NodeTimeout: 10 * time.Second,
		Backlog:     backlog,
	}
	reg := prometheus.NewRegistry()
	h, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	h.ownAll()
	n := &network{testHub: &testHub{Hub: h, reg: reg}, redis: map[string]*testkit.RedisServer{}, rdb: map[string]*redis.Client{}, stores: map[string]*redisstore.Store{},
		scfg: redisstore.Config{Prefix: "tl", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: 3 * time.Second}}
	var ms []Member
	for name, nodes := range members {
		srv := testkit.StartRedis(t)
		rdb := srv.Client(t)
		n.redis[name], n.rdb[name] = srv, rdb
		relay, err := redisstore.NewRelayer(rdb, n.scfg)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, Member{Name: name, Nodes: nodes, Link: redisstore.NewLinkConn(rdb), Relay: relay})
		for _, node := range nodes {
			c := n.scfg
			c.NodeID = node
			if n.stores[node], err = redisstore.New(rdb, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := h.SetMembers(ms); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.SetMembers(nil) })
	return n
}

func (n *network) member(name string) *member {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.members[name]
}

// hear hands b to the hub as heard on member's channel, without waiting
// for the writers.
func (n *network) hear(member string, b []byte) {
	n.Hub.handle(context.Background(), n.member(member), b)
}

// peers returns how many peers node holds of ih (in its own Redis).
func (n *network) peers(t *testing.T, node string, ih bittorrent.InfoHash) int {
	t.Helper()
	sc, err := n.stores[node].Scrape(context.Background(), []bittorrent.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	return sc[0].Complete + sc[0].Incomplete
}

func leecher(p *proc, ih bittorrent.InfoHash, i int) bittorrent.PeerChange {
	peer := bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 6881)}
	return bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: p.now().UnixMilli(), Peer: string(peer.AppendBinary(nil, false))}
}

// TestMembersOnTheirOwnRedis: a change at a node of member a is written
// into member b's Redis, and nothing of b's nodes into a's; a member's
// channel carries its own node ids only.
func TestMembersOnTheirOwnRedis(t *testing.T) {
	n := newNetwork(t, 0, map[string][]string{"a": {"a1"}, "b": {"b1", "b2"}})
	ctx := context.Background()
	a1, b1, b2 := &proc{node: "a1", session: 1}, &proc{node: "b1", session: 2}, &proc{node: "b2", session: 3}
	n.hear("a", a1.msg(t, n.testHub, link.KindHello))
	n.hear("b", b1.msg(t, n.testHub, link.KindHello))
	n.hear("b", b2.msg(t, n.testHub, link.KindHello))
	ih := bittorrent.InfoHash{0xa1}
	n.hear("a", a1.msg(t, n.testHub, link.KindUpdates, leecher(a1, ih, 1), leecher(a1, ih, 2)))
	n.flush()
	if n.peers(t, "b1", ih) != 2 || n.peers(t, "b2", ih) != 2 {
		t.Fatalf("b1 holds %d, b2 %d peers of a1's swarm, want 2 each", n.peers(t, "b1", ih), n.peers(t, "b2", ih))
	}
	for member, foreign := range map[string]string{"a": "*{b*", "b": "*{a*"} {
		if keys := n.rdb[member].Keys(ctx, foreign).Val(); len(keys) != 0 {
			t.Fatalf("member %s's Redis holds another member's keys: %v", member, keys)
		}
	}
	// b's operator replays a message of b1 on a's channel, and a message
	// of a1 (which it cannot forge; it could capture one) on its own.
	n.hear("a", b1.msg(t, n.testHub, link.KindUpdates, leecher(b1, ih, 3)))
	n.hear("b", a1.msg(t, n.testHub, link.KindUpdates, leecher(a1, ih, 4)))
	n.flush()
	if n.rejected("wrong_member") != 2 {
		t.Fatalf("wrong_member refusals: %v, want 2", n.rejected("wrong_member"))
	}
	if st := n.Status(); st.Nodes["a1"].Member != "a" || st.Nodes["b2"].Member != "b" || len(st.Members["b"].Nodes) != 2 {
		t.Fatalf("status: %+v", st)
	}
}

// TestSlowMemberHoldsUpNoOther: member b's Redis stops answering. Changes
// from a keep reaching c while b's writer waits; b's backlog stays within
// its bound (the rest is dropped, counted, and a resync asked for); when b
// is back, a resync brings it up to date.
func TestSlowMemberHoldsUpNoOther(t *testing.T) {
	const backlog = 4
	n := newNetwork(t, backlog, map[string][]string{"a": {"a1"}, "b": {"b1"}, "c": {"c1"}})
	a1 := &proc{node: "a1", session: 1}
	for _, p := range []*proc{a1, {node: "b1", session: 2}, {node: "c1", session: 3}} {
		n.hear(p.node[:1], p.msg(t, n.testHub, link.KindHello))
	}
	// a1's peers are in its own keyspace, as its store would have them,
	// for the resync at the end.
	ih := bittorrent.InfoHash{0xb1}
	const peers = 40
	ctx := context.Background()
	for i := range peers {
		p := bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 6881)}
		a, err := n.stores["a1"].Announce(ctx, &bittorrent.AnnounceRequest{InfoHash: ih, Peer: p, Left: 1, Event: bittorrent.Started}, 0)
		if err != nil {
			t.Fatal(err)
		}
		n.rdb["a"].ZAdd(ctx, redisstore.IndexKey("tl", "a1", ih), redis.Z{Score: float64(a.Change.Seen), Member: string(ih[:])})
	}
	if err := n.redis["b"].Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			n.redis["b"].Resume()
		}
	}()
	// One message at a time as far as c goes: c's writer keeps up, b's
	// queue fills.
	c := n.member("c")
	for i := range peers {
		n.hear("a", a1.msg(t, n.testHub, link.KindUpdates, leecher(a1, ih, i)))
		c.pending.Wait()
	}
	if got := n.peers(t, "c1", ih); got != peers {
		t.Fatalf("c1 holds %d of %d peers while b is paused", got, peers)
	}
	b := n.member("b")
	if b.failedN.Load() != 0 {
		t.Fatal("b's first write failed before c had everything: c waited on b")
	}
	// b's writer holds one batch; at most backlog more wait; the rest
	// was dropped.
	if q := len(b.queue); q > backlog {
		t.Fatalf("b's backlog is %d, bound %d", q, backlog)
	}
	if b.droppedN.Load() == 0 || n.resyncRequests("backlog") == 0 {
		t.Fatalf("nothing dropped for b (%d) or no resync asked (%v) with %d messages on a backlog of %d", b.droppedN.Load(), n.resyncRequests("backlog"), peers, backlog)
	}
	if err := n.redis["b"].Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	n.flush()
	if _, err := n.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.peers(t, "b1", ih); got != peers {
		t.Fatalf("b1 holds %d of %d peers after the resync", got, peers)
	}
}

// TestSetMembersWhileRunning: a member added to a running hub is
// subscribed to and relayed to; a member removed is not relayed to any
// more; a list that breaks a rule changes nothing.
func TestSetMembersWhileRunning(t *testing.T) {
	n := newNetwork(t, 0, map[string][]string{"a": {"a1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	relay, err := redisstore.NewRelayer(rdb, n.scfg)
	if err != nil {
		t.Fatal(err)
	}
	a := n.member("a").Member
	b := Member{Name: "b", Nodes: []string{"b1"}, Link: redisstore.NewLinkConn(rdb), Relay: relay}
	if err := n.SetMembers([]Member{a, b, {Name: "c", Nodes: []string{"b1"}, Link: redisstore.NewLinkConn(rdb), Relay: relay}}); err == nil {
		t.Fatal("a node id in two members accepted")
	}
	if err := n.SetMembers([]Member{a, {Name: "d", Link: redisstore.NewLinkConn(rdb), Relay: relay}}); err == nil {
		t.Fatal("a member without node ids accepted beside another")
	}
	for _, to := range []string{"nobody", "a"} {
		shares := a
		shares.ShareTo = []string{to}
		if err := n.SetMembers([]Member{shares, b}); err == nil || !strings.Contains(err.Error(), "not another member") {
			t.Fatalf("a member sharing to %q accepted (%v)", to, err)
		}
	}
	if err := n.SetMembers([]Member{a, b}); err != nil {
		t.Fatal(err)
	}
	if n.member("a") == nil || n.member("a").Member.Link != a.Link {
		t.Fatal("member a was replaced")
	}
	// b1 speaks on b's channel, through b's Redis, as a node would.
	c := n.scfg
	c.NodeID = "b1"
	store, err := redisstore.New(rdb, c)
	if err != nil {
		t.Fatal(err)
	}
	n.stores["b1"] = store
	b1 := &proc{node: "b1", session: 7}
	up := link.Config{Channel: n.cfg.Link.Channel}.UpChannel()
	deadline := time.Now().Add(5 * time.Second)
	for n.Status().Nodes["b1"].Member != "b" && time.Now().Before(deadline) {
		rdb.Publish(ctx, up, b1.msg(t, n.testHub, link.KindHello))
		time.Sleep(20 * time.Millisecond)
	}
	if n.Status().Nodes["b1"].Member != "b" {
		t.Fatal("the hub did not hear b1 on the added member's channel")
	}
	if st := n.Status().Members; st["a"].Link != "up" || st["b"].Link != "up" {
		t.Fatalf("members' links: %+v", st)
	}
	if up, of := n.MembersUp(); up != 2 || of != 2 {
		t.Fatalf("MembersUp: %d of %d, want 2 of 2", up, of)
	}
	a1 := &proc{node: "a1", session: 1}
	n.hear("a", a1.msg(t, n.testHub, link.KindHello))
	ih := bittorrent.InfoHash{0xc1}
	n.hear("a", a1.msg(t, n.testHub, link.KindUpdates, leecher(a1, ih, 1)))
	n.flush()
	if n.peers(t, "b1", ih) != 1 {
		t.Fatal("the added member was not relayed to")
	}
	if err := n.SetMembers([]Member{a}); err != nil {
		t.Fatal(err)
	}
	n.hear("a", a1.msg(t, n.testHub, link.KindUpdates, leecher(a1, ih, 2)))
	n.flush()
	if n.peers(t, "b1", ih) != 1 || n.Status().Members["b"].Channel != "" {
		t.Fatal("a removed member was relayed to, or still listed")
	}
}

// TestPrivateTorrentsNeedConsent: member ann's node a1 carries torrent
// "mine" by its own list (allowed-torrents mode); member bo's node b1
// carries everything (no list), and member cy's node c1 lists "mine"
// itself. A peer of "mine" at a1 reaches c1 (it chose the torrent), never
// b1 by b1's own say-so — live, or by a resync, not even through c1's copy
// — until ann's entry shares with bo. bo's peers of "mine" reach a1 (a1
// lists it), and a torrent ann's node carries as an open node does is not
// held back.
func TestPrivateTorrentsNeedConsent(t *testing.T) {
	n := newNetwork(t, 0, map[string][]string{"ann": {"a1"}, "bo": {"b1"}, "cy": {"c1"}})
	ctx := context.Background()
	mine := bittorrent.InfoHash{0xa1}
	// Each member's carrier reads its own Redis, as cmd/tracker wires it.
	var ms []Member
	for _, name := range []string{"ann", "bo", "cy"} {
		m := n.member(name).Member
		m.Carrier = allowed.NewCarrier(redisstore.NewCarriedSets(n.rdb[name], n.scfg.Prefix), time.Hour)
		ms = append(ms, m)
	}
	if err := n.SetMembers(ms); err != nil {
		t.Fatal(err)
	}
	list := func(member, node string, ihs ...bittorrent.InfoHash) {
		n.rdb[member].Set(ctx, redisstore.AllowedModeKey(n.scfg.Prefix, node), "1", 0)
		for _, ih := range ihs {
			n.rdb[member].SAdd(ctx, redisstore.AllowedKey(n.scfg.Prefix, node), string(ih[:]))
		}
	}
	list("ann", "a1", mine)
	list("cy", "c1", mine)
	a1, b1, c1 := &proc{node: "a1", session: 1}, &proc{node: "b1", session: 1}, &proc{node: "c1", session: 1}
	n.hear("ann", a1.msg(t, n.testHub, link.KindHello))
	n.hear("bo", b1.msg(t, n.testHub, link.KindHello))
	n.hear("cy", c1.msg(t, n.testHub, link.KindHello))

	n.hear("ann", a1.msg(t, n.testHub, link.KindUpdates, leecher(a1, mine, 1)))
	n.flush()
	if got := n.peers(t, "b1", mine); got != 0 {
		t.Fatalf("b1, carrying everything, got %d peers of ann's listed torrent without ann's consent", got)
	}
	if got := n.peers(t, "c1", mine); got != 1 {
		t.Fatalf("c1, which lists the torrent, got %d peers, want 1", got)
	}
	// The other way: a peer of b1's reaches a1, which lists the torrent.
	n.hear("bo", b1.msg(t, n.testHub, link.KindUpdates, leecher(b1, mine, 2)))
	n.flush()
	if got := n.peers(t, "a1", mine); got != 1 {
		t.Fatalf("a1 got %d of bo's peers of a torrent it lists, want 1", got)
	}
	// A resync brings c1 b1's peer, and still nothing of ann's to b1,
	// though c1 holds a copy. The index entries a node's publisher would
	// write:
	for node, member := range map[string]string{"a1": "ann", "b1": "bo", "c1": "cy"} {
		n.rdb[member].ZAdd(ctx, redisstore.IndexKey(n.scfg.Prefix, node, mine), redis.Z{Score: float64(time.Now().UnixMilli()), Member: string(mine[:])})
	}
	if _, err := n.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	// b1's own peer was only published (its store never held it), so
	// b1 holds nothing unless ann's peer reached it.
	if got := n.peers(t, "b1", mine); got != 0 {
		t.Fatalf("after a resync b1 holds %d peers of ann's listed torrent, want 0", got)
	}
	if got := n.peers(t, "c1", mine); got != 2 {
		t.Fatalf("after a resync c1 holds %d peers, want a1's and b1's", got)
	}
	// ann shares with bo: now b1 receives, live and by resync.
	for i := range ms {
		if ms[i].Name == "ann" {
			ms[i].ShareTo = []string{"bo"}
		}
	}
	if err := n.SetMembers(ms); err != nil {
		t.Fatal(err)
	}
	n.hear("ann", a1.msg(t, n.testHub, link.KindHello))
	if _, err := n.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.peers(t, "b1", mine); got != 2 {
		t.Fatalf("with ann's consent b1 holds %d peers, want 2 (a1's, and its own back from the others)", got)
	}
	// A torrent a1 does not list is not held back (ann's consent is gone
	// again, and a1 is no open node either: it carries its list only, so
	// such a change never reaches it; a node of ann that carries
	// everything is what "not listed" means).
	for i := range ms {
		ms[i].ShareTo = nil
	}
	if err := n.SetMembers(ms); err != nil {
		t.Fatal(err)
	}
	open := bittorrent.InfoHash{0xa2}
	n.rdb["ann"].Del(ctx, redisstore.AllowedModeKey(n.scfg.Prefix, "a1"))
	n.hear("ann", a1.msg(t, n.testHub, link.KindHello))
	n.hear("ann", a1.msg(t, n.testHub, link.KindUpdates, leecher(a1, open, 3)))
	n.flush()
	if got := n.peers(t, "b1", open); got != 1 {
		t.Fatalf("b1 got %d peers of a torrent ann's node carries as an open tracker, want 1", got)
	}
}
