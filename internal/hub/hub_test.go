package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

const password = "a link password of the tests"

// fakeRelayer records what the hub relays, and holds what each node's
// keyspace holds for resyncs.
type fakeRelayer struct {
	mu      sync.Mutex
	applied map[string]int                                             // node -> changes written
	writes  map[string]map[bittorrent.InfoHash][]bittorrent.PeerChange // node -> swarm -> changes written
	holds   map[string]map[bittorrent.InfoHash][]bittorrent.PeerChange // node -> swarm -> live peers
}

func (f *fakeRelayer) Apply(_ context.Context, ts []redisstore.Target) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range ts {
		f.applied[t.Node] += len(t.Changes)
		n += len(t.Changes)
		if f.writes[t.Node] == nil {
			f.writes[t.Node] = map[bittorrent.InfoHash][]bittorrent.PeerChange{}
		}
		for _, c := range t.Changes {
			f.writes[t.Node][c.InfoHash] = append(f.writes[t.Node][c.InfoHash], c)
		}
	}
	return n, nil
}

func (f *fakeRelayer) Indexed(_ context.Context, node string, limit int, parts func(int) bool) ([]bittorrent.InfoHash, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bittorrent.InfoHash
	for ih := range f.holds[node] {
		if limit > 0 && len(out) == limit {
			break
		}
		if parts == nil || parts(int(ih[0])) { // as the index's parts hold them
			out = append(out, ih)
		}
	}
	return out, 0, nil
}

func (f *fakeRelayer) Swarms(_ context.Context, node string, hs []bittorrent.InfoHash, limit int) ([][]bittorrent.PeerChange, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]bittorrent.PeerChange, len(hs))
	for i, ih := range hs {
		cs := f.holds[node][ih]
		if limit > 0 && len(cs) > 2*limit { // peers and stops: limit each
			cs = cs[:2*limit]
		}
		out[i] = cs
	}
	return out, 0, nil
}

// fakeCarrier says which node carries which torrents; nodes it has no
// list for carry everything.
type fakeCarrier struct {
	lists  map[string]map[bittorrent.InfoHash]bool
	forgot atomic.Int64
}

func (c *fakeCarrier) Carries(_ context.Context, node string, ih bittorrent.InfoHash) bool {
	l, ok := c.lists[node]
	return !ok || l[ih]
}

func (c *fakeCarrier) Listed(_ context.Context, node string, ih bittorrent.InfoHash) bool {
	l, ok := c.lists[node]
	return ok && l[ih]
}

func (c *fakeCarrier) Forget(string) { c.forgot.Add(1) }

func (f *fakeRelayer) to(node string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[node]
}

var channelSeq atomic.Int64

// testHub is a hub on a real Redis (its process registry) with a fake
// relayer; tests feed it messages directly, as its subscription would.
type testHub struct {
	*Hub
	relay *fakeRelayer
	reg   *prometheus.Registry
}

// testMaster derives the network's master key once per test binary
// (argon2id is slow).
var testMaster = sync.OnceValue(func() link.Master { return link.NewMaster(password) })

// nodeKey is a node's key (an HMAC of the master key: cheap).
func nodeKey(node string) link.Key { return testMaster().NodeKey(node) }

func newTestHub(t *testing.T, channel string) *testHub { return newTestHubWith(t, channel, nil) }

func newTestHubWith(t *testing.T, channel string, carrier Carrier) *testHub {
	t.Helper()
	relay := &fakeRelayer{applied: map[string]int{}, writes: map[string]map[bittorrent.InfoHash][]bittorrent.PeerChange{},
		holds: map[string]map[bittorrent.InfoHash][]bittorrent.PeerChange{}}
	h := newTestHubOn(t, channel, testkit.SharedRedis(t).Client(t), relay, carrier)
	h.relay = relay
	return h
}

// newTestHubOn is a hub of one member on rdb, with relay and carrier.
func newTestHubOn(t *testing.T, channel string, rdb redis.UniversalClient, relay Relayer, carrier Carrier) *testHub {
	t.Helper()
	cfg := Config{
		Link:        link.Config{Password: password, Channel: channel, Heartbeat: 100 * time.Millisecond, Flush: time.Millisecond, Queue: 16, MaxSkew: 5 * time.Second},
		Name:        "hub-test",
		NodeTimeout: 10 * time.Second,
	}
	reg := prometheus.NewRegistry()
	h, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SetMembers([]Member{{Name: "local", Link: redisstore.NewLinkConn(rdb), Relay: relay, Carrier: carrier}}); err != nil {
		t.Fatal(err)
	}
	h.ownAll()
	th := &testHub{Hub: h, reg: reg}
	t.Cleanup(func() { th.SetMembers(nil) })
	if err := h.loadProcs(context.Background(), th.only()); err != nil {
		t.Fatal(err)
	}
	return th
}

