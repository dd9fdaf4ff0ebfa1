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
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/logsample"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// Carrier says whether a node carries a torrent. In allowed-torrents mode
// a node carries only its own list; a relayed change for a torrent it does
// not carry is dropped for it, never stored. Forget drops what the carrier
// knows of a node (its hello may mean its torrents changed).
type Carrier interface {
	Carries(ctx context.Context, node string, ih bittorrent.InfoHash) bool
	Forget(node string)
}

// everything is the Carrier of nodes that carry every torrent.
type everything struct{}

func (everything) Carries(context.Context, string, bittorrent.InfoHash) bool { return true }
func (everything) Forget(string)                                             {}

// Relayer writes relayed changes into nodes' keyspaces and reads them for
// resyncs (redisstore.Relayer).
type Relayer interface {
	Apply(ctx context.Context, targets []redisstore.Target) (int, error)
	Indexed(ctx context.Context, node string) ([]bittorrent.InfoHash, error)
	Swarms(ctx context.Context, node string, hashes []bittorrent.InfoHash) ([][]bittorrent.PeerChange, error)
}

var _ Relayer = (*redisstore.Relayer)(nil)

// MaxSeqRate bounds how fast a process's sequence numbers may advance: a
// message whose sequence number is more than MaxSeqRate per second (plus
// MaxSeqRate) past the last one accepted from that process is refused
// (seq_jump). A node spends one number per message and rotates its session
// when a publish fails, so a real node stays far below it; a forged huge
// number cannot make the process's real messages look like replays for
// longer than the forged jump divided by this rate.
const MaxSeqRate = 10000

// ReorderWindow is how many sequence numbers below a process's highest one
// the hub still accepts, once each, when they arrive late: messages of one
// process may be reordered on their way (two publishes on two connections,
// a Redis Cluster's bus), and a late message is applied, not refused, since
// applying is idempotent and keeps the newest of each peer. A number still
// missing after a heartbeat, or pushed out of the window, is a gap: the
// process is resynced.
const ReorderWindow = 64

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
	cfg     Config
	ep      *link.Endpoint // publishes heartbeats (Ed25519-signed), listens
	master  link.Master    // derives each node's key
	link    redis.UniversalClient
	relay   Relayer
	carrier Carrier
	log     *slog.Logger
	errLog  *logsample.Logger // relay failures: sampled
	m       metrics

	mu      sync.Mutex
	procs   map[procKey]*procState
	resync  chan struct{}
	resyncs int64
}

// A node id may be served by any number of processes (replicas), each with
// a session of its own: the hub keeps replay and gap state per process, so
// replicas never look like each other's replays, gaps or rejoins. A node is
// live while any of its processes is.
type procKey struct {
	node    string
	session uint64
}

