package hub

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// relayNet is a network of real nodes (stores and their links) on real
// Redis, relayed by any number of hub processes started in the test.
type relayNet struct {
	t       *testing.T
	lcfg    link.Config
	members []Member
	stores  map[string]*redisstore.Store
	nodes   map[string]*link.Node
}

// netMember is one member of a relayNet: its Redis and node ids.
type netMember struct {
	name  string
	rdb   redis.UniversalClient
	nodes []string
}

const testPartitions = 8

func newRelayNet(t *testing.T, sharded bool, ms ...netMember) *relayNet {
	t.Helper()
	n := &relayNet{t: t, stores: map[string]*redisstore.Store{}, nodes: map[string]*link.Node{},
		lcfg: link.Config{Password: password, Channel: newChannel(), Heartbeat: 100 * time.Millisecond, Flush: time.Millisecond,
			Queue: 4096, MaxSkew: 5 * time.Second, Partitions: testPartitions, Sharded: sharded}}
	scfg := redisstore.Config{Prefix: newChannel(), PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: 3 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var running []chan struct{}
	t.Cleanup(func() {
		cancel()
		for _, c := range running {
			<-c
		}
	})
	for _, m := range ms {
		relay, err := redisstore.NewRelayer(m.rdb, scfg)
		if err != nil {
			t.Fatal(err)
		}
		mb := Member{Name: m.name, Link: redisstore.NewLinkConn(m.rdb), Relay: relay, Sharded: sharded}
		if len(ms) > 1 {
			mb.Nodes = m.nodes
		}
		n.members = append(n.members, mb)
		for _, node := range m.nodes {
			c := scfg
			c.NodeID = node
			if n.stores[node], err = redisstore.New(m.rdb, c); err != nil {
				t.Fatal(err)
			}
			ln, err := link.NewNode(n.lcfg, node, redisstore.NewLinkConn(m.rdb), redisstore.NewNodeIndex(m.rdb, scfg.Prefix, scfg.PeerLifetime), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			n.nodes[node] = ln
			done := make(chan struct{})
			running = append(running, done)
			go func() { ln.Run(ctx); close(done) }()
		}
	}
	return n
}

// runningHub is one hub process of a relayNet.
type runningHub struct {
	*Hub
	cancel context.CancelFunc
	done   chan struct{}
}

// startHub starts a hub process with lease time ttl (0: the default).
func (n *relayNet) startHub(name string, ttl time.Duration) *runningHub {
	n.t.Helper()
	h, err := New(Config{Link: n.lcfg, Name: name, NodeTimeout: 10 * time.Second, LeaseTTL: ttl},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		n.t.Fatal(err)
	}
	if err := h.SetMembers(n.members); err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rh := &runningHub{Hub: h, cancel: cancel, done: make(chan struct{})}
	go func() { h.Run(ctx); close(rh.done) }()
	n.t.Cleanup(rh.stop)
	return rh
}

// stop stops the hub cleanly: it gives up its leases.
func (h *runningHub) stop() { h.cancel(); <-h.done }

// kill stops the hub as kill -9 would: its subscriptions end, its leases
// stay until they expire.
func (h *runningHub) kill() {
	h.keepLeases = true
	h.stop()
}

// relayed is how many changes the hub wrote into other nodes: taken to
// the relayer, whether or not a node already held them (a resync may
// have applied one first; applying is idempotent).
func (h *runningHub) relayed() float64 {
	var n int64
	for _, node := range h.Status().Nodes {
		n += node.Relayed
	}
	return float64(n)
}

// announce makes peer i a leecher of ih at node, as its front end would:
// stored, then handed to its link.
func (n *relayNet) announce(node string, ih bittorrent.InfoHash, i int) {
	n.t.Helper()
	peer := bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 6881)}
	res, err := n.stores[node].Announce(context.Background(), &bittorrent.AnnounceRequest{InfoHash: ih, Peer: peer, Left: 1, NumWant: -1}, 0)
	if err != nil {
		n.t.Fatal(err)
	}
	n.nodes[node].LocalChange(res.Change)
}