// only is the hub's one member.
func (h *testHub) only() *member {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.members["local"]
}

// handle takes a message as the member's subscription would, and waits
// until what it relays is written.
func (h *testHub) handle(ctx context.Context, b []byte) {
	h.Hub.handle(ctx, h.only(), b)
	h.flush()
}

func (h *testHub) persist(ctx context.Context) { h.Hub.persist(ctx, h.only()) }
func (h *testHub) forget(ctx context.Context)  { h.Hub.forget(ctx, h.only()) }
func (h *testHub) overdueGaps(now time.Time)   { h.Hub.overdueGaps(h.only(), now) }
func (h *testHub) registry() ([]string, error) {
	all, err := h.only().procs.All(context.Background())
	return slices.Collect(maps.Keys(all)), err
}

func newChannel() string { return fmt.Sprintf("hubtest%d", channelSeq.Add(1)) }

// proc is a node process as the hub hears it.
type proc struct {
	node    string
	session uint64
	seq     uint64
	clock   time.Duration // how far this process's clock is off
}

func (p *proc) msg(t *testing.T, h *testHub, kind link.Kind, changes ...bittorrent.PeerChange) []byte {
	t.Helper()
	p.seq++
	return p.encode(t, h, kind, p.seq, changes...)
}

func (p *proc) encode(t *testing.T, h *testHub, kind link.Kind, seq uint64, changes ...bittorrent.PeerChange) []byte {
	t.Helper()
	b, err := link.EncodeUp(nodeKey(p.node), &link.Message{Kind: kind, Node: p.node, Session: p.session, Seq: seq, Time: p.now().UnixMilli(), Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (p *proc) now() time.Time { return time.Now().Add(p.clock) }

func (p *proc) change(i int) bittorrent.PeerChange {
	peer := bittorrent.Peer{Addr: netipPort(i)}
	return bittorrent.PeerChange{InfoHash: bittorrent.InfoHash{byte(i)}, Op: bittorrent.OpLeecher, Seen: p.now().UnixMilli(), Peer: string(peer.AppendBinary(nil, false))}
}

func (h *testHub) rejected(reason string) float64 { return value(h.m.rejected.WithLabelValues(reason)) }

func (h *testHub) resyncRequests(reason string) float64 {
	return value(h.m.resyncReq.WithLabelValues(reason))
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// TestReplicas: two processes of one node id, clocks 2 s apart, publishing
// interleaved: nothing is refused, every change is relayed, and each
// process start asks for one resync, nothing more.
func TestReplicas(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx := context.Background()
	alpha := &proc{node: "alpha", session: 1}
	h.handle(ctx, alpha.msg(t, h, link.KindHello))
	a := &proc{node: "beta", session: 100, clock: -time.Second}
	b := &proc{node: "beta", session: 200, clock: time.Second}
	h.handle(ctx, a.msg(t, h, link.KindHello))
	h.handle(ctx, b.msg(t, h, link.KindHello))
	const rounds = 300
	for i := 0; i < rounds; i++ {
		h.handle(ctx, a.msg(t, h, link.KindUpdates, a.change(i)))
		h.handle(ctx, b.msg(t, h, link.KindUpdates, b.change(i)))
		if i%50 == 0 {
			h.handle(ctx, a.msg(t, h, link.KindHeartbeat))
			h.handle(ctx, b.msg(t, h, link.KindHeartbeat))
		}
	}
	for _, reason := range []string{"replay", "stale", "bad_seen", "seq_jump", "bad_mac", "malformed"} {
		if n := h.rejected(reason); n != 0 {
			t.Errorf("%v messages refused as %s", n, reason)
		}
	}
	if got := h.relay.to("alpha"); got != 2*rounds {
		t.Fatalf("%d changes relayed to alpha, want %d", got, 2*rounds)
	}
	if got := h.relay.to("beta"); got != 0 {
		t.Fatalf("%d of beta's own changes relayed back to it", got)
	}
	if j, g := h.resyncRequests("join"), h.resyncRequests("gap"); j != 3 || g != 0 {
		t.Fatalf("resyncs asked for: %v joins (want 3: alpha and beta's two processes), %v gaps", j, g)
	}
	st := h.Status()
	if n := st.Nodes["beta"]; !n.Live || len(n.Processes) != 2 || n.Messages != 2*(1+rounds+rounds/50) {
		t.Fatalf("beta in the status: %+v", n)
	}
}

func TestReplayGapAndBounds(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx := context.Background()
	alpha := &proc{node: "alpha", session: 1}
	h.handle(ctx, alpha.msg(t, h, link.KindHello))
	p := &proc{node: "beta", session: 7}
	h.handle(ctx, p.msg(t, h, link.KindHello))
	captured := p.msg(t, h, link.KindUpdates, p.change(1))
	h.handle(ctx, captured)
	h.handle(ctx, captured)
	if h.rejected("replay") != 1 || h.relay.to("alpha") != 1 {
		t.Fatalf("replay: %v refused, %d relayed", h.rejected("replay"), h.relay.to("alpha"))
	}
	// Reordered messages: the later one is taken at once, the earlier
	// ones when they arrive (once), and no resync is asked for.
	late := []([]byte){p.msg(t, h, link.KindUpdates, p.change(2)), p.msg(t, h, link.KindHeartbeat)}
	h.handle(ctx, p.msg(t, h, link.KindUpdates, p.change(2)))
	h.handle(ctx, late[1])
	h.handle(ctx, late[0])
	h.handle(ctx, late[0])
	if h.resyncRequests("gap") != 0 || h.relay.to("alpha") != 3 || value(h.m.late) != 2 || h.rejected("replay") != 2 {
		t.Fatalf("reordered: %v gaps, %d relayed, %v late, %v replays", h.resyncRequests("gap"), h.relay.to("alpha"), value(h.m.late), h.rejected("replay"))
	}
	// A number still missing after a heartbeat is a gap: a resync, and
	// the message that skipped it was still taken. The missing one,
	// arriving after that, is refused (the resync covered it).
	missing := p.msg(t, h, link.KindHeartbeat)
	h.handle(ctx, p.msg(t, h, link.KindUpdates, p.change(2)))
	if h.resyncRequests("gap") != 0 || h.relay.to("alpha") != 4 {
		t.Fatal("a hole was taken for a gap at once, or its message dropped")
	}
	h.overdueGaps(time.Now().Add(h.cfg.Link.Heartbeat + time.Millisecond))
	if h.resyncRequests("gap") != 1 {
		t.Fatal("overdue hole not resynced")
	}
	h.handle(ctx, missing)
	if h.rejected("replay") != 3 {
		t.Fatal("a number given up was taken")
	}
	// Numbers pushed out of the window while missing are a gap at once.
	p.seq += ReorderWindow + 1
	h.handle(ctx, p.msg(t, h, link.KindUpdates, p.change(2)))
	if h.resyncRequests("gap") != 2 || h.relay.to("alpha") != 5 {
		t.Fatal("a jump past the window not resynced, or its message dropped")
	}
	// A change may not claim to be seen far from its message's time.
	for _, seen := range []time.Duration{10 * 365 * 24 * time.Hour, 6 * time.Second, -6 * time.Second, -365 * 24 * time.Hour} {
		c := p.change(3)
		c.Seen = time.Now().Add(seen).UnixMilli()
		h.handle(ctx, p.msg(t, h, link.KindUpdates, c))
	}
	if h.rejected("bad_seen") != 4 || h.relay.to("alpha") != 5 {
		t.Fatalf("changes seen out of bounds: %v refused, %d relayed", h.rejected("bad_seen"), h.relay.to("alpha"))
	}
	// A huge sequence number is refused; the process's real next message
	// is still taken.
	h.handle(ctx, p.encode(t, h, link.KindHeartbeat, math.MaxUint64))
	h.handle(ctx, (&proc{node: "gamma", session: 9}).encode(t, h, link.KindHello, math.MaxUint64))
	h.handle(ctx, p.msg(t, h, link.KindUpdates, p.change(4)))
	if h.rejected("seq_jump") != 2 || h.relay.to("alpha") != 6 {
		t.Fatalf("huge sequence numbers: %v refused, %d relayed", h.rejected("seq_jump"), h.relay.to("alpha"))
	}
	if _, ok := h.Status().Nodes["gamma"]; ok {
		t.Fatal("a refused process was registered")
	}
}

// TestReplayAfterRestart: a hub started on the same Redis knows every
// process's last sequence number: a message captured before the restart
// is refused after it.
func TestReplayAfterRestart(t *testing.T) {
	channel := newChannel()
	ctx := context.Background()
	h := newTestHub(t, channel)
	p := &proc{node: "beta", session: 42}
	h.handle(ctx, p.msg(t, h, link.KindHello))
	captured := p.msg(t, h, link.KindUpdates, p.change(1))
	h.handle(ctx, captured)
	h.persist(ctx) // once per heartbeat, and at a clean stop

	again := newTestHub(t, channel)
	if st := again.Status().Nodes["beta"]; !st.Live || len(st.Processes) != 1 {
		t.Fatalf("restarted hub does not know beta: %+v", st)
	}
	again.handle(ctx, captured)
	if again.rejected("replay") != 1 {
		t.Fatal("a message captured before the restart was accepted after it")
	}
	again.handle(ctx, p.msg(t, h, link.KindUpdates, p.change(2)))
	if again.rejected("replay") != 1 || again.resyncRequests("join") != 0 {
		t.Fatal("the process's next message was refused, or taken for a new process")
	}
}

// TestForgetSilentProcesses: a process not heard from for the node timeout
// is dropped from memory and from Redis; a replay of its messages is too
// old to pass.
func TestForgetSilentProcesses(t *testing.T) {
	channel := newChannel()
	ctx := context.Background()
	h := newTestHub(t, channel)
	p := &proc{node: "beta", session: 5}
	h.handle(ctx, p.msg(t, h, link.KindHello))
	q := &proc{node: "beta", session: 6}
	h.handle(ctx, q.msg(t, h, link.KindHello))
	h.persist(ctx)
	h.mu.Lock()
	st := h.proc(procKey{"beta", 5})
	st.LastHeartbeat = time.Now().Add(-h.cfg.NodeTimeout - time.Second)
	st.claimed = st.LastHeartbeat.UnixMilli()
	h.mu.Unlock()
	h.forget(ctx)
	if n := h.Status().Nodes["beta"]; len(n.Processes) != 1 || !n.Live {
		t.Fatalf("after forgetting one of two processes: %+v", n)
	}
	fields, err := h.registry()
	if err != nil || len(fields) != 1 || fields[0] != (procKey{"beta", 6}).field() {
		t.Fatalf("registry in Redis: %v %v", fields, err)
	}
	if len(h.live("")) != 1 {
		t.Fatal("beta is no longer a target while one process lives")
	}
	// Anything the forgotten process sent is older than the skew allows.
	old := &proc{node: "beta", session: 5, seq: p.seq, clock: -h.cfg.NodeTimeout}
	h.handle(ctx, old.msg(t, h, link.KindHeartbeat))
	if h.rejected("stale") != 1 || len(h.Status().Nodes["beta"].Processes) != 1 {
		t.Fatal("a message of a forgotten process was taken")
	}
}

func netipPort(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1000+i))
}

// TestResyncUnionAndCarriers: a resync gives every live node the union of
// all live nodes' peers of each torrent (the newest time of each peer), and
// skips nodes that do not carry a torrent; relays skip them too, and a
// hello makes the carrier forget what it knew of the node.
func TestResyncUnionAndCarriers(t *testing.T) {
	ih1, ih2 := bittorrent.InfoHash{1}, bittorrent.InfoHash{2}
	carrier := &fakeCarrier{lists: map[string]map[bittorrent.InfoHash]bool{"c": {ih1: true}}}
	h := newTestHubWith(t, newChannel(), carrier)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		h.handle(ctx, (&proc{node: n, session: 1}).msg(t, h, link.KindHello))
	}
	if carrier.forgot.Load() != 3 {
		t.Fatalf("carrier forgot %d times, want once per hello", carrier.forgot.Load())
	}
	peer := func(i int, seen int64, ih bittorrent.InfoHash) bittorrent.PeerChange {
		return bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: seen, Peer: string(bittorrent.Peer{Addr: netipPort(i)}.AppendBinary(nil, false))}
	}
	h.relay.holds["a"] = map[bittorrent.InfoHash][]bittorrent.PeerChange{ih1: {peer(1, 100, ih1), peer(2, 200, ih1)}, ih2: {peer(9, 100, ih2)}}
	h.relay.holds["b"] = map[bittorrent.InfoHash][]bittorrent.PeerChange{ih1: {peer(2, 300, ih1), peer(3, 100, ih1)}}
	if _, err := h.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{peer(1, 0, ih1).Peer: 100, peer(2, 0, ih1).Peer: 300, peer(3, 0, ih1).Peer: 100}
	for _, n := range []string{"a", "b", "c"} {
		got := map[string]int64{}
		for _, c := range h.relay.writes[n][ih1] {
			got[c.Peer] = c.Seen
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s got %v of torrent 1, want the union %v", n, got, want)
		}
	}
	if len(h.relay.writes["c"][ih2]) != 0 || len(h.relay.writes["b"][ih2]) != 1 {
		t.Fatalf("torrent 2: c (not carrying) got %d, b got %d", len(h.relay.writes["c"][ih2]), len(h.relay.writes["b"][ih2]))
	}
	// A live relay skips c for torrent 2 too, and counts the drop.
	a := &proc{node: "a", session: 1, seq: 1}
	before := h.relay.to("c")
	h.handle(ctx, a.msg(t, h, link.KindUpdates, peer(5, time.Now().UnixMilli(), ih2)))
	if h.relay.to("c") != before || h.relay.to("b") == 0 || value(h.m.dropped) != 1 {
		t.Fatalf("relay of torrent 2: c got %d more, b %d, dropped %v", h.relay.to("c")-before, h.relay.to("b"), value(h.m.dropped))
	}
}

