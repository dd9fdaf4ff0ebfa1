package link

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/logsample"
)

// Config is the link's part of the configuration, shared by nodes and the hub.
type Config struct {
	// Password is the network secret: the hub's, and the nodes' in the
	// simple setup where one operator runs everything. It turns the link on.
	Password string `env:"LINK_PASSWORD"`
	// Key and HubKey are what a node holds instead of the secret: its own
	// key and the hub's public key, as `tracker link key NODE_ID` prints
	// them. They turn the link on for a node.
	Key    string `env:"LINK_KEY"`
	HubKey string `env:"LINK_HUB_KEY"`
	// RedisURL is the Redis that carries the link channel (default: TRACKER_REDIS_URL).
	RedisURL string `env:"LINK_REDIS_URL"`
	// Channel names the pub/sub channels: <channel>:up (nodes to hub) and
	// <channel>:down (hub to nodes).
	Channel string `env:"LINK_CHANNEL" envDefault:"tl:link"`
	// Heartbeat is how often each side says it is alive. Three missed
	// heartbeats make a soft split.
	Heartbeat time.Duration `env:"LINK_HEARTBEAT" envDefault:"1s"`
	// Flush bounds how long a local change waits to be batched.
	Flush time.Duration `env:"LINK_FLUSH" envDefault:"5ms"`
	// Queue bounds the local changes waiting to be published; beyond it
	// changes are dropped and counted (the next resync repairs them).
	Queue int `env:"LINK_QUEUE" envDefault:"65536"`
	// MaxSkew is how far a message's timestamp may be from the receiver's
	// clock; older ones are refused as stale.
	MaxSkew time.Duration `env:"LINK_MAX_SKEW" envDefault:"30s"`
	// Sharded carries the link on sharded pub/sub (SPUBLISH, SSUBSCRIBE;
	// Redis 7), as it must on a Redis Cluster: each message goes to the
	// one shard that owns the channel's slot, in the order it was sent,
	// instead of being broadcast over the cluster bus to every node from
	// whichever master the client picked. Both channels then carry the
	// hash tag {<channel>}, so they live on one shard. Set from
	// TRACKER_REDIS_CLUSTER, not by a variable of its own.
	Sharded bool
	// Partitions is how many partitions the relay is split into, by info
	// hash, over the hubs that run (partition.go); the same on every node
	// and hub of a network (0: DefaultPartitions).
	Partitions int `env:"LINK_PARTITIONS" envDefault:"16"`
}

// MaxChannelLen bounds a link channel's name.
const MaxChannelLen = 128

// ValidChannel checks a link channel's name (TRACKER_LINK_CHANNEL, a
// member's "channel", tracker acl's -channel), the one rule for them: 1
// to MaxChannelLen characters, no braces (the name goes into hash tags),
// blanks or glob characters (it goes into ACL patterns). The error reads
// after the name of what is checked.
func ValidChannel(name string) error {
	if name == "" || len(name) > MaxChannelLen || strings.ContainsAny(name, "{} \t\r\n*?[]") {
		return fmt.Errorf("must be 1 to %d characters, without braces, blanks or glob characters", MaxChannelLen)
	}
	return nil
}

// Enabled reports whether the link is on.
func (c Config) Enabled() bool { return c.Password != "" || c.Key != "" }

// LogValue keeps the secret and the keys out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.Bool("enabled", c.Enabled()), slog.Bool("node_key_only", c.Key != ""),
		slog.String("channel", c.Channel), slog.Bool("sharded", c.Sharded), slog.Duration("heartbeat", c.Heartbeat),
		slog.Int("partitions", c.PartitionCount()))
}

// Validate checks the settings; errors name the variable.
func (c Config) Validate() error {
	if c.Partitions < 0 || c.Partitions > MaxPartitions {
		return fmt.Errorf("TRACKER_LINK_PARTITIONS must be from 1 to %d (and the same on every node and hub)", MaxPartitions)
	}
	switch {
	case c.Password != "" && len(c.Password) < 12:
		return errors.New("TRACKER_LINK_PASSWORD must be at least 12 characters")
	case c.Password != "" && c.Key != "":
		return errors.New("set TRACKER_LINK_PASSWORD (the network secret) or TRACKER_LINK_KEY (one node's key), not both")
	case c.Key != "" && c.HubKey == "":
		return errors.New("TRACKER_LINK_KEY needs TRACKER_LINK_HUB_KEY (both printed by `tracker link key NODE_ID`)")
	case c.Key != "":
		if _, err := ParseNodeKey(c.Key); err != nil {
			return fmt.Errorf("TRACKER_LINK_KEY: %w", err)
		}
		if _, err := ParseHubKey(c.HubKey); err != nil {
			return fmt.Errorf("TRACKER_LINK_HUB_KEY: %w", err)
		}
	case ValidChannel(c.Channel) != nil:
		return fmt.Errorf("TRACKER_LINK_CHANNEL %w", ValidChannel(c.Channel))
	case c.Heartbeat < 50*time.Millisecond || c.Heartbeat > time.Minute:
		return errors.New("TRACKER_LINK_HEARTBEAT must be from 50ms to 1m")
	case c.Flush < 0 || c.Flush > time.Second:
		return errors.New("TRACKER_LINK_FLUSH must be from 0 to 1s")
	case c.Queue < 1 || c.Queue > 1<<22:
		return errors.New("TRACKER_LINK_QUEUE must be from 1 to 4194304")
	case c.MaxSkew < time.Second || c.MaxSkew > time.Hour:
		return errors.New("TRACKER_LINK_MAX_SKEW must be from 1s to 1h")
	}
	return nil
}

