package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/members"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// member is a Member at work: its endpoint on the member's link channel,
// and its writer, which takes relay jobs from a bounded queue and writes
// them into the member's Redis in batches (one round trip for whatever
// queued meanwhile, so a distant member costs latency, not throughput).
type member struct {
	Member
	cfg     link.Config // the network's, on the member's channel
	ep      *link.Endpoint
	nodes   map[string]bool
	carrier Carrier
	queue   chan relayJob

	ctx      context.Context // ends when the member is removed or the hub stops
	cancel   context.CancelFunc
	wg       sync.WaitGroup // its goroutines
	started  bool           // subscription and heartbeat running (h.mu)
	pending  sync.WaitGroup // jobs queued and not yet written
	droppedN atomic.Int64
	failedN  atomic.Int64
	up       atomic.Bool // subscribed to the member's channel now
	// follows cancels the subscription to each partition's channel the
	// hub relays (h.mu); leases are the hub's partition leases in this
	// member's Redis, used when it is the lease member.
	follows map[int]context.CancelFunc
	leases  Leaser
	procs   Registry // the member's registry of processes (procsKey)
}

// setUp records whether the hub is subscribed to the member's channel.
func (h *Hub) setUp(mb *member, up bool) {
	mb.up.Store(up)
	v := 0.0
	if up {
		v = 1
	}
	h.m.up.WithLabelValues(mb.Name).Set(v)
}

// relayJob is one message's changes for the nodes of one member.
type relayJob struct {
	origin  string // the node that sent it
	st      *procState
	sent    time.Time
	nodes   []string
	changes []bittorrent.PeerChange
}

// writeBatch bounds how many changes (times the nodes they go to) one
// write takes: a few full messages, so that a distant member gets them in
// one round trip, while no single script call grows long enough to hold
// up the member's Redis.
const writeBatch = 4096

// SetMembers makes the hub's members those given: a member whose name is
// new starts, one no longer given stops (its processes are forgotten, so
// nothing is relayed to it), one given with other settings restarts, and
// the others go on untouched. Members are checked first: names valid and
// distinct, a node id in one member at most, a member without node ids
// only alone, shares only to other members. On an error nothing changes.
func (h *Hub) SetMembers(ms []Member) error {
	if err := checkMembers(ms); err != nil {
		return err
	}
	h.mu.Lock()
	var stop, start []*member
	keep := map[string]bool{}
	for _, m := range ms {
		if old := h.members[m.Name]; old != nil && old.same(m) {
			keep[m.Name] = true
			continue
		}
		if old := h.members[m.Name]; old != nil {
			stop = append(stop, old)
		}
		mb := h.newMember(m)
		h.members[m.Name] = mb
		keep[m.Name] = true
		start = append(start, mb)
	}
	for name, mb := range h.members {
		if !keep[name] {
			stop = append(stop, mb)
			delete(h.members, name)
		}
	}
	h.leaseMember = ""
	if len(ms) > 0 {
		h.leaseMember = ms[0].Name
	}
	for _, mb := range stop {
		h.dropProcs(func(_ procKey, st *procState) bool { return st.member == mb })
	}
	running := h.runCtx != nil
	h.mu.Unlock()
	for _, mb := range stop {
		mb.close()
		h.m.backlog.DeleteLabelValues(mb.Name)
		h.m.up.DeleteLabelValues(mb.Name)
		h.log.Info("member stopped", "member", mb.Name)
	}
	for _, mb := range start {
		if running {
			h.start(mb)
		}
		h.log.Info("member added", "member", mb.Name, "channel", mb.cfg.Channel, "nodes", mb.Nodes)
	}
	if running && len(start) > 0 {
		h.requestResync("members")
	}
	return nil
}

// checkMembers validates a list of members.
func checkMembers(ms []Member) error {
	rs := make([]members.Roster, len(ms))
	for i, m := range ms {
		if m.Link == nil || m.Relay == nil {
			return fmt.Errorf("member %q: no Redis", m.Name)
		}
		rs[i] = members.Roster{Name: m.Name, Nodes: m.Nodes, ShareTo: m.ShareTo}
	}
	return members.Check(rs, false)
}