// TestResyncKeepsStopsStopped, on the real store: a peer stops at node a,
// and node b missed the stop (it holds an older copy). The resync removes
// the peer from b and never writes it back into a; a peer that announced
// again after its stop comes back everywhere.
func TestResyncKeepsStopsStopped(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	scfg, relay, stores := realStores(t, rdb, "a", "b")
	h := newTestHubOn(t, newChannel(), rdb, relay, nil)
	for _, n := range []string{"a", "b"} {
		h.handle(ctx, (&proc{node: n, session: 1}).msg(t, h, link.KindHello))
	}
	ih := bittorrent.InfoHash{7}
	announce := func(node string, port uint16, ev bittorrent.Event) bittorrent.PeerChange {
		t.Helper()
		p := bittorrent.Peer{Addr: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)}
		a, err := stores[node].Announce(ctx, &bittorrent.AnnounceRequest{InfoHash: ih, Peer: p, Left: 1, Event: ev}, 0)
		if err != nil {
			t.Fatal(err)
		}
		rdb.ZAdd(ctx, redisstore.IndexKey(scfg.Prefix, node, ih), redis.Z{Score: float64(a.Change.Seen), Member: string(ih[:])})
		return a.Change
	}
	gone, back := announce("a", 1, bittorrent.Started), announce("a", 2, bittorrent.Started)
	// b got both announces, then missed both stops.
	if _, err := relay.Apply(ctx, []redisstore.Target{{Node: "b", Changes: []bittorrent.PeerChange{gone, back}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	announce("a", 1, bittorrent.Stopped)
	announce("a", 2, bittorrent.Stopped)
	time.Sleep(2 * time.Millisecond)
	announce("a", 2, bittorrent.Started)
	if _, err := h.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		sc, err := stores[n].Scrape(ctx, []bittorrent.InfoHash{ih})
		if err != nil {
			t.Fatal(err)
		}
		if sc[0].Incomplete != 1 {
			t.Errorf("node %s holds %d leechers after the resync, want 1 (the stopped peer gone, the returned one there)", n, sc[0].Incomplete)
		}
	}
}

// TestReorderWindow: numbers delivered shuffled, each at most
// ReorderWindow-1 places from its own, are each taken once with no gap;
// every second delivery is refused; a hole is reported once it leaves
// the window.
func TestReorderWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 5000
	order := make([]uint64, n)
	for i := range order {
		order[i] = uint64(i + 2) // 1 is the join
	}
	// Each number is delayed by up to half the window: sorted by
	// position + delay, none moves more than that.
	delay := make(map[uint64]int, n)
	for i, seq := range order {
		delay[seq] = i + rng.IntN(ReorderWindow/2)
	}
	sort.SliceStable(order, func(a, b int) bool { return delay[order[a]] < delay[order[b]] })
	now := time.Now()
	st := &seqWindow{last: 1}
	took, late := map[uint64]bool{}, 0
	for _, seq := range order {
		switch {
		case seq > st.last:
			if st.advance(seq, now) {
				t.Fatalf("gap at %d", seq)
			}
		case !st.fill(st.last - seq):
			t.Fatalf("%d refused", seq)
		default:
			late++
		}
		took[seq] = true
	}
	if len(took) != n || st.missing != 0 || !st.holeSince.IsZero() || late < n/4 {
		t.Fatalf("took %d of %d (%d late), missing %b", len(took), n, late, st.missing)
	}
	for _, seq := range order[n-ReorderWindow:] {
		if seq < st.last && st.fill(st.last-seq) {
			t.Fatalf("%d taken twice", seq)
		}
	}
	// A hole: seq+1 skipped; it leaves the window after ReorderWindow
	// more numbers, and not before.
	last := st.last
	st.advance(last+2, now)
	for s := last + 3; s < last+2+ReorderWindow; s++ {
		if st.advance(s, now) {
			t.Fatalf("gap reported at %d, while the hole is in the window", s)
		}
	}
	if !st.advance(last+2+ReorderWindow, now) {
		t.Fatal("a hole left the window unreported")
	}
}

