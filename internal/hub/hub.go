// Package hub is the link's hub: it authenticates what nodes publish,
// refuses the rest (counted by reason), and writes each accepted change into
// the keyspaces of the other nodes that carry the torrent. It is the only
// writer of relayed peers. It resyncs nodes that join or rejoin, itself at
// start, and any node whose sequence shows a gap; it detects soft splits on
// its side by listening for its own heartbeats.
//
// Two hubs may run at once: every relay is idempotent (a change is applied
// only when it is at least as recent as what a node holds), so a second hub
// costs writes, never correctness. Run one, and a second for availability.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// Carrier says whether a node carries a torrent. In allowed-torrents mode
// (not built yet) a node carries only its own list; a relayed change for
// a torrent it does not carry is dropped for it, never stored.
type Carrier interface {
	Carries(ctx context.Context, node string, ih bittorrent.InfoHash) bool
}

// everything is the Carrier of nodes that carry every torrent.
type everything struct{}

func (everything) Carries(context.Context, string, bittorrent.InfoHash) bool { return true }

// Config of a hub.
type Config struct {
	Link link.Config
	// Name identifies this hub in its heartbeats.
	Name string
	// NodeTimeout: a node not heard from for this long is not relayed to
	// (its rejoin resyncs it).
	NodeTimeout time.Duration
	// Sharer, when set, copies torrents that nodes offer to nodes that
	// accept them, as part of every resync.
	Sharer Sharer
}

// Sharer copies offered torrents to accepting nodes (allowed.Sharer).
type Sharer interface {
	Share(ctx context.Context, nodes []string, refused func()) (int, error)
}

// Hub relays between nodes.
type Hub struct {
	cfg      Config
	up, down link.Key
	link     redis.UniversalClient
	relay    *redisstore.Relayer
	carrier  Carrier
	log      *slog.Logger
	m        metrics
	session  uint64

	mu       sync.Mutex
	nodes    map[string]*nodeState
	lastEcho time.Time
	resync   chan struct{}
	reset    chan struct{}
	resyncs  int64
}