func (h *Hub) newMember(m Member) *member {
	lc := h.cfg.Link
	if m.Channel != "" {
		lc.Channel = m.Channel
	}
	lc.Sharded = m.Sharded
	mb := &member{Member: m, cfg: lc, ep: link.NewEndpoint(lc, h.cfg.Name, m.Link, h.sign), nodes: map[string]bool{},
		carrier: m.Carrier, queue: make(chan relayJob, h.cfg.Backlog), follows: map[int]context.CancelFunc{},
		leases: m.Link.Leases(lc.Channel, lc.Sharded, h.holder, h.cfg.LeaseTTL, leaseTimeout), procs: m.Link.Procs(lc.Channel, lc.Sharded)}
	if mb.carrier == nil {
		mb.carrier = everything{}
	}
	for _, n := range m.Nodes {
		mb.nodes[n] = true
	}
	mb.ctx, mb.cancel = context.WithCancel(context.Background())
	mb.wg.Add(1)
	go func() { defer mb.wg.Done(); h.write(mb) }()
	return mb
}

// same reports whether m is what mb runs.
func (mb *member) same(m Member) bool {
	return mb.Link == m.Link && mb.Relay == m.Relay && mb.Carrier == m.Carrier && mb.Share == m.Share &&
		mb.Channel == m.Channel && mb.Sharded == m.Sharded && slices.Equal(mb.Nodes, m.Nodes) && slices.Equal(mb.ShareTo, m.ShareTo)
}

// start starts the member's subscription and heartbeat under the hub's
// run (once).
func (h *Hub) start(mb *member) {
	h.mu.Lock()
	if mb.started || h.members[mb.Name] != mb {
		h.mu.Unlock()
		return
	}
	mb.started = true
	// Counted before SetMembers can remove the member and wait for its
	// goroutines (under the same lock).
	mb.wg.Add(2)
	for _, p := range h.Partitions() {
		h.follow(mb, p)
	}
	h.mu.Unlock()
	go func() {
		defer mb.wg.Done()
		// Before listening, so that replays of what was heard before a
		// restart are refused; in the member's own goroutine, so that
		// an unreachable member holds up no other.
		if err := h.loadProcs(mb.ctx, mb); err != nil {
			h.log.Warn("could not load known processes", "member", mb.Name, "err", err)
		}
		h.listen(mb)
	}()
	go func() { defer mb.wg.Done(); h.heartbeat(mb) }()
}

// close stops the member's goroutines; what its queue still held is
// dropped (a resync covers it if the member comes back).
func (mb *member) close() {
	mb.cancel()
	mb.wg.Wait()
	for {
		select {
		case <-mb.queue:
			mb.pending.Done()
		default:
			return
		}
	}
}

// enqueue hands a job to the member's writer, or drops it when the queue
// is full: counted, and a resync asked for.
func (mb *member) enqueue(j relayJob) bool {
	mb.pending.Add(1)
	select {
	case mb.queue <- j:
		return true
	default:
		mb.pending.Done()
		return false
	}
}

// write is the member's writer: it takes what is queued, up to writeBatch
// changes, and writes it in one Apply.
func (h *Hub) write(mb *member) {
	for {
		var batch []relayJob
		select {
		case <-mb.ctx.Done():
			return
		case j := <-mb.queue:
			batch = append(batch, j)
		}
		size := len(batch[0].changes) * len(batch[0].nodes)
	more:
		for size < writeBatch {
			select {
			case j := <-mb.queue:
				batch = append(batch, j)
				size += len(j.changes) * len(j.nodes)
			default:
				break more
			}
		}
		h.m.backlog.WithLabelValues(mb.Name).Set(float64(len(mb.queue)))
		h.writeJobs(mb, batch)
		for range batch {
			mb.pending.Done()
		}
	}
}

// writeJobs writes a batch of jobs into the member's nodes that carry
// each torrent.
func (h *Hub) writeJobs(mb *member, batch []relayJob) {
	var ts []redisstore.Target
	written := make([]int, len(batch))
	for i, j := range batch {
		byHash := map[bittorrent.InfoHash][]bittorrent.PeerChange{}
		var order []bittorrent.InfoHash
		for _, c := range j.changes {
			if _, ok := byHash[c.InfoHash]; !ok {
				order = append(order, c.InfoHash)
			}
			byHash[c.InfoHash] = append(byHash[c.InfoHash], c)
		}
		for _, node := range j.nodes {
			for _, ih := range order {
				cs := byHash[ih]
				if !h.mayReceive(mb.ctx, j.st.member, j.origin, mb, node, ih) {
					h.m.dropped.Add(float64(len(cs)))
					continue
				}
				ts = append(ts, redisstore.Target{Node: node, Changes: cs})
				written[i] += len(cs)
			}
		}
	}
	n, err := mb.Relay.Apply(mb.ctx, ts)
	if err != nil {
		if mb.ctx.Err() != nil {
			return
		}
		mb.failedN.Add(1)
		h.m.memberFailed.WithLabelValues(mb.Name).Inc()
		h.errLog.Log(slog.LevelError, "relay failed", "member", mb.Name, "err", err)
		h.requestResync("relay_failed") // what was not written, the resync writes
	}
	h.m.relayed.Add(float64(n))
	now := time.Now()
	h.mu.Lock()
	for i, j := range batch {
		lag := now.Sub(j.sent)
		if err == nil {
			j.st.Relayed += int64(written[i])
		}
		j.st.LagMillis = lag.Milliseconds()
		h.m.lag.Observe(lag.Seconds())
	}
	h.mu.Unlock()
}

