// Package hub is the link's hub: it authenticates what nodes publish,
// refuses the rest (counted by reason), and writes each accepted change into
// the keyspaces of the other nodes that carry the torrent. It is the only
// writer of relayed peers. It resyncs nodes that join or rejoin, itself at
// start, and any node whose sequence shows a gap; it detects soft splits on
// its side by listening for its own heartbeats.
//
// A network is the hub and its members: each member is one operator's
// tracker, with its own Redis (or Redis Cluster) holding its link channel
// and its nodes' keyspaces, and the node ids it speaks for. The hub
// subscribes to every member's channel, takes a node's messages only on
// its own member's channel, and writes each change into the other members
// through a queue per member, so that a slow or unreachable member holds
// up nobody but itself. The single-Redis setup is a network of one member.
//
// Any number of hubs may run at once: the relay is partitioned by info hash
// and each hub relays the partitions it holds leases on (partitions.go),
// taking over those of a hub that dies. Every relay is idempotent (a change
// is applied only when it is at least as recent as what a node holds), so
// two hubs relaying one partition for a moment, while it changes hands,
// cost writes, never correctness.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/logsample"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// Carrier says whether a node carries a torrent. In allowed-torrents mode
// a node carries only its own list; a relayed change for a torrent it does
// not carry is dropped for it, never stored. Forget drops what the carrier
// knows of a node (its hello may mean its torrents changed).
//
// Listed reports whether node carries ih by its own list (allowed-torrents
// mode), not by carrying everything: its operator chose that torrent, so
// its peers are the member's own to share (see mayReceive).
type Carrier interface {
	Carries(ctx context.Context, node string, ih bittorrent.InfoHash) bool
	Listed(ctx context.Context, node string, ih bittorrent.InfoHash) bool
	Forget(node string)
}

// everything is the Carrier of nodes that carry every torrent.
type everything struct{}

func (everything) Carries(context.Context, string, bittorrent.InfoHash) bool { return true }
func (everything) Listed(context.Context, string, bittorrent.InfoHash) bool  { return false }
func (everything) Forget(string)                                             {}

// Relayer writes relayed changes into nodes' keyspaces and reads them for
// resyncs (redisstore.Relayer).
type Relayer interface {
	Apply(ctx context.Context, targets []redisstore.Target) (int, error)
	Indexed(ctx context.Context, node string, limit int, parts func(part int) bool) (_ []bittorrent.InfoHash, bad int, _ error)
	Swarms(ctx context.Context, node string, hashes []bittorrent.InfoHash, limit int) (_ [][]bittorrent.PeerChange, bad int, _ error)
}

var _ Relayer = (*redisstore.Relayer)(nil)

// LinkConn is a member's Redis as the hub uses it (redisstore.LinkConn):
// the link's pub/sub, the registry of the processes heard on the member's
// channel (procs.go), the partition leases (partitions.go).
type LinkConn interface {
	link.Bus
	Procs(channel string, sharded bool) *redisstore.Procs
	Leases(channel string, sharded bool, holder string, ttl, timeout time.Duration) *redisstore.Leases
}

var _ LinkConn = (*redisstore.LinkConn)(nil)

// Registry is a member's registry of processes (redisstore.Procs): a hash
// of fields the hub writes and reads back after a restart.
type Registry interface {
	All(ctx context.Context) (map[string]string, error)
	Get(ctx context.Context, fields ...string) ([]any, error)
	Set(ctx context.Context, fields map[string]any) error
	Del(ctx context.Context, fields ...string) error
}

var _ Registry = (*redisstore.Procs)(nil)

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

// DefaultBacklog is how many messages may wait for one member's writer.
const DefaultBacklog = 1024