// TestReorderedStopStaysStopped, on the real store: a node's start and
// stop of one peer reach the hub in the wrong order. Both are taken (the
// start as a late message) and the other node does not hold the peer.
func TestReorderedStopStaysStopped(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	_, relay, stores := realStores(t, rdb, "b")
	b := stores["b"]
	h := newTestHubOn(t, newChannel(), rdb, relay, nil)
	hub := h
	a := &proc{node: "a", session: 1}
	h.handle(ctx, a.msg(t, hub, link.KindHello))
	h.handle(ctx, (&proc{node: "b", session: 1}).msg(t, hub, link.KindHello))
	start := a.change(1)
	stop := start
	stop.Op, stop.Seen = bittorrent.OpStopped, start.Seen+1
	first, second := a.msg(t, hub, link.KindUpdates, start), a.msg(t, hub, link.KindUpdates, stop)
	h.handle(ctx, second)
	h.handle(ctx, first)
	if value(h.m.late) != 1 || value(h.m.rejected.WithLabelValues("replay")) != 0 {
		t.Fatalf("late %v, replays %v", value(h.m.late), value(h.m.rejected.WithLabelValues("replay")))
	}
	sc, err := b.Scrape(ctx, []bittorrent.InfoHash{start.InfoHash})
	if err != nil {
		t.Fatal(err)
	}
	if sc[0].Incomplete != 0 {
		t.Fatalf("node b holds the stopped peer after the reordered start: %+v", sc[0])
	}
}