// UpChannel and DownChannel name the two directions: <channel>:up and
// <channel>:down, or {<channel>}:up and {<channel>}:down when sharded. The
// up channel is the control channel (hellos, heartbeats); updates go up
// on their partition's channel (PartitionChannel).
func (c Config) UpChannel() string   { return c.base() + ":up" }
func (c Config) DownChannel() string { return c.base() + ":down" }

func (c Config) base() string {
	if c.Sharded {
		return "{" + c.Channel + "}"
	}
	return c.Channel
}

// States of a node's link.
const (
	StateDown  = "down"  // no subscription (Redis unreachable)
	StateSplit = "split" // subscribed, but no hub heartbeat for 3 heartbeats
	StateUp    = "up"
)

// Node is a tracker node's side of the link. It implements the frontend's
// ChangeSink: every local change is queued (never blocking the announce)
// and published in signed batches. It never publishes what the hub relayed,
// since relayed peers never pass through the frontend.
type Node struct {
	cfg      Config
	id       string
	creds    Credentials
	ep       *Endpoint
	queue    chan bittorrent.PeerChange
	helloReq chan struct{}
	log      *slog.Logger
	errLog   *logsample.Logger // publish and index failures: sampled
	m        nodeMetrics
	subState atomic.Value // down or subscribed
	hubMu    sync.Mutex
	hubSeqs  map[string]uint64 // hub name+session -> last seq
	// published counts batches of changes published.
	published atomic.Int64
	lost      atomic.Pointer[lostEvent]
	// idx keeps the node's swarm index: each torrent's entry refreshed
	// once per redisstore.IndexRefresh, written by its own goroutine, off
	// the publish path: a slow or paused shard holding a part of the index
	// delays the index, never the link.
	idx Index
}

// Index is the node's swarm index (redisstore.NodeIndex, its one writer
// on the node): Queue queues the entries changes make due, and reports
// false when its queue is full (they are written with a later change);
// Run writes what is queued until done closes.
type Index interface {
	Queue(node string, changes ...bittorrent.PeerChange) bool
	Run(ctx context.Context, done <-chan struct{}, failed func(error))
}

type nodeMetrics struct {
	changes, dropped, stale, publishErrs, splits, resets prometheus.Counter
	rejected                                             *prometheus.CounterVec
}

// NewNode returns the link of node id. bus carries the channel; index is
// the node's swarm index, which the node's Run writes. It starts nothing.
func NewNode(cfg Config, id string, bus Bus, index Index, log *slog.Logger, reg prometheus.Registerer) (*Node, error) {
	if !cfg.Enabled() {
		return nil, errors.New("link: no TRACKER_LINK_PASSWORD or TRACKER_LINK_KEY, no link")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	creds, err := NodeCredentials(cfg, id)
	if err != nil {
		return nil, err
	}
	log = log.With("link_node", id)
	n := &Node{
		cfg: cfg, id: id, creds: creds,
		ep:       NewEndpoint(cfg, id, bus, func(m *Message) ([]byte, error) { return EncodeUp(creds.Node, m) }),
		queue:    make(chan bittorrent.PeerChange, cfg.Queue),
		helloReq: make(chan struct{}, 1), log: log, errLog: logsample.New(log, 10*time.Second),
		hubSeqs: map[string]uint64{}, idx: index,
	}
	n.subState.Store(StateDown)
	c := func(name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(x)
		return x
	}
	n.m = nodeMetrics{
		changes: c("tracker_link_published_changes_total", "Local peer changes published to the link."),
		dropped: c("tracker_link_dropped_changes_total", "Local peer changes dropped because the link queue was full."),
		stale: c("tracker_link_stale_changes_total",
			"Local peer changes older than half the allowed skew when their batch was sent (the link was held up), not sent since the hub would refuse them; the node says hello, so the hub resyncs it."),
		publishErrs: c("tracker_link_publish_errors_total", "Failed link publishes."),
		splits:      c("tracker_link_splits_total", "Subscriptions remade because no hub heartbeat came for 3 intervals (soft split)."),
		resets:      c("tracker_link_resets_total", "Link resets requested by an operator."),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracker_link_rejected_total", Help: "Messages from the hub refused, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(n.m.rejected)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tracker_link_up", Help: "1 when the hub's heartbeats arrive, else 0.",
	}, func() float64 {
		if n.State() == StateUp {
			return 1
		}
		return 0
	}))
	return n, nil
}

