package hub

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// The relay is partitioned by info hash (link.Partition) over the hubs
// that run. A hub relays the partitions it holds a lease on: it listens to
// their channels at every member, relays their changes, and resyncs them.
// Every hub hears every member's control channel (hellos and heartbeats),
// so each knows which processes are live and resyncs its own partitions
// when one joins.
//
// Leases and the registry of live hubs live in the Redis of the lease
// member: the first member of the list SetMembers was given (the
// single-Redis setup's only member; in a network, the first member of the
// members file, which every hub of the network reads). Each tick
// (LeaseTTL/3) a hub records itself as live, renews its leases, and
// balances: it aims at ceil(partitions / live hubs), gives up the
// partitions above that (the highest first) and takes free ones up to it.
// A hub that dies stops renewing: its leases expire within LeaseTTL and
// the others take them within a tick more. A hub that takes a partition
// listens to its channel at every member first and then resyncs it, so
// whatever went unrelayed between holders is repaired. A hub that cannot
// reach the lease Redis keeps what it holds (a second hub relaying a
// partition costs writes, never correctness: relaying is idempotent) and
// gives up only what the lease Redis says another hub holds.

// DefaultLeaseTTL is how long a partition's lease lasts unless renewed:
// a dead hub's partitions are taken over within it plus a tick (LeaseTTL/3).
const DefaultLeaseTTL = 3 * time.Second

// leaseTimeout bounds each call to the lease Redis.
const leaseTimeout = 2 * time.Second

// Leaser holds a hub's leases on partitions (redisstore.Leases).
type Leaser interface {
	Holder() string
	Register(ctx context.Context) (int, error)
	Deregister(ctx context.Context) error
	Holders(ctx context.Context, n int) ([]string, error)
	Take(ctx context.Context, part int) (bool, error)
	Renew(ctx context.Context, parts []int) ([]int, error)
	Release(ctx context.Context, parts []int) error
}

var _ Leaser = (*redisstore.Leases)(nil)

// owns reports whether the hub relays partition p now.
func (h *Hub) owns(p int) bool { return p >= 0 && p < h.parts && h.owned[p].Load() }

// Partitions returns the partitions the hub relays now, in order.
func (h *Hub) Partitions() []int {
	out := []int{}
	for p := range h.parts {
		if h.owned[p].Load() {
			out = append(out, p)
		}
	}
	return out
}

// leaser returns the leases of the lease member, or nil when there is
// none.
func (h *Hub) leaser() Leaser {
	h.mu.Lock()
	defer h.mu.Unlock()
	if mb := h.members[h.leaseMember]; mb != nil {
		return mb.leases
	}
	return nil
}

// leaseLoop balances the hub's partitions every tick until ctx ends, and
// then gives them up (a clean stop: the others take them at their next
// tick, without waiting for the leases to expire).
func (h *Hub) leaseLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		h.balance(ctx)
		select {
		case <-ctx.Done():
			h.giveUpAll()
			return
		case <-t.C:
		}
	}
}

// balance records the hub as live, renews its leases, drops what another
// hub holds, and gives up or takes partitions towards its share.
func (h *Hub) balance(ctx context.Context) {
	l := h.leaser()
	if l == nil {
		return
	}
	hubs, err := l.Register(ctx)
	var holders []string
	if err == nil {
		holders, err = l.Holders(ctx, h.parts)
	}
	if err != nil {
		if ctx.Err() == nil {
			h.m.leaseFailures.Inc()
			h.errLog.Log(slog.LevelWarn, "partition leases unreachable; relaying the partitions held", "err", err)
		}
		return
	}
	h.mu.Lock()
	h.hubsLive = hubs
	h.mu.Unlock()
	if others := otherCounts(holders, h.parts); len(others) > 0 {
		h.errLog.Log(slog.LevelError, "hubs with another partition count hold leases: set TRACKER_LINK_PARTITIONS the same on every node and hub",
			"partitions", h.parts, "hubs", others)
	}
	mine := l.Holder()
	var held, taken []int
	dropped := map[string][]int{}
	defer func() {
		// One line a round, however many partitions moved.
		if len(taken) > 0 {
			h.log.Info("partitions taken", "partitions", taken, "hubs", hubs)
		}
		for why, ps := range dropped {
			h.log.Info("partitions given up", "partitions", ps, "why", why, "hubs", hubs)
		}
	}()
	drop := func(p int, why string) {
		if h.drop(p) {
			dropped[why] = append(dropped[why], p)
		}
	}
	for _, p := range h.Partitions() {
		switch holders[p] {
		case mine:
			held = append(held, p)
		case "":
			// Expired while this hub could not renew it: it is still
			// this hub's if nobody took it.
			if ok, err := l.Take(ctx, p); err == nil && ok {
				held = append(held, p)
				holders[p] = mine
				continue
			}
			drop(p, "lease lost")
		default:
			drop(p, "taken by another hub")
		}
	}
	renewed, err := l.Renew(ctx, held)
	if err != nil {
		h.m.leaseFailures.Inc()
		h.errLog.Log(slog.LevelWarn, "could not renew partition leases", "err", err)
		renewed = held
	}
	for _, p := range held {
		if !slices.Contains(renewed, p) {
			drop(p, "lease lost")
		}
	}
	target := (h.parts + max(hubs, 1) - 1) / max(hubs, 1)
	switch {
	case len(renewed) > target:
		extra := renewed[target:] // the highest
		for _, p := range extra {
			drop(p, "rebalanced")
		}
		if err := l.Release(ctx, extra); err != nil {
			h.errLog.Log(slog.LevelWarn, "could not give up partition leases (they expire)", "err", err)
		}
	case len(renewed) < target:
		// Free partitions, from a place of the hub's own, so that hubs
		// taking at once seldom reach for the same ones.
		start := int(hashString(mine) % uint64(h.parts))
		n := len(renewed)
		for i := range h.parts {
			p := (start + i) % h.parts
			if n >= target || ctx.Err() != nil {
				break
			}
			if holders[p] != "" {
				continue
			}
			ok, err := l.Take(ctx, p)
			if err != nil {
				h.m.leaseFailures.Inc()
				break
			}
			if ok {
				if h.take(p) {
					taken = append(taken, p)
				}
				n++
			}
		}
	}
	h.m.owned.Set(float64(len(h.Partitions())))
}