// flush waits until every job queued so far is written (tests).
func (h *Hub) flush() {
	for _, mb := range h.memberSnapshot() {
		mb.pending.Wait()
	}
}

// procsKey persists the processes the hub has heard on a member's channel,
// in the member's Redis, so that a restarted hub knows whom to resync
// before they speak, and refuses replays of what they sent before the
// restart: field "<node>/<session hex>", value "<started ms> <last seq>
// <last heard ms> <latest claimed ms>" (the control stream); and, written
// by the hub relaying the partition, field "<node>/<session hex>/<stream>",
// value "<last seq> <last heard ms>" (a partition's stream), which a hub
// that takes the partition reads before it listens (streams.go).
func (mb *member) procsKey() string {
	return redisstore.LinkProcsKey(mb.cfg.Channel, mb.cfg.Sharded)
}

func (k procKey) field() string { return k.String() }

func (h *Hub) loadProcs(ctx context.Context, mb *member) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := mb.procs.All(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var stale, streams []string
	for field, v := range m {
		if strings.Count(field, "/") == 2 {
			streams = append(streams, field)
			continue
		}
		// What the member's Redis holds is read as another's input: a
		// field that does not parse, names a node the member does not
		// speak for, or lies about times, is dropped.
		k, st, err := parseProc(field, v, mb, time.Now(), h.cfg.Link.MaxSkew)
		if err != nil || len(mb.nodes) > 0 && !mb.nodes[k.node] || h.forgettable(st, time.Now()) {
			stale = append(stale, field)
			continue
		}
		if old := h.proc(k); old != nil && old.member != mb {
			continue // known through another member: that one stands
		}
		if !h.addProc(k, st) {
			stale = append(stale, field)
		}
	}
	// A stream of a process not kept is dropped with it.
	for _, field := range streams {
		if k, _, ok := parseStreamField(field, h.parts); !ok || h.proc(k) == nil || h.proc(k).member != mb {
			stale = append(stale, field)
		}
	}
	if len(stale) > 0 {
		return mb.procs.Del(ctx, stale...)
	}
	return nil
}

// forget drops the member's processes not heard from for NodeTimeout, in
// memory and in its Redis. Their messages are older than the allowed skew
// by then, so a replay of one is refused as stale, never taken for a new
// process.
func (h *Hub) forget(ctx context.Context, mb *member) {
	h.mu.Lock()
	now := time.Now()
	var gone []string
	for _, k := range h.dropProcs(func(_ procKey, st *procState) bool { return st.member == mb && h.forgettable(st, now) }) {
		gone = append(gone, k.field())
		for p := range h.parts {
			gone = append(gone, streamField(k, uint16(p+1)))
		}
	}
	h.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := mb.procs.Del(ctx, gone...); err != nil {
		h.errLog.Log(slog.LevelWarn, "could not forget silent processes", "member", mb.Name, "err", err)
	}
}

// persist writes the state of the member's processes heard since the last
// call to its Redis, in one command.
func (h *Hub) persist(ctx context.Context, mb *member) {
	h.mu.Lock()
	fields := map[string]any{}
	var windows []*seqWindow
	h.eachProc(func(k procKey, st *procState) {
		if st.member != mb {
			return
		}
		if st.dirty {
			fields[k.field()] = fmt.Sprintf("%d %d %d %d", st.Started.UnixMilli(), st.LastSeq, st.LastHeartbeat.UnixMilli(), st.claimed)
			st.dirty = false
		}
		for stream, w := range st.streams {
			if w.dirty {
				fields[streamField(k, stream)] = fmt.Sprintf("%d %d", w.last, w.heard.UnixMilli())
				w.dirty = false
				windows = append(windows, w)
			}
		}
	})
	h.mu.Unlock()
	if len(fields) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := mb.procs.Set(ctx, fields); err != nil {
		h.errLog.Log(slog.LevelWarn, "could not record process states", "member", mb.Name, "err", err)
		h.mu.Lock()
		h.eachProc(func(k procKey, st *procState) {
			if _, ok := fields[k.field()]; ok && st.member == mb {
				st.dirty = true
			}
		})
		for _, w := range windows {
			w.dirty = true
		}
		h.mu.Unlock()
	}
}