// LocalChange queues a change the node's own store wrote, as the store
// described it. It never blocks: when the queue is full the change is
// dropped and counted.
func (n *Node) LocalChange(c bittorrent.PeerChange) {
	select {
	case n.queue <- c:
	default:
		n.m.dropped.Inc()
	}
}

// Run publishes and listens until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	done, indexDone := make(chan struct{}), make(chan struct{})
	go func() { n.publish(ctx); close(done) }()
	go func() {
		n.idx.Run(ctx, done, func(err error) { n.errLog.Log(slog.LevelWarn, "link index write failed", "err", err) })
		close(indexDone)
	}()
	n.listen(ctx)
	<-done
	<-indexDone
	return nil
}

// fresh drops the changes of a batch seen longer ago than half the allowed
// skew (the hub refuses a message with any change seen further than the
// skew from its time, and would lose the fresh ones with it), counts them,
// and asks for a hello, so the hub resyncs what they said. It works in
// place.
func (n *Node) fresh(changes []bittorrent.PeerChange) []bittorrent.PeerChange {
	oldest := time.Now().Add(-n.cfg.MaxSkew / 2).UnixMilli()
	kept := changes[:0]
	for _, c := range changes {
		if c.Seen >= oldest {
			kept = append(kept, c)
		}
	}
	if dropped := len(changes) - len(kept); dropped > 0 {
		n.m.stale.Add(float64(dropped))
		n.errLog.Log(slog.LevelWarn, "link held up: changes too old to send; the hub will resync this node", "changes", dropped)
		n.requestHello()
	}
	return kept
}

// Reset re-establishes the subscription and says hello again, which makes
// the hub resync this node (the old "Reset Tracker Link").
func (n *Node) Reset() {
	n.m.resets.Inc()
	n.ep.Reset()
}

// Hello makes the node say hello again, which makes the hub resync it (after
// the set of torrents it carries changed).
func (n *Node) Hello() { n.requestHello() }

// State returns up, split or down.
func (n *Node) State() string {
	s := n.subState.Load().(string)
	if s == StateDown {
		return s
	}
	if time.Since(n.ep.LastAlive()) > 3*n.cfg.Heartbeat {
		return StateSplit
	}
	return StateUp
}

// NodeStatus is the JSON status of a node's link.
type NodeStatus struct {
	Node             string    `json:"node"`
	Session          string    `json:"session"`
	State            string    `json:"state"`
	LastHubHeartbeat time.Time `json:"last_hub_heartbeat"`
	PublishedBatches int64     `json:"published_batches"`
	QueuedChanges    int       `json:"queued_changes"`
	// Remade is when the subscription was last dropped and made anew
	// (a reset, a soft split, an error), and why; zero: never.
	Remade       time.Time `json:"remade,omitzero"`
	RemadeReason string    `json:"remade_reason,omitempty"`
}

// lostEvent is the last time a node's subscription was remade.
type lostEvent struct {
	at     time.Time
	reason string
}

// Status returns the link's state.
func (n *Node) Status() NodeStatus {
	st := NodeStatus{
		Node: n.id, Session: fmt.Sprintf("%016x", n.ep.Session()), State: n.State(),
		LastHubHeartbeat: n.ep.LastAlive().UTC(), PublishedBatches: n.published.Load(),
		QueuedChanges: len(n.queue),
	}
	if l := n.lost.Load(); l != nil {
		st.Remade, st.RemadeReason = l.at.UTC(), l.reason
	}
	return st
}