type nodeState struct {
	Session       uint64    `json:"-"`
	LastSeq       uint64    `json:"last_seq"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Messages      int64     `json:"messages"`
	Relayed       int64     `json:"updates_relayed"`
	Rejected      int64     `json:"rejected"`
	LagMillis     int64     `json:"propagation_lag_ms"`
	started       int64     // Time of the session's first message
}

type metrics struct {
	rejected            *prometheus.CounterVec
	relayed, dropped    prometheus.Counter
	resyncs, splits     prometheus.Counter
	shared, refused     prometheus.Counter
	lag, resyncDuration prometheus.Histogram
}

// New returns a hub. It starts nothing.
func New(cfg Config, linkRDB redis.UniversalClient, relay *redisstore.Relayer, carrier Carrier, log *slog.Logger, reg prometheus.Registerer) (*Hub, error) {
	if !cfg.Link.Enabled() {
		return nil, errors.New("hub: TRACKER_LINK_PASSWORD is required")
	}
	if err := cfg.Link.Validate(); err != nil {
		return nil, err
	}
	if carrier == nil {
		carrier = everything{}
	}
	up, down := link.Keys(cfg.Link.Password)
	h := &Hub{
		cfg: cfg, up: up, down: down, link: linkRDB, relay: relay, carrier: carrier, log: log.With("hub", cfg.Name),
		session: uint64(time.Now().UnixNano()) | 1, nodes: map[string]*nodeState{},
		resync: make(chan struct{}, 1), reset: make(chan struct{}, 1),
	}
	h.m = metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_rejected_total", Help: "Messages refused, by reason."}, []string{"reason"}),
		relayed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_relayed_updates_total", Help: "Peer changes applied to other nodes' keyspaces."}),
		dropped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_dropped_updates_total", Help: "Peer changes not relayed to a node that does not carry the torrent."}),
		resyncs:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_resyncs_total", Help: "Resyncs run."}),
		splits:   prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_splits_total", Help: "Soft splits of the hub's own subscription, healed."}),
		shared:   prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_shared_torrents_total", Help: "Torrents copied to nodes that accept shared torrents."}),
		refused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_shared_refused_total", Help: "Offered torrents refused as invalid."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hub_propagation_seconds", Help: "From a node publishing a change to the hub having written it to the other nodes.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5}}),
		resyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hub_resync_seconds", Help: "Duration of resyncs.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	reg.MustRegister(h.m.rejected, h.m.relayed, h.m.dropped, h.m.resyncs, h.m.splits, h.m.shared, h.m.refused, h.m.lag, h.m.resyncDuration)
	return h, nil
}

// Run relays until ctx ends. It resyncs every known node at start.
func (h *Hub) Run(ctx context.Context) error {
	if err := h.loadNodes(ctx); err != nil {
		h.log.Warn("could not load known nodes", "err", err)
	}
	h.requestResync()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.heartbeat(ctx) }()
	go func() { defer wg.Done(); h.resyncLoop(ctx) }()
	h.listen(ctx)
	wg.Wait()
	return nil
}

// nodesKey persists the nodes the hub has seen, so a restarted hub knows
// whom to resync before they speak.
func (h *Hub) nodesKey() string { return h.cfg.Link.Channel + ":nodes" }

func (h *Hub) loadNodes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := h.link.HGetAll(ctx, h.nodesKey()).Result()
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, v := range m {
		var ms int64
		fmt.Sscan(v, &ms)
		if redisstore.ValidName("node", name) == nil {
			h.nodes[name] = &nodeState{LastHeartbeat: time.UnixMilli(ms)}
		}
	}
	return nil
}

func (h *Hub) listen(ctx context.Context) {
	for ctx.Err() == nil {
		ps := link.Subscribe(ctx, h.link, func(err error) { h.log.Warn("hub subscribe failed", "err", err) },
			h.cfg.Link.UpChannel(), h.cfg.Link.DownChannel())
		if ps == nil {
			return
		}
		h.mu.Lock()
		h.lastEcho = time.Now()
		h.mu.Unlock()
		reason := h.receive(ctx, ps)
		ps.Close()
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("hub link re-established", "reason", reason)
		// Whatever flowed while we were deaf is lost: resync.
		h.requestResync()
	}
}

func (h *Hub) receive(ctx context.Context, ps *redis.PubSub) string {
	for {
		select {
		case <-h.reset:
			return "reset by operator"
		default:
		}
		msg, err := ps.ReceiveTimeout(ctx, h.cfg.Link.Heartbeat)
		if ctx.Err() != nil {
			return "stopping"
		}
		if err != nil {
			var ne interface{ Timeout() bool }
			if !errors.As(err, &ne) || !ne.Timeout() {
				return "subscription error: " + err.Error()
			}
		}
		if m, ok := msg.(*redis.Message); ok {
			// Anything arriving proves the subscription carries messages;
			// under a backlog our own heartbeat may be queued behind
			// updates, and that is no split.
			h.mu.Lock()
			h.lastEcho = time.Now()
			h.mu.Unlock()
			if m.Channel != h.cfg.Link.DownChannel() {
				h.handle(ctx, []byte(m.Payload))
			}
		}
		h.mu.Lock()
		// The hub hears its own heartbeats on the down channel, so a healthy
		// subscription never stays silent for three of them.
		silent := time.Since(h.lastEcho) > 3*h.cfg.Link.Heartbeat
		h.mu.Unlock()
		if silent {
			h.m.splits.Inc()
			return "soft split: own heartbeats stopped arriving"
		}
	}
}

func (h *Hub) reject(reason string, node *nodeState) {
	h.m.rejected.WithLabelValues(reason).Inc()
	if node != nil {
		node.Rejected++
	}
}

// handle authenticates one message from a node and acts on it.
func (h *Hub) handle(ctx context.Context, b []byte) {
	m, err := link.Decode(h.up, b)
	if err != nil {
		h.reject(link.Reason(err), nil)
		return
	}
	if m.Kind == link.KindHubHeartbeat || redisstore.ValidName("node", m.Node) != nil {
		h.reject("malformed", nil)
		return
	}
	now := time.Now()
	if d := now.UnixMilli() - m.Time; d > h.cfg.Link.MaxSkew.Milliseconds() || -d > h.cfg.Link.MaxSkew.Milliseconds() {
		h.reject("stale", nil)
		return
	}
	h.mu.Lock()
	st := h.nodes[m.Node]
	if st == nil {
		st = &nodeState{}
		h.nodes[m.Node] = st
	}
	joined, gap := false, false
	switch {
	case m.Session == st.Session:
		if m.Seq <= st.LastSeq {
			h.mu.Unlock()
			h.reject("replay", st)
			return
		}
		gap = m.Seq > st.LastSeq+1
	case m.Time < st.started:
		// An older session of this node, after a newer one spoke: a replay.
		h.mu.Unlock()
		h.reject("replay", st)
		return
	default:
		st.Session, st.started, joined = m.Session, m.Time, true
		gap = m.Seq != 1
	}
	st.LastSeq = m.Seq
	st.LastHeartbeat = now
	st.Messages++
	h.mu.Unlock()

	if joined || gap || m.Kind == link.KindHello {
		if f, ok := h.carrier.(interface{ Forget(string) }); ok {
			f.Forget(m.Node) // a hello may mean its carried torrents changed
		}
		h.log.Info("node (re)joined or lost messages: resync", "node", m.Node, "joined", joined, "gap", gap, "kind", m.Kind)
		h.remember(ctx, m.Node, now)
		h.requestResync()
	}
	if m.Kind == link.KindUpdates && len(m.Changes) > 0 {
		n := h.relayChanges(ctx, m.Node, m.Changes)
		lag := time.Since(time.UnixMilli(m.Time))
		h.m.lag.Observe(lag.Seconds())
		h.mu.Lock()
		st.Relayed += int64(n)
		st.LagMillis = lag.Milliseconds()
		h.mu.Unlock()
	}
}

func (h *Hub) remember(ctx context.Context, node string, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := h.link.HSet(ctx, h.nodesKey(), node, now.UnixMilli()).Err(); err != nil {
		h.log.Warn("could not record node", "node", node, "err", err)
	}
}

// targets returns the nodes to relay to: every live node but origin.
func (h *Hub) targets(origin string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.nodes))
	for name, st := range h.nodes {
		if name != origin && time.Since(st.LastHeartbeat) < h.cfg.NodeTimeout {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// relayChanges writes changes from origin into every other live node that
// carries their torrent, in one pipeline.
func (h *Hub) relayChanges(ctx context.Context, origin string, changes []bittorrent.PeerChange) int {
	byHash := map[bittorrent.InfoHash][]bittorrent.PeerChange{}
	for _, c := range changes {
		byHash[c.InfoHash] = append(byHash[c.InfoHash], c)
	}
	var ts []redisstore.Target
	for _, node := range h.targets(origin) {
		for ih, cs := range byHash {
			if !h.carrier.Carries(ctx, node, ih) {
				h.m.dropped.Add(float64(len(cs)))
				continue
			}
			ts = append(ts, redisstore.Target{Node: node, Changes: cs})
		}
	}
	n, err := h.relay.Apply(ctx, ts)
	if err != nil {
		h.log.Error("relay failed", "origin", origin, "err", err)
		h.requestResync() // what was not written, the resync writes
	}
	h.m.relayed.Add(float64(n))
	return n
}

func (h *Hub) heartbeat(ctx context.Context) {
	t := time.NewTicker(h.cfg.Link.Heartbeat)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq++
		b, err := link.Encode(h.down, &link.Message{Kind: link.KindHubHeartbeat, Node: h.cfg.Name, Session: h.session, Seq: seq, Time: time.Now().UnixMilli()})
		if err != nil {
			h.log.Error("encode heartbeat", "err", err)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, h.cfg.Link.Heartbeat)
		if err := h.link.Publish(pctx, h.cfg.Link.DownChannel(), b).Err(); err != nil && ctx.Err() == nil {
			h.log.Warn("hub heartbeat failed", "err", err)
		}
		cancel()
	}
}

func (h *Hub) requestResync() {
	select {
	case h.resync <- struct{}{}:
	default: // one is pending already; it will see everything
	}
}

// Reset re-establishes the hub's subscription and resyncs every node.
func (h *Hub) Reset() {
	select {
	case h.reset <- struct{}{}:
	default:
	}
	h.requestResync()
}

func (h *Hub) resyncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.resync:
		}
		start := time.Now()
		n, err := h.Resync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.log.Error("resync failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			h.requestResync()
			continue
		}
		h.m.resyncs.Inc()
		h.m.resyncDuration.Observe(time.Since(start).Seconds())
		h.mu.Lock()
		h.resyncs++
		h.mu.Unlock()
		h.log.Info("resync done", "changes_applied", n, "took", time.Since(start))
	}
}

// resyncBatch is how many torrents one resync step reads and writes.
const resyncBatch = 256

// Resync brings every live node to the union of all live nodes' current
// peers for the torrents it carries: for each torrent in any node's swarm
// index, read every node's live peers, and apply them all to every node
// (applying keeps the most recent of each peer, so it only ever adds what a
// node lacks or refreshes what it holds older). Peers that stopped while
// messages were lost are not resurrected for long: they expire by time.
func (h *Hub) Resync(ctx context.Context) (int, error) {
	nodes := h.targets("")
	if len(nodes) < 2 {
		return 0, nil
	}
	if h.cfg.Sharer != nil {
		n, err := h.cfg.Sharer.Share(ctx, nodes, h.m.refused.Inc)
		h.m.shared.Add(float64(n))
		if err != nil {
			return 0, err
		}
	}
	seen := map[bittorrent.InfoHash]bool{}
	var torrents []bittorrent.InfoHash
	for _, n := range nodes {
		ihs, err := h.relay.Indexed(ctx, n)
		if err != nil {
			return 0, err
		}
		for _, ih := range ihs {
			if !seen[ih] {
				seen[ih] = true
				torrents = append(torrents, ih)
			}
		}
	}
	applied := 0
	for start := 0; start < len(torrents); start += resyncBatch {
		batch := torrents[start:min(start+resyncBatch, len(torrents))]
		union := make([]map[string]bittorrent.PeerChange, len(batch))
		for i := range union {
			union[i] = map[string]bittorrent.PeerChange{}
		}
		for _, n := range nodes {
			swarms, err := h.relay.Swarms(ctx, n, batch)
			if err != nil {
				return applied, err
			}
			for i, cs := range swarms {
				for _, c := range cs {
					if old, ok := union[i][c.Peer]; !ok || c.Seen > old.Seen {
						union[i][c.Peer] = c
					}
				}
			}
		}
		var ts []redisstore.Target
		for _, n := range nodes {
			for i, ih := range batch {
				if len(union[i]) == 0 {
					continue
				}
				if !h.carrier.Carries(ctx, n, ih) {
					continue
				}
				cs := make([]bittorrent.PeerChange, 0, len(union[i]))
				for _, c := range union[i] {
					cs = append(cs, c)
				}
				ts = append(ts, redisstore.Target{Node: n, Changes: cs})
			}
		}
		n, err := h.relay.Apply(ctx, ts)
		applied += n
		if err != nil {
			return applied, err
		}
	}
	return applied, nil
}

// Status is the hub's JSON status.
type Status struct {
	Hub     string                `json:"hub"`
	Resyncs int64                 `json:"resyncs"`
	Nodes   map[string]nodeStatus `json:"nodes"`
}

type nodeStatus struct {
	nodeState
	Live bool `json:"live"`
}

// Status returns the hub's view of the nodes.
func (h *Hub) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Status{Hub: h.cfg.Name, Resyncs: h.resyncs, Nodes: map[string]nodeStatus{}}
	for name, st := range h.nodes {
		s.Nodes[name] = nodeStatus{nodeState: *st, Live: time.Since(st.LastHeartbeat) < h.cfg.NodeTimeout}
	}
	return s
}