// TestResyncHistory: each resync is remembered with the reasons asked for
// while it was pending, only the last HistoryLen are kept, and requests
// in quick succession never leave a resync without a reason (a request
// whose reason an already started resync took is served by it).
func TestResyncHistory(t *testing.T) {
	h := newTestHub(t, newChannel())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.requestResync("hello")
	h.requestResync("gap")
	done := make(chan struct{})
	go func() { h.resyncLoop(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor := func(n int) []ResyncRecord {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if r := h.Status().Recent; len(r) >= n {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d resyncs recorded: %+v", n, h.Status().Recent)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	r := waitFor(1)[0]
	if !slices.Equal(r.Reasons, []string{"gap", "hello"}) || r.Err != "" || r.Started.IsZero() {
		t.Fatalf("first resync recorded as %+v", r)
	}
	for i := range HistoryLen + 5 {
		h.requestResync("reset")
		waitFor(min(HistoryLen, 2+i))
	}
	got := h.Status().Recent
	if len(got) != HistoryLen || !slices.Equal(got[len(got)-1].Reasons, []string{"reset"}) {
		t.Fatalf("history %d long, last %+v", len(got), got[len(got)-1])
	}
	for _, r := range got {
		if len(r.Reasons) == 0 {
			t.Fatalf("a resync ran that nobody asked for: %+v", got)
		}
	}
}

// realStores returns, on rdb under a prefix of the test's own, the store
// configuration, a real relayer and a real store of each node.
func realStores(t *testing.T, rdb redis.UniversalClient, nodes ...string) (redisstore.Config, *redisstore.Relayer, map[string]*redisstore.Store) {
	t.Helper()
	scfg := redisstore.Config{Prefix: newChannel(), PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: 2 * time.Second}
	relay, err := redisstore.NewRelayer(rdb, scfg)
	if err != nil {
		t.Fatal(err)
	}
	stores := map[string]*redisstore.Store{}
	for _, n := range nodes {
		c := scfg
		c.NodeID = n
		if stores[n], err = redisstore.New(rdb, c); err != nil {
			t.Fatal(err)
		}
	}
	return scfg, relay, stores
}