// peers returns how many peers node holds of hashes.
func (n *relayNet) peers(node string, hashes []bittorrent.InfoHash) int {
	sc, err := n.stores[node].Scrape(context.Background(), hashes)
	if err != nil {
		n.t.Fatal(err)
	}
	total := 0
	for _, s := range sc {
		total += s.Complete + s.Incomplete
	}
	return total
}

// hashes returns k info hashes spread over every partition, distinct per
// round.
func hashes(round byte, k int) []bittorrent.InfoHash {
	out := make([]bittorrent.InfoHash, k)
	for i := range out {
		out[i] = bittorrent.InfoHash{byte(i), round, byte(i >> 8)}
	}
	return out
}

// split reports whether hubs hold every partition between them, each
// once, each hub want of them.
func split(want int, hubs ...*runningHub) bool {
	var all []int
	for _, h := range hubs {
		ps := h.Partitions()
		if len(ps) != want {
			return false
		}
		all = append(all, ps...)
	}
	slices.Sort(all)
	return len(slices.Compact(all)) == testPartitions && len(all) == testPartitions
}

func linked(hubs []*runningHub, nodes ...string) bool {
	for _, h := range hubs {
		st := h.Status()
		for _, n := range nodes {
			if !st.Nodes[n].Live {
				return false
			}
		}
	}
	return true
}

// shareAndRelayOnce: one hub takes every partition; a second one started
// beside it takes half (the first gives them up); then each change is
// relayed by one hub only: the writes the two count add up to the changes.
func shareAndRelayOnce(t *testing.T, n *relayNet, from, to string) {
	a := n.startHub("hub-a", 600*time.Millisecond)
	testkit.Eventually(t, 3*time.Second, "the first hub takes every partition", func() bool { return split(testPartitions, a) })
	b := n.startHub("hub-b", 600*time.Millisecond)
	took := testkit.Eventually(t, 5*time.Second, "two hubs split the partitions", func() bool { return split(testPartitions/2, a, b) })
	t.Logf("rebalanced over two hubs in %s", took)
	hubs := []*runningHub{a, b}
	testkit.Eventually(t, 5*time.Second, "both hubs hear both nodes", func() bool { return linked(hubs, from, to) })
	// A partition is listened to at every member once its subscription
	// is made, which asks for a takeover resync (on a Redis Cluster, at
	// the partition's shard, some time after the lease is taken): what is
	// published before is resynced, not relayed, and the count below is
	// of relays.
	testkit.Eventually(t, 5*time.Second, "every partition taken is listened to at every member", func() bool {
		for _, h := range hubs {
			if h.resyncRequests("takeover") < value(h.m.takeovers)*float64(len(n.members)) {
				return false
			}
		}
		return true
	})
	// The takeover resyncs run and end: a change a resync applies first
	// is applied by no relay after it (applying is idempotent), and the
	// count below is of relays.
	testkit.Eventually(t, 10*time.Second, "the hubs' resyncs done", func() bool { return resyncsIdle(a) && resyncsIdle(b) })
	before := a.relayed() + b.relayed()
	ihs := hashes(1, 64)
	for i, ih := range ihs {
		n.announce(from, ih, i)
		n.announce(from, ih, 1000+i)
	}
	testkit.Eventually(t, 5*time.Second, "every change reaches "+to, func() bool { return n.peers(to, ihs) == 2*len(ihs) })
	time.Sleep(200 * time.Millisecond)
	if got := a.relayed() + b.relayed() - before; got != float64(2*len(ihs)) {
		t.Fatalf("the hubs relayed %v changes, want each of %d once", got, 2*len(ihs))
	}
	if a.relayed() == 0 || b.relayed() == 0 {
		t.Fatalf("one hub relayed everything: %v and %v", a.relayed(), b.relayed())
	}
	for _, h := range hubs {
		if st := h.Status(); len(st.Partitions) != testPartitions/2 || st.PartitionCount != testPartitions || st.Hubs != 2 || value(h.m.takeovers) == 0 {
			t.Fatalf("status of %s: partitions %v of %d, hubs %d", st.Hub, st.Partitions, st.PartitionCount, st.Hubs)
		}
	}
}

// TestHubsShareThePartitions: on one Redis, a hub added beside a running
// one takes half the partitions, and each change is relayed once.
func TestHubsShareThePartitions(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	n := newRelayNet(t, false, netMember{name: "local", rdb: rdb, nodes: []string{"n1", "n2"}})
	shareAndRelayOnce(t, n, "n1", "n2")
}

