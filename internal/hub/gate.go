package hub

import (
	"log/slog"
	"time"
)

// A node's requests for a resync (a process joining, a hello, a gap in
// its sequence) are the node's to make at will: its key holder can send
// ten hellos a second, and each resync reads every node's swarms. So each
// node id has a gate. A request more than its wait after the last one it
// passed asks for a resync at once; one within the wait is deferred to
// the wait's end (one deferred resync at a time per node, which every
// later request shares), and the wait doubles, up to ResyncBackoffMax; a
// node whose requests stop for twice its wait starts again at
// ResyncBackoff. An honest node asks rarely (a process starts, its
// carried torrents change), so its requests pass at once, and its second
// within the wait (replicas starting together) is served a few seconds
// later; a node that asks without end is served once per
// ResyncBackoffMax. The hub's own reasons (start, resubscribed, members,
// reset, retry, relay failures) are not gated.

// DefaultResyncBackoff and DefaultResyncBackoffMax are the gate's first
// and longest waits.
const (
	DefaultResyncBackoff    = 2 * time.Second
	DefaultResyncBackoffMax = time.Minute
)

type resyncGate struct {
	last    time.Time     // when a request last passed (or a deferred one ran)
	wait    time.Duration // before the next may pass
	pending bool          // a deferred request is scheduled
}

// take decides on a request at now: pass it (true), or defer it to at
// (non-zero when a deferred request is to be scheduled; zero when one is
// already).
func (g *resyncGate) take(now time.Time, first, longest time.Duration) (pass bool, at time.Time) {
	if g.pending {
		return false, time.Time{}
	}
	if g.wait == 0 || now.Sub(g.last) > 2*g.wait {
		g.wait = first
	}
	if g.last.IsZero() || now.Sub(g.last) >= g.wait {
		g.last = now
		return true, time.Time{}
	}
	g.pending = true
	at = g.last.Add(g.wait)
	g.wait = min(2*g.wait, longest)
	return false, at
}

// ran records that the deferred request ran at now.
func (g *resyncGate) ran(now time.Time) { g.pending, g.last = false, now }

// nodeResync asks for a resync on behalf of node process k (heard on mb),
// through its node's gate.
func (h *Hub) nodeResync(k procKey, mb *member, reason string) {
	now := time.Now()
	h.mu.Lock()
	np := h.nodes[k.node]
	if np == nil { // forgotten meanwhile: nothing to gate
		h.mu.Unlock()
		h.requestResync(reason)
		return
	}
	pass, at := np.gate.take(now, h.cfg.ResyncBackoff, h.cfg.ResyncBackoffMax)
	h.mu.Unlock()
	// Counted when asked for, whether it passes or waits.
	h.m.resyncReq.WithLabelValues(reason).Inc()
	if pass {
		h.reqLog.Log(slog.LevelInfo, "resync", "reason", reason, "member", mb.Name, "node", k.node, "session", k.String())
		h.askResync(reason)
		return
	}
	h.m.resyncDeferred.Inc()
	if at.IsZero() {
		return // shares the one already deferred
	}
	time.AfterFunc(at.Sub(now), func() {
		h.mu.Lock()
		if np := h.nodes[k.node]; np != nil {
			np.gate.ran(time.Now())
		}
		h.mu.Unlock()
		h.askResync(reason)
	})
}