// Config of a hub.
type Config struct {
	// Link holds the network's secret and timings, and the channel of
	// members that name none.
	Link link.Config
	// Name identifies this hub in its heartbeats.
	Name string
	// NodeTimeout: a node not heard from for this long is not relayed to
	// (its rejoin resyncs it).
	NodeTimeout time.Duration
	// Backlog bounds each member's queue of messages waiting to be written
	// into it (0: DefaultBacklog). A message that finds the queue full is
	// dropped for that member, counted, and a resync repairs it.
	Backlog int
	// Share copies torrents that nodes offer to nodes that accept them, as
	// part of every resync, across members (those with Member.Share) as
	// far as Member.ShareTo allows, within ShareLimits (zero values:
	// allowed.DefaultShareLimits).
	Share       bool
	ShareLimits allowed.ShareLimits
	// MaxProcesses bounds the processes of one node id (0:
	// DefaultMaxProcesses); a message from a further new session is
	// refused (too_many_processes).
	MaxProcesses int
	// ResyncBackoff is how long after a resync it asked for a node's next
	// request (its join, hello or gap) waits; each request that has to
	// wait doubles the wait for the next, up to ResyncBackoffMax, and a
	// node quiet for twice its wait starts again at ResyncBackoff (0:
	// DefaultResyncBackoff, DefaultResyncBackoffMax).
	ResyncBackoff, ResyncBackoffMax time.Duration
	// Bounds are what a resync takes from one node's keyspace (zero
	// fields: the defaults).
	Bounds Bounds
	// LeaseTTL is how long a hub's lease on a partition lasts unless it
	// renews it (0: DefaultLeaseTTL): a dead hub's partitions are taken
	// over within it plus a third of it.
	LeaseTTL time.Duration
}

// Member is one tracker of the network as the hub sees it: its own Redis
// (or Redis Cluster) holding its link channel, the hub's registry of its
// processes and the keyspaces of its nodes, and the node ids it speaks for.
type Member struct {
	// Name identifies the member in logs, metrics and status.
	Name string
	// Nodes are the node ids whose messages the hub takes on this
	// member's channel; a message there from any other node id is refused
	// (wrong_member). Empty means any node id, and is allowed only for a
	// network of one member (the single-Redis setup).
	Nodes []string
	// Link is the member's Redis as the link uses it: its link channel,
	// the hub's registry of its processes, the partition leases.
	Link LinkConn
	// Channel is the member's TRACKER_LINK_CHANNEL ("": the hub's);
	// Sharded is true on a Redis Cluster (sharded pub/sub).
	Channel string
	Sharded bool
	// Relay writes into and reads from the keyspaces of the member's nodes.
	Relay Relayer
	// Carrier says what the member's nodes carry (nil: everything).
	Carrier Carrier
	// Share is where torrent sharing reads the member's catalogs and
	// writes its inboxes (nil: the member takes no part).
	Share *allowed.Place
	// ShareTo names the other members whose nodes may receive the
	// torrents this member's nodes offer ("*": all); none by default.
	// The member's own nodes always share with each other.
	ShareTo []string
}