func (n *Node) publish(ctx context.Context) {
	hb := time.NewTicker(n.cfg.Heartbeat)
	defer hb.Stop()
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	armed := false
	batch := make([]bittorrent.PeerChange, 0, MaxChanges)
	pub := n.startPublishers(ctx)
	send := func(kind Kind, changes []bittorrent.PeerChange) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
		defer cancel()
		if len(changes) > 0 {
			changes = n.fresh(changes)
			if len(changes) == 0 {
				return
			}
			if !n.idx.Queue(n.id, changes...) {
				n.errLog.Log(slog.LevelWarn, "link index writes queued up; entries left for a later change")
			}
		}
		if kind != KindUpdates {
			if err := n.ep.Publish(pctx, n.cfg.UpChannel(), 0, kind, nil); err != nil {
				n.publishFailed(kind, err)
			}
			return
		}
		// Each partition's changes go on its channel, in the order
		// they came, from its own publisher (publishers.go); a failed
		// publish starts a new session, which every hub resyncs.
		pub.hand(changes)
	}
	flushBatch := func() {
		if len(batch) > 0 {
			send(KindUpdates, batch)
			batch = batch[:0]
		}
		if armed {
			flush.Stop()
			armed = false
		}
	}
	send(KindHello, nil)
	for {
		select {
		case <-ctx.Done():
			flushBatch()
			pub.close(publishTimeout)
			// A clean stop says so: the hubs stop relaying to this
			// process at once, not after the node timeout.
			send(KindBye, nil)
			return
		case c := <-n.queue:
			batch = append(batch, c)
			if len(batch) >= MaxChanges || n.cfg.Flush == 0 {
				flushBatch()
			} else if !armed {
				flush.Reset(n.cfg.Flush)
				armed = true
			}
		case <-flush.C:
			armed = false
			flushBatch()
		case <-hb.C:
			send(KindHeartbeat, nil)
		case <-n.helloReq:
			flushBatch()
			send(KindHello, nil)
		}
	}
}

// publishFailed counts a failed publish. What was lost, a resync repairs:
// the endpoint started a new session, which the hubs resync when they hear
// it.
func (n *Node) publishFailed(kind Kind, err error) {
	n.m.publishErrs.Inc()
	n.errLog.Log(slog.LevelWarn, "link publish failed; a new session will be resynced", "kind", kind, "err", err)
}

// listen subscribes to the hub's channel and watches its heartbeats. A
// subscription that carries no valid hub heartbeat for three intervals is
// a soft split: the endpoint drops it and makes it anew, and the node says
// hello, which makes the hub resync it.
func (n *Node) listen(ctx context.Context) {
	n.ep.Listen(ctx, Listener{
		Handle: func(_ string, b []byte) { n.handle(b) },
		Down: func(err error) {
			n.subState.Store(StateDown)
			n.log.Warn("link subscription failed", "err", err)
		},
		Subscribed: func(first bool) {
			n.subState.Store("subscribed")
			if !first {
				n.requestHello()
			}
		},
		Lost: func(reason string) {
			if strings.HasPrefix(reason, "soft split") {
				n.m.splits.Inc()
			}
			n.lost.Store(&lostEvent{at: time.Now(), reason: reason})
			n.log.Warn("link re-established", "reason", reason)
		},
	}, n.cfg.DownChannel())
}

func (n *Node) requestHello() {
	select {
	case n.helloReq <- struct{}{}:
	default:
	}
}

// handle checks a message from the hub: its signature, its kind, its
// freshness, and that it is not a replay; a valid heartbeat is a sign of
// life of the link.
func (n *Node) handle(b []byte) {
	m, err := DecodeDown(n.creds.Hub, b)
	if err != nil {
		n.m.rejected.WithLabelValues(Reason(err)).Inc()
		return
	}
	if m.Kind != KindHubHeartbeat {
		n.m.rejected.WithLabelValues("malformed").Inc()
		return
	}
	if int(m.Partitions) != n.cfg.PartitionCount() {
		// Its hub would refuse every message of this node: no sign of
		// life, so the link shows split, and the log says why.
		n.m.rejected.WithLabelValues("partitions").Inc()
		n.errLog.Log(slog.LevelError, "the hub runs with another partition count: set TRACKER_LINK_PARTITIONS the same on every node and hub",
			"hub", m.Node, "hub_partitions", m.Partitions, "partitions", n.cfg.PartitionCount())
		return
	}
	if !n.ep.Fresh(m, time.Now()) {
		n.m.rejected.WithLabelValues("stale").Inc()
		return
	}
	key := fmt.Sprintf("%s/%x", m.Node, m.Session)
	n.hubMu.Lock()
	last, seen := n.hubSeqs[key]
	if seen && m.Seq <= last {
		n.hubMu.Unlock()
		n.m.rejected.WithLabelValues("replay").Inc()
		return
	}
	if !seen && len(n.hubSeqs) >= 16 {
		clear(n.hubSeqs) // hub sessions come and go; a replay within MaxSkew of a forgotten one only refreshes a heartbeat
	}
	n.hubSeqs[key] = m.Seq
	n.hubMu.Unlock()
	n.ep.Alive()
}

// Reason maps a Decode error to the reason it is counted under.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrBadMAC):
		return "bad_mac"
	case errors.Is(err, ErrVersion):
		return "unknown_version"
	case errors.Is(err, ErrUnknownNode):
		return "unknown_node"
	default:
		return "malformed"
	}
}
