package hub

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
)

func (h *Hub) resyncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.resync:
		}
		start := time.Now()
		h.mu.Lock()
		why := slices.Sorted(maps.Keys(h.why))
		clear(h.why)
		// Only partitions were asked for (taken, or their subscription
		// made again): those; else every partition the hub relays.
		var parts map[int]bool
		if !h.wantAll {
			parts = h.wantParts
		}
		h.wantParts, h.wantAll = nil, false
		h.resyncing = len(why) > 0
		h.mu.Unlock()
		if len(why) == 0 {
			// A request that came while the last resync was being taken
			// left its signal, but that resync took its reason and
			// started after it: it is served.
			continue
		}
		n, err := h.resyncParts(ctx, parts)
		h.mu.Lock()
		h.resyncing = false
		h.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		h.record(ResyncRecord{Started: start.UTC(), Reasons: why, Took: time.Since(start), Applied: n, Err: errString(err)})
		if err != nil {
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

// HistoryLen is how many resyncs the hub remembers for its status.
const HistoryLen = 20

// ResyncRecord is one resync: when it started, the reasons it was asked
// for (the requests while it was pending share it), how long it took,
// the peer changes it applied, and what it could not do (empty: all).
type ResyncRecord struct {
	Started time.Time     `json:"started"`
	Reasons []string      `json:"reasons"`
	Took    time.Duration `json:"took_ns"`
	Applied int           `json:"changes_applied"`
	Err     string        `json:"error,omitempty"`
}

func (h *Hub) record(r ResyncRecord) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.history) == HistoryLen {
		h.history = slices.Delete(h.history, 0, 1)
	}
	h.history = append(h.history, r)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// resyncBatch is how many torrents one resync step reads and writes.
const resyncBatch = 256

// resyncRun is the state of one resync: the first error, and the members
// given up for this run because one of their operations ran out of time
// (an unreachable member would cost a timeout per step; it is tried again
// by the retry).
type resyncRun struct {
	mu    sync.Mutex
	first error
	down  map[*member]bool
}

func (r *resyncRun) failed(mb *member, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first == nil {
		r.first = err
	}
	var ne net.Error
	if mb != nil && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
		r.down[mb] = true
	}
}

func (r *resyncRun) usable(mb *member) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.down[mb]
}