// Hub relays between nodes.
type Hub struct {
	cfg    Config
	master link.Master // derives each node's key
	sign   func(*link.Message) ([]byte, error)
	log    *slog.Logger
	errLog *logsample.Logger // relay failures: sampled
	// reqLog: the node requests that start resyncs, sampled (a key
	// holder can send as many as it likes).
	reqLog *logsample.Logger
	m      metrics

	mu      sync.Mutex
	runCtx  context.Context // set by Run: members added later start at once
	members map[string]*member
	nodes   map[string]*nodeProcs // procs.go
	resync  chan struct{}
	resyncs int64
	// why holds the reasons asked for since the last resync started;
	// history the last resyncs (HistoryLen), newest last.
	why map[string]bool
	// resyncing is true while a resync runs (tests wait for it).
	resyncing bool
	history   []ResyncRecord

	// The partitions (partitions.go): parts is the count; owned[p] is
	// set while the hub relays p. Under mu: since when it does, the
	// partitions a pending resync is for (wantAll: every one the hub
	// holds), the member whose Redis holds the leases, and the live hubs
	// last counted.
	parts       int
	owned       []atomic.Bool
	ownedSince  []time.Time
	wantParts   map[int]bool
	wantAll     bool
	leaseMember string
	hubsLive    int
	holder      string
	// keepLeases makes a stop leave the leases to expire, as a kill
	// would (tests).
	keepLeases bool
	// legacy is when (unix ms) a node speaking the format before
	// partitions was last heard: while one is, the hub's heartbeats go
	// in that format too.
	legacy atomic.Int64
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
// and last time heard are kept in its member's Redis too (procsKey),
// written once per heartbeat, so that a restarted hub still refuses a
// replay of what a process sent before the restart. What was accepted in
// the last heartbeat before a crash may be accepted once more after it:
// relaying is idempotent (the newest time of a peer wins, a stop leaves a
// tombstone, a completion counts once per node), so that changes nothing.
type procState struct {
	member *member // whose channel it speaks on
	dirty  bool    // changed since last written to Redis
	// missing has bit i set while sequence number LastSeq-1-i has not
	// arrived (ReorderWindow bits); holeSince is when the oldest of those
	// went missing.
	missing   uint64
	holeSince time.Time
	// claimed is the latest time (unix ms) its messages claimed: one of
	// them passes the hub's freshness check until claimed plus the skew,
	// so the process is not forgotten before that (else a replay would
	// pass as a new process).
	claimed int64
	// left: the process said bye (a clean stop); it is relayed to no
	// more, and forgotten once nothing it sent can pass.
	left bool
	// ctl is its control stream's window (hellos, heartbeats; version 2
	// messages); streams those of the partitions this hub relays, by
	// stream (partition+1), from the first message heard on each.
	ctl     seqWindow
	streams map[uint16]*seqWindow
	ProcessCounts
}

// ProcessCounts is what the status shows of one process of a node.
type ProcessCounts struct {
	LastSeq       uint64    `json:"last_seq"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Started       time.Time `json:"started"`
	Messages      int64     `json:"messages"`
	Relayed       int64     `json:"updates_relayed"`
	Rejected      int64     `json:"rejected"`
	LagMillis     int64     `json:"propagation_lag_ms"`
}

type metrics struct {
	rejected, resyncReq         *prometheus.CounterVec
	relayed, dropped            prometheus.Counter
	late, resyncFailed          prometheus.Counter
	resyncs, splits             prometheus.Counter
	shared                      prometheus.Counter
	refused                     *prometheus.CounterVec
	lag, resyncDuration         prometheus.Histogram
	backlog, up                 *prometheus.GaugeVec
	memberDropped, memberFailed *prometheus.CounterVec
	resyncRefused               *prometheus.CounterVec
	resyncDeferred              prometheus.Counter
	owned                       prometheus.Gauge
	takeovers, leaseFailures    prometheus.Counter
	skipped                     *prometheus.CounterVec
}

// New returns a hub without members (SetMembers gives them). It starts
// nothing.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Hub, error) {
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
	if cfg.Backlog <= 0 {
		cfg.Backlog = DefaultBacklog
	}
	if cfg.MaxProcesses <= 0 {
		cfg.MaxProcesses = DefaultMaxProcesses
	}
	if cfg.ResyncBackoff <= 0 {
		cfg.ResyncBackoff = DefaultResyncBackoff
	}
	if cfg.ResyncBackoffMax < cfg.ResyncBackoff {
		cfg.ResyncBackoffMax = max(DefaultResyncBackoffMax, cfg.ResyncBackoff)
	}
	cfg.Bounds = cfg.Bounds.withDefaults()
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	parts := cfg.Link.PartitionCount()
	master := link.NewMaster(cfg.Link.Password)
	priv, _ := master.HubKeys()
	log = log.With("hub", cfg.Name)
	h := &Hub{
		cfg: cfg, master: master, sign: func(m *link.Message) ([]byte, error) { return link.EncodeDown(priv, m) },
		log: log, errLog: logsample.New(log, 10*time.Second), reqLog: logsample.New(log, 10*time.Second),
		members: map[string]*member{}, nodes: map[string]*nodeProcs{}, resync: make(chan struct{}, 1),
		parts: parts, owned: make([]atomic.Bool, parts), ownedSince: make([]time.Time, parts), holder: holderID(cfg.Name, parts),
	}
	h.m = metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_rejected_total", Help: "Messages refused, by reason."}, []string{"reason"}),
		resyncReq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_resync_requests_total",
			Help: "Why resyncs were asked for: start, join (a new process), hello, gap, relay_failed, backlog, resubscribed, reset, members, retry, takeover (a partition taken). Requests while one is pending share it."}, []string{"reason"}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_relayed_updates_total", Help: "Peer changes applied to other nodes' keyspaces."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_dropped_updates_total", Help: "Peer changes not relayed to a node that does not carry the torrent."}),
		late: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_late_messages_total",
			Help: "Messages that arrived after a later one of the same process (within the reorder window) and were applied."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_resyncs_total", Help: "Resyncs run."}),
		resyncFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_resync_failures_total",
			Help: "Resyncs that could not read or write everything (what was reachable was applied); each is retried a second later."}),
		splits:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_splits_total", Help: "Soft splits of the hub's own subscription, healed."}),
		shared:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_shared_torrents_total", Help: "Torrents copied to nodes that accept shared torrents."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_shared_refused_total", Help: "Offered torrents not copied, by reason: invalid, wrong_name, too_large, over_cap (waits for the next resync), catalog_too_large."}, []string{"reason"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hub_propagation_seconds", Help: "From a node publishing a change to the hub having written it into another member.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5}}),
		resyncRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_resync_refused_total",
			Help: "What a resync read from a node's keyspace and did not take, by reason: bad_peer (not a valid unicast peer), bad_seen (a time ahead of the hub's clock beyond the skew), bad_type (a key of the wrong type), too_many_swarms, too_many_peers (beyond the bounds per node)."}, []string{"reason"}),
		resyncDeferred: prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_resync_deferred_total",
			Help: "A node's resync requests (join, hello, gap) that came within its backoff and wait for it (or share a resync already waiting)."}),
		resyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hub_resync_seconds", Help: "Duration of resyncs.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hub_member_backlog",
			Help: "Messages waiting to be written into a member, by member."}, []string{"member"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hub_member_up",
			Help: "1 while the hub is subscribed to a member's link channel, 0 while it is not (its Redis unreachable, or re-subscribing after a split), by member."}, []string{"member"}),
		memberDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_member_dropped_updates_total",
			Help: "Peer changes not written into a member because its backlog was full (a resync repairs them), by member."}, []string{"member"}),
		memberFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_member_write_failures_total",
			Help: "Writes into a member that failed (its Redis unreachable or slow), by member; each asks for a resync."}, []string{"member"}),
	}
	h.m.owned = prometheus.NewGauge(prometheus.GaugeOpts{Name: "hub_partitions_owned", Help: "Partitions of the relay this hub holds the lease of and relays now."})
	h.m.takeovers = prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_partition_takeovers_total",
		Help: "Partitions this hub took (free at start, given up by another hub, or expired with a hub that died); each is resynced."})
	h.m.leaseFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "hub_lease_failures_total",
		Help: "Rounds of lease renewal or balancing that could not reach the lease Redis (the hub keeps relaying what it holds)."})
	h.m.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hub_skipped_messages_total",
		Help: "Authentic messages left to others, by reason: unowned (a partition this hub gave up meanwhile; its new holder resyncs it), early (updates of a process not heard on the control channel yet, numbered as if it ran before; its first heartbeat resyncs it)."}, []string{"reason"})
	reg.MustRegister(h.m.owned, h.m.takeovers, h.m.leaseFailures, h.m.skipped)
	reg.MustRegister(h.m.rejected, h.m.resyncReq, h.m.relayed, h.m.dropped, h.m.late, h.m.resyncFailed, h.m.resyncs, h.m.splits, h.m.shared, h.m.refused, h.m.lag, h.m.resyncDuration,
		h.m.backlog, h.m.up, h.m.memberDropped, h.m.memberFailed, h.m.resyncRefused, h.m.resyncDeferred)
	return h, nil
}

// Run relays until ctx ends. It starts every member's subscription and
// heartbeat, and resyncs every known node at start.
func (h *Hub) Run(ctx context.Context) error {
	h.mu.Lock()
	h.runCtx = ctx
	h.mu.Unlock()
	for _, mb := range h.memberSnapshot() {
		h.start(mb)
	}
	h.requestResync("start")
	leases := make(chan struct{})
	go func() { h.leaseLoop(ctx); close(leases) }()
	h.resyncLoop(ctx)
	<-leases
	h.mu.Lock()
	ms := h.memberList()
	h.members = map[string]*member{}
	h.mu.Unlock()
	for _, mb := range ms {
		mb.close()
	}
	return nil
}

// memberSnapshot returns the members now, by name.
func (h *Hub) memberSnapshot() []*member {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.memberList()
}

// MembersUp returns how many members the hub is subscribed to now, of how
// many: the hub's readiness, read from its own state (no round trip to a
// member that may be far or unreachable).
func (h *Hub) MembersUp() (up, of int) {
	for _, mb := range h.memberSnapshot() {
		if mb.up.Load() {
			up++
		}
		of++
	}
	return up, of
}

// memberList returns the members, by name; h.mu is held.
func (h *Hub) memberList() []*member {
	out := make([]*member, 0, len(h.members))
	for _, mb := range h.members {
		out = append(out, mb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (h *Hub) reject(reason string, st *procState) {
	h.m.rejected.WithLabelValues(reason).Inc()
	if st != nil {
		h.mu.Lock()
		st.Rejected++
		h.mu.Unlock()
	}
}

// handle authenticates one message from a node, heard on mb's channel
// (its control channel, or a partition's), and acts on it.
func (h *Hub) handle(ctx context.Context, mb *member, b []byte) {
	m, err := link.DecodeUp(b, h.nodeKey)
	if err != nil {
		h.reject(link.Reason(err), nil)
		return
	}
	if m.Kind == link.KindHubHeartbeat || bittorrent.ValidName("node", m.Node) != nil {
		h.reject("malformed", nil)
		return
	}
	// A member speaks for its own node ids only: its operator holds their
	// keys, and could replay one of another member's messages on its own
	// channel (it cannot forge one).
	if len(mb.nodes) > 0 && !mb.nodes[m.Node] {
		h.reject("wrong_member", nil)
		return
	}
	if m.Partitions != 0 && int(m.Partitions) != h.parts {
		h.reject("partitions", nil)
		h.errLog.Log(slog.LevelError, "a node runs with another partition count: set TRACKER_LINK_PARTITIONS the same on every node and hub",
			"node", m.Node, "member", mb.Name, "node_partitions", m.Partitions, "partitions", h.parts)
		return
	}
	if m.Version == link.LegacyVersion {
		h.legacy.Store(time.Now().UnixMilli())
	}
	now := time.Now()
	if !mb.ep.Fresh(m, now) {
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
		// A peer no front end would store (multicast, broadcast,
		// port 0, ...) is no peer: the node's own key signed it, so
		// the node is broken or hostile.
		if bittorrent.CheckPeer(c.Peer) != nil {
			h.reject("bad_peer", nil)
			return
		}
		// A partition's stream carries that partition's changes only.
		if m.Stream != 0 && link.Partition(c.InfoHash, h.parts) != int(m.Stream)-1 {
			h.reject("wrong_partition", nil)
			return
		}
	}
	if m.Stream != 0 && !h.owns(int(m.Stream)-1) {
		// Heard while the partition changed hands: its new holder
		// resyncs it once it listens.
		h.m.skipped.WithLabelValues("unowned").Inc()
		return
	}
	key := procKey{m.Node, m.Session}
	h.mu.Lock()
	if h.members[mb.Name] != mb {
		h.mu.Unlock() // a member removed meanwhile
		return
	}
	st := h.proc(key)
	joined, gap := false, false
	var w *seqWindow
	if st != nil && st.member == mb {
		w = st.window(m.Stream)
	}
	switch {
	case st == nil:
		if m.Seq > MaxSeqRate {
			h.mu.Unlock()
			if m.Stream != 0 {
				// Updates of a process that ran before this hub heard
				// it: its first heartbeat joins it and resyncs.
				h.m.skipped.WithLabelValues("early").Inc()
				return
			}
			h.reject("seq_jump", nil)
			return
		}
		// Whatever the process sent before, the join's resync covers.
		st = &procState{member: mb, ProcessCounts: ProcessCounts{Started: now}}
		st.newWindow(m.Stream, m.Seq, now)
		if !h.addProc(key, st) {
			h.mu.Unlock()
			h.reject("too_many_processes", nil)
			return
		}
		joined = true
	case st.member != mb:
		// Heard on another member's channel than before: only a node
		// moved between members by a reload of the members' list gets
		// here (wrong_member refuses the rest). It joins anew.
		st.member, st.ctl, st.streams = mb, seqWindow{}, nil
		st.newWindow(m.Stream, m.Seq, now)
		joined = true
	case w == nil:
		// The first message of a stream this hub hears (the process's
		// first of that partition, or the hub took the partition): a
		// number the process could have reached since it started.
		life := time.Since(st.Started).Seconds() + float64(st.ctl.last)*h.cfg.Link.Heartbeat.Seconds()
		if float64(m.Seq) > MaxSeqRate*(1+life) {
			h.mu.Unlock()
			h.reject("seq_jump", st)
			return
		}
		st.newWindow(m.Stream, m.Seq, now)
		// Held since before the process was heard: its first messages
		// on this stream were lost.
		gap = m.Stream != 0 && m.Seq > 1 && h.ownedSince[m.Stream-1].Before(st.Started)
	case m.Seq <= w.last:
		if !w.fill(w.last - m.Seq) {
			h.mu.Unlock()
			h.reject("replay", st)
			return
		}
		w.heard = now
		h.m.late.Inc()
	case m.Seq-w.last > uint64(MaxSeqRate*(1+time.Since(w.heard).Seconds())):
		h.mu.Unlock()
		h.reject("seq_jump", st)
		return
	default:
		gap = w.advance(m.Seq, now)
		w.heard = now
	}
	if w != nil {
		gap = w.overdue(now, h.cfg.Link.Heartbeat) || gap
	}
	if w := st.streams[m.Stream]; w != nil {
		w.dirty = true
	}
	st.LastSeq = st.ctl.last
	st.LastHeartbeat = now
	st.claimed = max(st.claimed, m.Time)
	st.Messages++
	st.dirty = true
	st.left = false // a message after a bye (reordered): heard again
	h.nodes[m.Node].heard(st)
	if m.Kind == link.KindBye {
		h.left(key, st)
		h.mu.Unlock()
		h.reqLog.Log(slog.LevelInfo, "node process left (it said bye): relayed to no more", "member", mb.Name, "node", m.Node, "session", key.String())
		return
	}
	h.mu.Unlock()

	if reason := resyncReason(joined, gap, m.Kind); reason != "" {
		mb.carrier.Forget(m.Node) // a hello may mean its carried torrents changed
		h.nodeResync(key, mb, reason)
	}
	if m.Kind == link.KindUpdates && len(m.Changes) > 0 {
		changes := m.Changes
		if m.Stream == 0 {
			changes = h.ownedOf(changes)
		}
		if len(changes) > 0 {
			h.relayChanges(m.Node, st, time.UnixMilli(m.Time), changes)
		}
	}
}

// ownedOf returns the changes of the partitions the hub relays, of a
// message on the control stream (a node before partitions sends its
// updates there, and every hub hears them).
func (h *Hub) ownedOf(changes []bittorrent.PeerChange) []bittorrent.PeerChange {
	all := true
	for _, c := range changes {
		all = all && h.owns(link.Partition(c.InfoHash, h.parts))
	}
	if all {
		return changes
	}
	out := make([]bittorrent.PeerChange, 0, len(changes))
	for _, c := range changes {
		if h.owns(link.Partition(c.InfoHash, h.parts)) {
			out = append(out, c)
		}
	}
	return out
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

// nodeAt is a live node and the member it speaks through.
type nodeAt struct {
	node string
	mb   *member
}

// live returns the nodes to relay to: every node with a live process, but
// origin, by name.
func (h *Hub) live(origin string) []nodeAt {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]nodeAt, 0, len(h.nodes))
	for n, np := range h.nodes {
		if n != origin && np.member != nil && time.Since(np.last) < h.cfg.NodeTimeout {
			out = append(out, nodeAt{n, np.member})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].node < out[j].node })
	return out
}

// relayChanges queues changes from origin for every other live node, one
// job per member; each member's writer writes its jobs in the order they
// came.
func (h *Hub) relayChanges(origin string, st *procState, sent time.Time, changes []bittorrent.PeerChange) {
	byMember := map[*member][]string{}
	for _, t := range h.live(origin) {
		byMember[t.mb] = append(byMember[t.mb], t.node)
	}
	for mb, nodes := range byMember {
		if !mb.enqueue(relayJob{origin: origin, st: st, sent: sent, nodes: nodes, changes: changes}) {
			mb.droppedN.Add(int64(len(changes) * len(nodes)))
			h.m.memberDropped.WithLabelValues(mb.Name).Add(float64(len(changes) * len(nodes)))
			h.requestResync("backlog")
		}
	}
}

func (h *Hub) requestResync(reason string) {
	h.m.resyncReq.WithLabelValues(reason).Inc()
	h.askResync(reason)
}

// askResync asks for a resync of every partition the hub relays for
// reason, counted already.
func (h *Hub) askResync(reason string) { h.askResyncOf(reason, -1) }

// askResyncOf asks for a resync of partition p (-1: all the hub relays)
// for reason, counted already.
func (h *Hub) askResyncOf(reason string, p int) {
	h.mu.Lock()
	if h.why == nil {
		h.why = map[string]bool{}
	}
	h.why[reason] = true
	if p < 0 {
		h.wantAll = true
	} else {
		if h.wantParts == nil {
			h.wantParts = map[int]bool{}
		}
		h.wantParts[p] = true
	}
	h.mu.Unlock()
	select {
	case h.resync <- struct{}{}:
	default: // one is pending already; it will see everything
	}
}

// Reset re-establishes the hub's subscriptions and resyncs every node.
func (h *Hub) Reset() {
	for _, mb := range h.memberSnapshot() {
		mb.ep.Reset()
	}
	h.requestResync("reset")
}

// Status is the hub's JSON status.
type Status struct {
	Hub string `json:"hub"`
	// Holder is the hub's id in the partition leases; Partitions the
	// partitions it relays now, of PartitionCount; Hubs the live hubs it
	// counted last (the share it aims at is PartitionCount/Hubs, rounded
	// up).
	Holder         string                  `json:"holder"`
	Partitions     []int                   `json:"partitions"`
	PartitionCount int                     `json:"partition_count"`
	Hubs           int                     `json:"hubs"`
	Resyncs        int64                   `json:"resyncs"`
	Recent         []ResyncRecord          `json:"recent_resyncs"`
	Members        map[string]MemberStatus `json:"members"`
	Nodes          map[string]NodeStatus   `json:"nodes"`
}

// MemberStatus is one member: whether the hub is subscribed to its
// channel ("up" or "down"), its channel, the node ids it speaks for (none:
// any), and its writer's queue.
type MemberStatus struct {
	Link    string   `json:"link"`
	Channel string   `json:"channel"`
	Nodes   []string `json:"nodes,omitempty"`
	Backlog int      `json:"backlog"`
	Dropped int64    `json:"dropped_updates"`
	Failed  int64    `json:"failed_writes"`
}

// NodeStatus is one node id: live while any of its processes is, with
// each process (replica) by session.
type NodeStatus struct {
	Member string `json:"member"`
	Live   bool   `json:"live"`
	// State is its liveliest process's: live, silent, left or gone.
	State         string    `json:"state"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Messages      int64     `json:"messages"`
	Relayed       int64     `json:"updates_relayed"`
	Rejected      int64     `json:"rejected"`
	// ProcessCount and LiveProcesses count them all; Processes lists
	// them by session (on the public port, PublicStatus: the live ones,
	// at most PublicProcesses).
	ProcessCount  int                      `json:"process_count"`
	LiveProcesses int                      `json:"live_processes"`
	Processes     map[string]ProcessStatus `json:"processes"`
}

// ProcessStatus is one process of a node: its counts, and whether it is
// live.
type ProcessStatus struct {
	ProcessCounts
	Live bool `json:"live"`
	// State is live (heard within three heartbeats), silent (not since,
	// still relayed to until the node timeout), left (it said bye at a
	// clean stop) or gone (past the node timeout, not forgotten yet).
	State string `json:"state"`
}

// stateRank orders the states of processes, liveliest last, for a node's.
var stateRank = map[string]int{"gone": 1, "left": 2, "silent": 3, "live": 4}

// Status returns the hub's view of its members, nodes and processes.
func (h *Hub) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	s := Status{Hub: h.cfg.Name, Holder: h.holder, Partitions: h.Partitions(), PartitionCount: h.parts, Hubs: h.hubsLive, Resyncs: h.resyncs, Recent: slices.Clone(h.history), Members: map[string]MemberStatus{}, Nodes: map[string]NodeStatus{}}
	for _, mb := range h.members {
		link := "down"
		if mb.up.Load() {
			link = "up"
		}
		s.Members[mb.Name] = MemberStatus{Link: link, Channel: mb.cfg.Channel, Nodes: slices.Sorted(maps.Keys(mb.nodes)),
			Backlog: len(mb.queue), Dropped: mb.droppedN.Load(), Failed: mb.failedN.Load()}
	}
	h.eachProc(func(k procKey, st *procState) {
		n := s.Nodes[k.node]
		if n.Processes == nil {
			n.Processes = map[string]ProcessStatus{}
		}
		state := h.processState(st, now)
		live := state == "live" || state == "silent"
		n.Processes[fmt.Sprintf("%016x", k.session)] = ProcessStatus{ProcessCounts: st.ProcessCounts, Live: live, State: state}
		if stateRank[state] > stateRank[n.State] {
			n.State = state
		}
		n.ProcessCount++
		if live {
			n.LiveProcesses++
		}
		n.Live = n.Live || live
		if st.LastHeartbeat.After(n.LastHeartbeat) {
			n.LastHeartbeat = st.LastHeartbeat
			n.Member = st.member.Name
		}
		n.Messages += st.Messages
		n.Relayed += st.Relayed
		n.Rejected += st.Rejected
		s.Nodes[k.node] = n
	})
	return s
}

// nodeKey returns the key of the node a message claims to be from (an
// HMAC of the master key: microseconds, so no cache is needed); a name that
// is no valid node id has none.
func (h *Hub) nodeKey(node string) (link.Key, error) {
	if err := bittorrent.ValidName("node", node); err != nil {
		return nil, err
	}
	return h.master.NodeKey(node), nil
}