// hashString is FNV-1a of s.
func hashString(s string) uint64 {
	x := uint64(14695981039346656037)
	for i := range len(s) {
		x = (x ^ uint64(s[i])) * 1099511628211
	}
	return x
}

// take starts relaying partition p: its channel is listened to at every
// member, and each subscription, once made, asks for a resync of p. It
// reports whether p was not relayed before.
func (h *Hub) take(p int) bool {
	h.mu.Lock()
	if h.owned[p].Swap(true) {
		h.mu.Unlock()
		return false
	}
	h.ownedSince[p] = time.Now()
	for _, mb := range h.members {
		h.follow(mb, p)
	}
	h.mu.Unlock()
	h.m.takeovers.Inc()
	return true
}

// drop stops relaying partition p: its subscriptions end, and what the
// hub knew of its streams is forgotten (another hub relays it now; if it
// comes back, it reads them again and resyncs). It reports whether p was
// relayed.
func (h *Hub) drop(p int) bool {
	h.mu.Lock()
	if !h.owned[p].Swap(false) {
		h.mu.Unlock()
		return false
	}
	for _, mb := range h.members {
		if cancel := mb.follows[p]; cancel != nil {
			cancel()
			delete(mb.follows, p)
		}
	}
	stream := uint16(p + 1)
	h.eachProc(func(_ procKey, st *procState) { delete(st.streams, stream) })
	h.mu.Unlock()
	h.m.owned.Set(float64(len(h.Partitions())))
	return true
}

// giveUpAll releases every lease the hub holds and leaves the registry of
// live hubs (a clean stop).
func (h *Hub) giveUpAll() {
	l := h.leaser()
	if l == nil || h.keepLeases {
		return
	}
	ctx := context.Background()
	parts := h.Partitions()
	// Their streams' last state for the next holder, before it is
	// dropped with them.
	for _, mb := range h.memberSnapshot() {
		h.persist(ctx, mb)
	}
	for _, p := range parts {
		h.drop(p)
	}
	if len(parts) > 0 {
		h.log.Info("partitions given up", "partitions", parts, "why", "stopping")
	}
	if err := l.Release(ctx, parts); err != nil {
		h.log.Warn("could not give up partition leases (they expire)", "err", err)
	}
	if err := l.Deregister(ctx); err != nil {
		h.log.Warn("could not leave the registry of live hubs", "err", err)
	}
}

// follow listens to partition p's channel at member mb, if the member's
// subscriptions run (h.mu held). A subscription made (first, or again
// after a failure) asks for a resync of p: what flowed before it was not
// heard here.
func (h *Hub) follow(mb *member, p int) {
	if !mb.started || mb.follows[p] != nil || mb.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(mb.ctx)
	mb.follows[p] = cancel
	mb.wg.Add(1)
	channel := mb.cfg.PartitionChannel(p)
	go func() {
		defer mb.wg.Done()
		// What was accepted on this partition's streams, as its last
		// holder recorded it, before anything is heard: a replay of an
		// earlier message is refused here too.
		if err := h.loadStreams(ctx, mb, p); err != nil && ctx.Err() == nil {
			h.errLog.Log(slog.LevelWarn, "could not read the partition's streams; they start afresh", "member", mb.Name, "partition", p, "err", err)
		}
		mb.ep.Follow(ctx, channel, func(b []byte) { h.handle(ctx, mb, b) },
			func(err error) {
				h.errLog.Log(slog.LevelWarn, "hub partition subscription failed", "member", mb.Name, "partition", p, "err", err)
			},
			func(first bool) {
				reason := "takeover"
				if !first {
					reason = "resubscribed"
				}
				h.requestPartResync(p, reason)
			})
	}()
}

// requestPartResync asks for a resync of partition p only.
func (h *Hub) requestPartResync(p int, reason string) {
	h.m.resyncReq.WithLabelValues(reason).Inc()
	h.askResyncOf(reason, p)
}

// ownAll makes the hub relay every partition without leases (tests of
// one hub that does not run).
func (h *Hub) ownAll() {
	for p := range h.parts {
		h.owned[p].Store(true)
	}
}

// holderID is a hub process's id in the leases: its name, a random
// session (two hubs may share a name: compose's --scale) and its
// partition count, so that hubs of different counts see each other.
func holderID(name string, parts int) string {
	return fmt.Sprintf("%s/%016x/p%d", name, link.NewSession(), parts)
}

// otherCounts returns the holders of leases whose partition count is not
// parts (hubs misconfigured against this one).
func otherCounts(holders []string, parts int) []string {
	var out []string
	suffix := "/p" + strconv.Itoa(parts)
	for _, h := range holders {
		if h != "" && !strings.HasSuffix(h, suffix) && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}