// procState is what the hub knows of one process. Started, last sequence
// and last time heard are kept in Redis too (procsKey), written once per
// heartbeat, so that a restarted hub still refuses a replay of what a
// process sent before the restart. What was accepted in the last heartbeat
// before a crash may be accepted once more after it: relaying is
// idempotent (the newest time of a peer wins, a stop leaves a tombstone, a
// completion counts once per node), so that changes nothing.
type procState struct {
	dirty bool // changed since last written to Redis
	// missing has bit i set while sequence number LastSeq-1-i has not
	// arrived (ReorderWindow bits); holeSince is when the oldest of those
	// went missing.
	missing       uint64
	holeSince     time.Time
	LastSeq       uint64    `json:"last_seq"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Started       time.Time `json:"started"`
	Messages      int64     `json:"messages"`
	Relayed       int64     `json:"updates_relayed"`
	Rejected      int64     `json:"rejected"`
	LagMillis     int64     `json:"propagation_lag_ms"`
}

type metrics struct {
	rejected, resyncReq *prometheus.CounterVec
	relayed, dropped    prometheus.Counter
	late, resyncFailed  prometheus.Counter
	resyncs, splits     prometheus.Counter
	shared, refused     prometheus.Counter
	lag, resyncDuration prometheus.Histogram
}

// New returns a hub. It starts nothing.
func New(cfg Config, linkRDB redis.UniversalClient, relay Relayer, carrier Carrier, log *slog.Logger, reg prometheus.Registerer) (*Hub, error) {
	if cfg.Link.Password == "" {
		return nil, errors.New("hub: TRACKER_LINK_PASSWORD (the network secret) is required")
	}
	if err := cfg.Link.Validate(); err != nil {
		return nil, err
	}
	if cfg.NodeTimeout <= cfg.Link.MaxSkew {
		// A forgotten process's messages must be too old to be accepted,
		// or a replay of one would pass as a new process.
		return nil, fmt.Errorf("TRACKER_HUB_NODE_TIMEOUT (%s) must be longer than TRACKER_LINK_MAX_SKEW (%s)", cfg.NodeTimeout, cfg.Link.MaxSkew)
	}
	if carrier == nil {
		carrier = everything{}
	}
	master := link.NewMaster(cfg.Link.Password)
	priv, _ := master.HubKeys()
	log = log.With("hub", cfg.Name)
	sign := func(m *link.Message) ([]byte, error) { return link.EncodeDown(priv, m) }
	h := &Hub{
		cfg: cfg, ep: link.NewEndpoint(cfg.Link, cfg.Name, linkRDB, sign), master: master,
		link: linkRDB, relay: relay, carrier: carrier, log: log, errLog: logsample.New(log, 10*time.Second),
		procs: map[procKey]*procState{}, resync: make(chan struct{}, 1),
	}
	h.m = metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_rejected_total", Help: "Messages refused, by reason."}, []string{"reason"}),
		resyncReq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_resync_requests_total",
			Help: "Why resyncs were asked for: start, join (a new process), hello, gap, relay_failed, resubscribed, reset, retry. Requests while one is pending share it."}, []string{"reason"}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_relayed_updates_total", Help: "Peer changes applied to other nodes' keyspaces."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_dropped_updates_total", Help: "Peer changes not relayed to a node that does not carry the torrent."}),
		late: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_late_messages_total",
			Help: "Messages that arrived after a later one of the same process (within the reorder window) and were applied."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_resyncs_total", Help: "Resyncs run."}),
		resyncFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_resync_failures_total",
			Help: "Resyncs that could not read or write everything (what was reachable was applied); each is retried a second later."}),
		splits:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_splits_total", Help: "Soft splits of the hub's own subscription, healed."}),
		shared:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_shared_torrents_total", Help: "Torrents copied to nodes that accept shared torrents."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_shared_refused_total", Help: "Offered torrents refused as invalid."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hub_propagation_seconds", Help: "From a node publishing a change to the hub having written it to the other nodes.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5}}),
		resyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hub_resync_seconds", Help: "Duration of resyncs.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	reg.MustRegister(h.m.rejected, h.m.resyncReq, h.m.relayed, h.m.dropped, h.m.late, h.m.resyncFailed, h.m.resyncs, h.m.splits, h.m.shared, h.m.refused, h.m.lag, h.m.resyncDuration)
	return h, nil
}

// Run relays until ctx ends. It resyncs every known node at start.
func (h *Hub) Run(ctx context.Context) error {
	if err := h.loadProcs(ctx); err != nil {
		h.log.Warn("could not load known processes", "err", err)
	}
	h.requestResync("start")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.heartbeat(ctx) }()
	go func() { defer wg.Done(); h.resyncLoop(ctx) }()
	h.listen(ctx)
	wg.Wait()
	return nil
}

// procsKey persists the processes the hub has heard, so that a restarted
// hub knows whom to resync before they speak, and refuses replays of what
// they sent before the restart: field "<node>/<session hex>", value
// "<started ms> <last seq> <last heard ms>".
func (h *Hub) procsKey() string {
	return redisstore.LinkProcsKey(h.cfg.Link.Channel, h.cfg.Link.Sharded)
}

func (k procKey) field() string { return fmt.Sprintf("%s/%016x", k.node, k.session) }

func (h *Hub) loadProcs(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := h.link.HGetAll(ctx, h.procsKey()).Result()
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var stale []string
	for field, v := range m {
		node, sess, ok := strings.Cut(field, "/")
		var session uint64
		var started, last int64
		var seq uint64
		_, err1 := fmt.Sscanf(sess, "%x", &session)
		_, err2 := fmt.Sscan(v, &started, &seq, &last)
		if !ok || err1 != nil || err2 != nil || redisstore.ValidName("node", node) != nil {
			stale = append(stale, field)
			continue
		}
		if time.Since(time.UnixMilli(last)) > h.cfg.NodeTimeout {
			stale = append(stale, field)
			continue
		}
		h.procs[procKey{node, session}] = &procState{LastSeq: seq, LastHeartbeat: time.UnixMilli(last), Started: time.UnixMilli(started)}
	}
	if len(stale) > 0 {
		return h.link.HDel(ctx, h.procsKey(), stale...).Err()
	}
	return nil
}

// forget drops processes not heard from for NodeTimeout, in memory and in
// Redis. Their messages are older than the allowed skew by then, so a
// replay of one is refused as stale, never taken for a new process.
func (h *Hub) forget(ctx context.Context) {
	h.mu.Lock()
	var gone []string
	for k, st := range h.procs {
		if time.Since(st.LastHeartbeat) > h.cfg.NodeTimeout {
			delete(h.procs, k)
			gone = append(gone, k.field())
		}
	}
	h.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := h.link.HDel(ctx, h.procsKey(), gone...).Err(); err != nil {
		h.log.Warn("could not forget silent processes", "err", err)
	}
}

// listen hands every node message to handle. The hub hears its own
// heartbeats on the down channel, and anything arriving proves the
// subscription carries messages (under a backlog its heartbeat may be
// queued behind updates, and that is no split), so the endpoint's soft
// split here means total silence; after any lost subscription, whatever
// flowed meanwhile is lost, so the hub resyncs.
func (h *Hub) listen(ctx context.Context) {
	h.ep.Listen(ctx, link.Listener{
		Handle: func(channel string, b []byte) {
			h.ep.Alive()
			if channel != h.cfg.Link.DownChannel() {
				h.handle(ctx, b)
				// Time spent on a message is not silence of the
				// subscription.
				h.ep.Alive()
			}
		},
		Down:       func(err error) { h.log.Warn("hub subscription failed", "err", err) },
		Subscribed: func(bool) {},
		Lost: func(reason string) {
			if strings.HasPrefix(reason, "soft split") {
				h.m.splits.Inc()
			}
			h.log.Warn("hub link re-established", "reason", reason)
			h.requestResync("resubscribed")
		},
	}, h.cfg.Link.UpChannel(), h.cfg.Link.DownChannel())
}

func (h *Hub) reject(reason string, st *procState) {
	h.m.rejected.WithLabelValues(reason).Inc()
	if st != nil {
		h.mu.Lock()
		st.Rejected++
		h.mu.Unlock()
	}
}

// handle authenticates one message from a node and acts on it.
func (h *Hub) handle(ctx context.Context, b []byte) {
	m, err := link.DecodeUp(b, h.nodeKey)
	if err != nil {
		h.reject(link.Reason(err), nil)
		return
	}
	if m.Kind == link.KindHubHeartbeat || redisstore.ValidName("node", m.Node) != nil {
		h.reject("malformed", nil)
		return
	}
	now := time.Now()
	if !h.ep.Fresh(m, now) {
		h.reject("stale", nil)
		return
	}
	skew := h.cfg.Link.MaxSkew.Milliseconds()
	// What a change may claim is bounded: it was seen at its origin within
	// the allowed skew of the message's own time, and never after it
	// beyond that skew, so no relayed peer outlives its lifetime.
	for _, c := range m.Changes {
		if c.Seen > m.Time+skew || c.Seen < m.Time-skew {
			h.reject("bad_seen", nil)
			return
		}
	}
	key := procKey{m.Node, m.Session}
	h.mu.Lock()
	st := h.procs[key]
	joined, gap := false, false
	switch {
	case st == nil:
		if m.Seq > MaxSeqRate {
			h.mu.Unlock()
			h.reject("seq_jump", nil)
			return
		}
		// Whatever the process sent before, the join's resync covers.
		st = &procState{Started: now, LastSeq: m.Seq}
		h.procs[key] = st
		joined = true
	case m.Seq <= st.LastSeq:
		if !st.fill(st.LastSeq - m.Seq) {
			h.mu.Unlock()
			h.reject("replay", st)
			return
		}
		h.m.late.Inc()
	case m.Seq-st.LastSeq > uint64(MaxSeqRate*(1+time.Since(st.LastHeartbeat).Seconds())):
		h.mu.Unlock()
		h.reject("seq_jump", st)
		return
	default:
		gap = st.advance(m.Seq, now)
	}
	gap = st.overdue(now, h.cfg.Link.Heartbeat) || gap
	st.LastHeartbeat = now
	st.Messages++
	st.dirty = true
	h.mu.Unlock()

	if reason := resyncReason(joined, gap, m.Kind); reason != "" {
		h.carrier.Forget(m.Node) // a hello may mean its carried torrents changed
		h.log.Info("resync", "reason", reason, "node", m.Node, "session", fmt.Sprintf("%016x", m.Session))
		h.requestResync(reason)
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

// overdueGaps resyncs processes whose missing sequence numbers did not
// arrive within a heartbeat (one that went silent after a hole included).
func (h *Hub) overdueGaps(now time.Time) {
	h.mu.Lock()
	var due []procKey
	for k, st := range h.procs {
		if st.overdue(now, h.cfg.Link.Heartbeat) {
			due = append(due, k)
		}
	}
	h.mu.Unlock()
	for _, k := range due {
		h.log.Info("resync", "reason", "gap", "node", k.node, "session", fmt.Sprintf("%016x", k.session))
		h.requestResync("gap")
	}
}

// advance takes seq, above LastSeq: the numbers skipped become missing.
// It reports a gap when numbers still missing fall out of the window.
func (st *procState) advance(seq uint64, now time.Time) (gap bool) {
	shift := seq - st.LastSeq // ≥ 1; the old LastSeq arrived, shift-1 were skipped
	st.LastSeq = seq
	skipped := ^uint64(0)
	if shift-1 < ReorderWindow {
		skipped = 1<<(shift-1) - 1
	}
	if shift >= ReorderWindow {
		gap = st.missing != 0 || shift-1 > ReorderWindow
		st.missing = skipped
	} else {
		gap = st.missing>>(ReorderWindow-shift) != 0
		st.missing = st.missing<<shift | skipped
	}
	if st.missing == 0 {
		st.holeSince = time.Time{}
	} else if st.holeSince.IsZero() {
		st.holeSince = now
	}
	return gap
}

// fill takes a late number, d below LastSeq: true if it was missing (it is
// not any more), false for a replay or a number beyond the window.
func (st *procState) fill(d uint64) bool {
	if d == 0 || d > ReorderWindow {
		return false
	}
	bit := uint64(1) << (d - 1)
	if st.missing&bit == 0 {
		return false
	}
	st.missing &^= bit
	if st.missing == 0 {
		st.holeSince = time.Time{}
	}
	return true
}

// overdue reports a gap when numbers have been missing for longer than
// wait; they are then given up (the resync covers them) and a late one is
// refused as a replay.
func (st *procState) overdue(now time.Time, wait time.Duration) bool {
	if st.missing == 0 || now.Sub(st.holeSince) <= wait {
		return false
	}
	st.missing, st.holeSince = 0, time.Time{}
	return true
}

// resyncReason says why a message asks for a resync, or "": a process
// that joined (its first message, whatever its kind), a hello of a known
// process, or a gap in its sequence.
func resyncReason(joined, gap bool, kind link.Kind) string {
	switch {
	case joined:
		return "join"
	case kind == link.KindHello:
		return "hello"
	case gap:
		return "gap"
	}
	return ""
}

// persist writes the state of the processes heard since the last call to
// Redis, in one command.
func (h *Hub) persist(ctx context.Context) {
	h.mu.Lock()
	fields := map[string]any{}
	for k, st := range h.procs {
		if st.dirty {
			fields[k.field()] = fmt.Sprintf("%d %d %d", st.Started.UnixMilli(), st.LastSeq, st.LastHeartbeat.UnixMilli())
			st.dirty = false
		}
	}
	h.mu.Unlock()
	if len(fields) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := h.link.HSet(ctx, h.procsKey(), fields).Err(); err != nil {
		h.log.Warn("could not record process states", "err", err)
		h.mu.Lock()
		for k, st := range h.procs {
			if _, ok := fields[k.field()]; ok {
				st.dirty = true
			}
		}
		h.mu.Unlock()
	}
}

// targets returns the nodes to relay to: every node with a live process,
// but origin.
func (h *Hub) targets(origin string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	live := map[string]bool{}
	for k, st := range h.procs {
		if k.node != origin && time.Since(st.LastHeartbeat) < h.cfg.NodeTimeout {
			live[k.node] = true
		}
	}
	out := make([]string, 0, len(live))
	for name := range live {
		out = append(out, name)
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
		h.errLog.Log(slog.LevelError, "relay failed", "origin", origin, "err", err)
		h.requestResync("relay_failed") // what was not written, the resync writes
	}
	h.m.relayed.Add(float64(n))
	return n
}

func (h *Hub) heartbeat(ctx context.Context) {
	t := time.NewTicker(h.cfg.Link.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.persist(context.WithoutCancel(ctx)) // what was heard last
			return
		case <-t.C:
		}
		h.persist(ctx)
		h.forget(ctx)
		h.overdueGaps(time.Now())
		pctx, cancel := context.WithTimeout(ctx, h.cfg.Link.Heartbeat)
		if err := h.ep.Publish(pctx, h.cfg.Link.DownChannel(), link.KindHubHeartbeat, nil); err != nil && ctx.Err() == nil {
			h.log.Warn("hub heartbeat failed", "err", err)
		}
		cancel()
	}
}

func (h *Hub) requestResync(reason string) {
	h.m.resyncReq.WithLabelValues(reason).Inc()
	select {
	case h.resync <- struct{}{}:
	default: // one is pending already; it will see everything
	}
}

// Reset re-establishes the hub's subscription and resyncs every node.
func (h *Hub) Reset() {
	h.ep.Reset()
	h.requestResync("reset")
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
			h.m.resyncFailed.Inc()
			h.errLog.Log(slog.LevelError, "resync incomplete; retrying in 1s", "changes_applied", n, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			h.requestResync("retry")
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
// index, read every node's live peers and stops, and apply the newest of
// each peer to every node (applying keeps the most recent of each peer, so
// it only ever adds what a node lacks, refreshes what it holds older, or
// removes what stopped since). A stop is remembered where it happened, so
// a peer that stopped while messages were lost is removed everywhere by
// the resync, never copied back from a node that missed the stop.
func (h *Hub) Resync(ctx context.Context) (int, error) {
	nodes := h.targets("")
	if len(nodes) < 2 {
		return 0, nil
	}
	// What cannot be read or written now (a Redis Cluster shard down, a
	// timeout) is skipped and the resync goes on with the rest; the first
	// error is returned, so the whole resync is retried.
	var firstErr error
	failed := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	if h.cfg.Sharer != nil {
		n, err := h.cfg.Sharer.Share(ctx, nodes, h.m.refused.Inc)
		h.m.shared.Add(float64(n))
		if err != nil {
			failed(err)
		}
	}
	seen := map[bittorrent.InfoHash]bool{}
	var torrents []bittorrent.InfoHash
	for _, n := range nodes {
		ihs, err := h.relay.Indexed(ctx, n)
		if err != nil {
			failed(err)
		}
		for _, ih := range ihs {
			if !seen[ih] {
				seen[ih] = true
				torrents = append(torrents, ih)
			}
		}
	}
	applied := 0
	for start := 0; start < len(torrents) && ctx.Err() == nil; start += resyncBatch {
		batch := torrents[start:min(start+resyncBatch, len(torrents))]
		union := make([]map[string]bittorrent.PeerChange, len(batch))
		for i := range union {
			union[i] = map[string]bittorrent.PeerChange{}
		}
		for _, n := range nodes {
			swarms, err := h.relay.Swarms(ctx, n, batch)
			if err != nil {
				failed(err)
			}
			for i, cs := range swarms {
				for _, c := range cs {
					// The newest of each peer wins; at the same
					// millisecond a stop does (as apply.lua has it).
					if old, ok := union[i][c.Peer]; !ok || c.Seen > old.Seen || c.Seen == old.Seen && c.Op == bittorrent.OpStopped {
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
			failed(err)
		}
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return applied, firstErr
}

// Status is the hub's JSON status.
type Status struct {
	Hub     string                `json:"hub"`
	Resyncs int64                 `json:"resyncs"`
	Nodes   map[string]nodeStatus `json:"nodes"`
}

// nodeStatus is one node id: live while any of its processes is, with
// each process (replica) by session.
type nodeStatus struct {
	Live          bool                     `json:"live"`
	LastHeartbeat time.Time                `json:"last_heartbeat"`
	Messages      int64                    `json:"messages"`
	Relayed       int64                    `json:"updates_relayed"`
	Rejected      int64                    `json:"rejected"`
	Processes     map[string]processStatus `json:"processes"`
}

type processStatus struct {
	procState
	Live bool `json:"live"`
}

// Status returns the hub's view of the nodes and their processes.
func (h *Hub) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Status{Hub: h.cfg.Name, Resyncs: h.resyncs, Nodes: map[string]nodeStatus{}}
	for k, st := range h.procs {
		n := s.Nodes[k.node]
		if n.Processes == nil {
			n.Processes = map[string]processStatus{}
		}
		live := time.Since(st.LastHeartbeat) < h.cfg.NodeTimeout
		n.Processes[fmt.Sprintf("%016x", k.session)] = processStatus{procState: *st, Live: live}
		n.Live = n.Live || live
		if st.LastHeartbeat.After(n.LastHeartbeat) {
			n.LastHeartbeat = st.LastHeartbeat
		}
		n.Messages += st.Messages
		n.Relayed += st.Relayed
		n.Rejected += st.Rejected
		s.Nodes[k.node] = n
	}
	return s
}

// nodeKey returns the key of the node a message claims to be from (an
// HMAC of the master key: microseconds, so no cache is needed); a name that
// is no valid node id has none.
func (h *Hub) nodeKey(node string) (link.Key, error) {
	if err := redisstore.ValidName("node", node); err != nil {
		return nil, err
	}
	return h.master.NodeKey(node), nil
}