// TestHubsShareThePartitionsOnRedisCluster: the same on a Redis Cluster,
// the partitions' channels on shards of their own (sharded pub/sub), the
// leases in the link's slot.
func TestHubsShareThePartitionsOnRedisCluster(t *testing.T) {
	rdb := testkit.SharedRedisCluster(t).Client(t)
	n := newRelayNet(t, true, netMember{name: "local", rdb: rdb, nodes: []string{"n1", "n2"}})
	shareAndRelayOnce(t, n, "n1", "n2")
}

// TestHubsShareThePartitionsAcrossMembers: the same in a network of two
// members on their own Redis; the leases live in the first member's.
func TestHubsShareThePartitionsAcrossMembers(t *testing.T) {
	ra, rb := testkit.StartRedis(t).Client(t), testkit.StartRedis(t).Client(t)
	n := newRelayNet(t, false, netMember{name: "a", rdb: ra, nodes: []string{"a1"}}, netMember{name: "b", rdb: rb, nodes: []string{"b1"}})
	shareAndRelayOnce(t, n, "a1", "b1")
	if keys := rb.Keys(context.Background(), "*:lease:*").Val(); len(keys) != 0 {
		t.Fatalf("leases in the second member's Redis: %v", keys)
	}
}

// TestHubKilledPartitionsTakenOver: of two hubs, one dies without giving
// up its leases (as kill -9), while changes keep coming. Within the lease
// time (the default, 3 s) and a tick, the other holds every partition, and
// its takeover resync brings what the dead hub's partitions carried
// meanwhile: no peer is lost.
func TestHubKilledPartitionsTakenOver(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	n := newRelayNet(t, false, netMember{name: "local", rdb: rdb, nodes: []string{"n1", "n2"}})
	a, b := n.startHub("hub-a", 0), n.startHub("hub-b", 0)
	testkit.Eventually(t, 10*time.Second, "two hubs split the partitions", func() bool { return split(testPartitions/2, a, b) })
	testkit.Eventually(t, 5*time.Second, "both hubs hear both nodes", func() bool { return linked([]*runningHub{a, b}, "n1", "n2") })
	ihs := hashes(2, 64)
	for i, ih := range ihs {
		n.announce("n1", ih, i)
	}
	testkit.Eventually(t, 5*time.Second, "first changes relayed", func() bool { return n.peers("n2", ihs) == len(ihs) })
	b.kill()
	killed := time.Now()
	for i, ih := range ihs { // half of them on channels nobody hears
		n.announce("n1", ih, 1000+i)
	}
	took := testkit.Eventually(t, 5*time.Second, "the survivor holds every partition", func() bool { return split(testPartitions, a) })
	t.Logf("partitions taken over %s after the kill", took)
	testkit.Eventually(t, 5*time.Second, "no peer lost", func() bool { return n.peers("n2", ihs) == 2*len(ihs) })
	t.Logf("every peer at n2 %s after the kill", time.Since(killed))
	if got := a.resyncRequests("takeover"); got == 0 {
		t.Fatal("no takeover resync")
	}
}

func (h *runningHub) resyncRequests(reason string) float64 {
	return value(h.m.resyncReq.WithLabelValues(reason))
}