// each runs f for every i < n side by side and waits.
func each(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

// Resync brings every live node to the union of all live nodes' current
// peers for the torrents it carries: for each torrent in any node's swarm
// index, read every node's live peers and stops, and apply the newest of
// each peer to every node (applying keeps the most recent of each peer, so
// it only ever adds what a node lacks, refreshes what it holds older, or
// removes what stopped since). A stop is remembered where it happened, so
// a peer that stopped while messages were lost is removed everywhere by
// the resync, never copied back from a node that missed the stop. Nodes
// are read side by side, and members written side by side, so a distant
// member costs its round trips once per step, not once per node.
//
// A hub resyncs the partitions it relays (partitions.go); the torrents of
// the others are other hubs' to resync. Torrent sharing, which is not
// partitioned, runs at the hub that relays partition 0.
func (h *Hub) Resync(ctx context.Context) (int, error) { return h.resyncParts(ctx, nil) }

// resyncParts is Resync of the partitions in parts that the hub relays
// (nil: all it relays).
func (h *Hub) resyncParts(ctx context.Context, parts map[int]bool) (int, error) {
	nodes := h.live("")
	if len(nodes) < 2 {
		return 0, nil
	}
	// What cannot be read or written now (a member or a Redis Cluster
	// shard down, a timeout) is skipped and the resync goes on with the
	// rest; the first error is returned, so the whole resync is retried.
	run := &resyncRun{down: map[*member]bool{}}
	if h.cfg.Share && h.owns(0) && (parts == nil || parts[0]) {
		places := map[string]allowed.Place{}
		for _, t := range nodes {
			if t.mb.Share != nil {
				p := *t.mb.Share
				p.Member, p.ShareTo = t.mb.Name, t.mb.ShareTo
				places[t.node] = p
			}
		}
		lim := h.cfg.ShareLimits
		if lim == (allowed.ShareLimits{}) {
			lim = allowed.DefaultShareLimits
		}
		rep, err := allowed.Share(ctx, places, lim)
		h.m.shared.Add(float64(rep.Copied))
		for reason, n := range rep.Refused {
			h.m.refused.WithLabelValues(reason).Add(float64(n))
		}
		if len(rep.Refused) > 0 {
			h.log.Warn("shared torrents not copied", "copied", rep.Copied, "by_reason", rep.Refused)
		}
		if err != nil {
			run.failed(nil, err)
		}
	}
	// What each node's keyspace holds is its own to write: read within
	// bounds, each change checked (bounds.go), the rest counted.
	b := h.cfg.Bounds
	refused := make([]refusals, len(nodes))
	indexed := make([][]bittorrent.InfoHash, len(nodes))
	// Only the index parts of the partitions to resync are read (part i
	// holds the info hashes whose first byte is i, partition i % count);
	// what a hostile node filed elsewhere is still filtered below.
	want := func(part int) bool {
		p := part % h.parts
		return h.owns(p) && (parts == nil || parts[p])
	}
	each(len(nodes), func(i int) {
		refused[i] = refusals{}
		ihs, bad, err := nodes[i].mb.Relay.Indexed(ctx, nodes[i].node, b.Swarms+1, want)
		if err != nil {
			run.failed(nodes[i].mb, err)
		}
		if len(ihs) > b.Swarms {
			ihs = ihs[:b.Swarms]
			refused[i]["too_many_swarms"]++
		}
		refused[i]["bad_type"] += bad
		indexed[i] = ihs
	})
	defer func() {
		all := refusals{}
		for i, r := range refused {
			if len(r) > 0 && r.total() > 0 {
				h.log.Warn("resync left out what a node's keyspace held", append([]any{"node", nodes[i].node, "member", nodes[i].mb.Name}, r.reasons()...)...)
			}
			all.add(r)
		}
		for reason, n := range all {
			h.m.resyncRefused.WithLabelValues(reason).Add(float64(n))
		}
	}()
	seen := map[bittorrent.InfoHash]bool{}
	var torrents []bittorrent.InfoHash
	for _, ihs := range indexed {
		for _, ih := range ihs {
			p := link.Partition(ih, h.parts)
			if !h.owns(p) || parts != nil && !parts[p] {
				continue
			}
			if !seen[ih] {
				seen[ih] = true
				torrents = append(torrents, ih)
			}
		}
	}
	var applied int
	var appliedMu sync.Mutex
	for start := 0; start < len(torrents) && ctx.Err() == nil; start += resyncBatch {
		batch := torrents[start:min(start+resyncBatch, len(torrents))]
		ahead := time.Now().Add(h.cfg.Link.MaxSkew).UnixMilli()
		read := make([][][]bittorrent.PeerChange, len(nodes))
		each(len(nodes), func(i int) {
			if !run.usable(nodes[i].mb) {
				return
			}
			swarms, bad, err := nodes[i].mb.Relay.Swarms(ctx, nodes[i].node, batch, b.Peers+1)
			if err != nil {
				run.failed(nodes[i].mb, err)
			}
			refused[i]["bad_type"] += bad
			admit(swarms, ahead, b, refused[i])
			read[i] = swarms
		})
		union := make([]map[string]bittorrent.PeerChange, len(batch))
		// listed[k]: the nodes whose peers of torrent k are their
		// member's own to share (carried by the node's own list), which
		// another member's node receives only as mayReceive says.
		listed := make([][]int, len(batch))
		for k, ih := range batch {
			union[k] = unionOf(read, k, nil)
			for i, swarms := range read {
				if k < len(swarms) && len(swarms[k]) > 0 && nodes[i].mb.carrier.Listed(ctx, nodes[i].node, ih) {
					listed[k] = append(listed[k], i)
				}
			}
		}
		byMember := map[*member][]redisstore.Target{}
		var order []*member
		for _, t := range nodes {
			if !run.usable(t.mb) {
				continue
			}
			for k, ih := range batch {
				if len(union[k]) == 0 || !t.mb.carrier.Carries(ctx, t.node, ih) {
					continue
				}
				view := union[k]
				var skip map[int]bool
				for _, i := range listed[k] {
					if !h.mayReceive(ctx, nodes[i].mb, nodes[i].node, t.mb, t.node, ih) {
						if skip == nil {
							skip = map[int]bool{}
						}
						skip[i] = true
					}
				}
				if skip != nil {
					view = unionOf(read, k, skip)
					if len(view) == 0 {
						continue
					}
				}
				cs := make([]bittorrent.PeerChange, 0, len(view))
				for _, c := range view {
					cs = append(cs, c)
				}
				if _, ok := byMember[t.mb]; !ok {
					order = append(order, t.mb)
				}
				byMember[t.mb] = append(byMember[t.mb], redisstore.Target{Node: t.node, Changes: cs})
			}
		}
		each(len(order), func(i int) {
			mb := order[i]
			n, err := mb.Relay.Apply(ctx, byMember[mb])
			appliedMu.Lock()
			applied += n
			appliedMu.Unlock()
			if err != nil {
				run.failed(mb, err)
			}
		})
	}
	if run.first == nil {
		run.first = ctx.Err()
	}
	return applied, run.first
}

// unionOf is the newest of each peer of torrent k over what the nodes
// read, but the nodes in skip.
func unionOf(read [][][]bittorrent.PeerChange, k int, skip map[int]bool) map[string]bittorrent.PeerChange {
	u := map[string]bittorrent.PeerChange{}
	for i, swarms := range read {
		if skip[i] || k >= len(swarms) {
			continue
		}
		for _, c := range swarms[k] {
			// The store's one rule (as apply.lua has it): the newest
			// wins, at the same millisecond a stop, then the higher class.
			if old, ok := u[c.Peer]; !ok || redisstore.Supersedes(c, old) {
				u[c.Peer] = c
			}
		}
	}
	return u
}