// overdueGaps resyncs the member's processes whose missing sequence
// numbers did not arrive within a heartbeat (one that went silent after a
// hole included).
func (h *Hub) overdueGaps(mb *member, now time.Time) {
	h.mu.Lock()
	var due []procKey
	h.eachProc(func(k procKey, st *procState) {
		if st.member == mb && st.overdue(now, h.cfg.Link.Heartbeat) {
			due = append(due, k)
		}
	})
	h.mu.Unlock()
	for _, k := range due {
		h.nodeResync(k, mb, "gap")
	}
}

// listen hands every node message on the member's control channel to
// handle (its partitions' channels are followed one by one: follow). The
// hub hears its own heartbeats on the down channel, and anything arriving
// proves the subscription carries messages (under a backlog its heartbeat
// may be queued behind updates, and that is no split), so the endpoint's
// soft split here means total silence; after any lost subscription,
// whatever flowed meanwhile is lost, so the hub resyncs.
func (h *Hub) listen(mb *member) {
	mb.ep.Listen(mb.ctx, link.Listener{
		Handle: func(channel string, b []byte) {
			mb.ep.Alive()
			if channel != mb.cfg.DownChannel() {
				h.handle(mb.ctx, mb, b)
				// Time spent on a message is not silence of the
				// subscription.
				mb.ep.Alive()
			}
		},
		Down: func(err error) {
			h.setUp(mb, false)
			h.errLog.Log(slog.LevelWarn, "hub subscription failed", "member", mb.Name, "err", err)
		},
		Subscribed: func(bool) { h.setUp(mb, true) },
		Lost: func(reason string) {
			h.setUp(mb, false)
			if strings.HasPrefix(reason, "soft split") {
				h.m.splits.Inc()
			}
			h.log.Warn("hub link re-established", "member", mb.Name, "reason", reason)
			h.requestResync("resubscribed")
		},
	}, mb.cfg.UpChannel(), mb.cfg.DownChannel())
}

// heartbeat records the member's processes, forgets silent ones, looks for
// overdue gaps and publishes the hub's heartbeat on the member's down
// channel, once per heartbeat interval.
func (h *Hub) heartbeat(mb *member) {
	t := time.NewTicker(h.cfg.Link.Heartbeat)
	defer t.Stop()
	ctx := mb.ctx
	for {
		select {
		case <-ctx.Done():
			h.persist(context.WithoutCancel(ctx), mb) // what was heard last
			return
		case <-t.C:
		}
		h.persist(ctx, mb)
		h.forget(ctx, mb)
		h.overdueGaps(mb, time.Now())
		pctx, cancel := context.WithTimeout(ctx, h.cfg.Link.Heartbeat)
		err := mb.ep.Publish(pctx, mb.cfg.DownChannel(), 0, link.KindHubHeartbeat, nil)
		if err == nil && time.Since(time.UnixMilli(h.legacy.Load())) < h.cfg.NodeTimeout {
			// A node before partitions is heard: it reads heartbeats
			// of its own format only.
			err = mb.ep.PublishLegacy(pctx, mb.cfg.DownChannel(), link.KindHubHeartbeat)
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			h.errLog.Log(slog.LevelWarn, "hub heartbeat failed", "member", mb.Name, "err", err)
		}
		cancel()
	}
}

// mayReceive reports whether node (of member to) may receive the peers of
// ih that node origin (of member from) holds. It must carry the torrent.
// Across members, a torrent the origin carries by its own list (its
// operator chose it: allowed-torrents mode) goes only to nodes that list it
// too, or to a member the origin's member shares with ("share_to" in the
// members file, which the hub's operator writes): a node that carries
// everything is not let in by its own say-so. Within a member, and for
// torrents the origin carries because it carries everything, nothing more
// is asked.
func (h *Hub) mayReceive(ctx context.Context, from *member, origin string, to *member, node string, ih bittorrent.InfoHash) bool {
	if !to.carrier.Carries(ctx, node, ih) {
		return false
	}
	if from == nil || from == to || from.sharesWith(to.Name) || to.carrier.Listed(ctx, node, ih) {
		return true
	}
	return !from.carrier.Listed(ctx, origin, ih)
}

// sharesWith reports whether the member's operator consented, in the
// members file, to share its torrents with member name.
func (mb *member) sharesWith(name string) bool {
	return slices.Contains(mb.ShareTo, "*") || slices.Contains(mb.ShareTo, name)
}