// TestStreamsOfAProcess: a process numbers each stream on its own, so
// updates of two partitions and its heartbeats interleave without a
// replay or a gap; a replay within one stream is refused; a partition's
// stream carries only that partition's changes; a node with another
// partition count is refused; a node before partitions (version 2) is
// heard, its updates relayed from the control channel.
func TestStreamsOfAProcess(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx := context.Background()
	parts := h.cfg.Link.PartitionCount()
	send := func(p *proc, version uint8, partitions, stream uint16, seq uint64, kind link.Kind, changes ...bittorrent.PeerChange) {
		t.Helper()
		b, err := link.EncodeUp(nodeKey(p.node), &link.Message{Version: version, Kind: kind, Partitions: partitions, Stream: stream,
			Node: p.node, Session: p.session, Seq: seq, Time: p.now().UnixMilli(), Changes: changes})
		if err != nil {
			t.Fatal(err)
		}
		h.handle(ctx, b)
	}
	alpha, beta := &proc{node: "alpha", session: 1}, &proc{node: "beta", session: 2}
	P := uint16(parts)
	send(alpha, link.Version, P, 0, 1, link.KindHello)
	send(beta, link.Version, P, 0, 1, link.KindHello)
	in := func(part, i int) bittorrent.PeerChange {
		c := beta.change(i)
		c.InfoHash[0] = byte(part)
		return c
	}
	for seq := uint64(1); seq <= 5; seq++ {
		send(beta, link.Version, P, 1, seq, link.KindUpdates, in(0, int(seq)))
		send(beta, link.Version, P, 4, seq, link.KindUpdates, in(3, int(seq)))
		send(beta, link.Version, P, 0, seq+1, link.KindHeartbeat)
	}
	if h.relay.to("alpha") != 10 || h.rejected("replay") != 0 || h.resyncRequests("gap") != 0 {
		t.Fatalf("relayed %d, replays %v, gaps %v", h.relay.to("alpha"), h.rejected("replay"), h.resyncRequests("gap"))
	}
	send(beta, link.Version, P, 4, 5, link.KindUpdates, in(3, 5))
	send(beta, link.Version, P, 2, 6, link.KindUpdates, in(3, 6))
	send(beta, link.Version, P+1, 0, 7, link.KindHeartbeat)
	for reason, want := range map[string]float64{"replay": 1, "wrong_partition": 1, "partitions": 1} {
		if got := h.rejected(reason); got != want {
			t.Errorf("%s: %v, want %v", reason, got, want)
		}
	}
	// Version 2: everything on the control stream, heard by every hub,
	// relayed by the one holding each change's partition.
	old := &proc{node: "gamma", session: 3}
	send(old, link.LegacyVersion, 0, 0, 1, link.KindHello)
	h.drop(5)
	send(old, link.LegacyVersion, 0, 0, 2, link.KindUpdates, in(5, 100), in(6, 101))
	if got := h.relay.to("alpha"); got != 11 {
		t.Fatalf("relayed to alpha: %d, want 11 (the change of a partition not held left out)", got)
	}
	if time.Since(time.UnixMilli(h.legacy.Load())) > time.Second {
		t.Fatal("a version 2 node heard, but not noted")
	}
	// Another hub takes partition 3 and reads its streams' state from
	// the registry first: a replay there is refused too.
	h.persist(ctx)
	h2 := newTestHub(t, h.cfg.Link.Channel)
	if err := h2.loadStreams(ctx, h2.only(), 3); err != nil {
		t.Fatal(err)
	}
	b, _ := link.EncodeUp(nodeKey(beta.node), &link.Message{Kind: link.KindUpdates, Partitions: P, Stream: 4,
		Node: beta.node, Session: beta.session, Seq: 5, Time: beta.now().UnixMilli(), Changes: []bittorrent.PeerChange{in(3, 5)}})
	h2.handle(ctx, b)
	if h2.rejected("replay") != 1 {
		t.Fatal("a replay on a partition taken over was taken")
	}
}

// TestHubsOfAnotherCount: a hub's lease names its partition count, so a
// hub sees the leases of hubs configured with another.
func TestHubsOfAnotherCount(t *testing.T) {
	a, b := holderID("hub", 16), holderID("hub", 8)
	if got := otherCounts([]string{a, "", b, b}, 16); !slices.Equal(got, []string{b}) {
		t.Fatalf("other counts: %q", got)
	}
	if got := otherCounts([]string{a, ""}, 16); got != nil {
		t.Fatalf("other counts among hubs of one count: %q", got)
	}
}

// resyncsIdle reports whether h has no resync asked for, waiting or
// running, and its count of resyncs run (or failed) stays the same over
// 200 ms.
func resyncsIdle(h *runningHub) bool {
	count := func() float64 { return value(h.m.resyncs) + value(h.m.resyncFailed) }
	idle := func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.resync) == 0 && len(h.why) == 0 && !h.resyncing
	}
	c := count()
	if !idle() {
		return false
	}
	time.Sleep(200 * time.Millisecond)
	return idle() && count() == c
}
