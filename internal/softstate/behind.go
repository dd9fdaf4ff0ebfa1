package softstate

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Queue is a bounded queue of writes to make behind: at most max of them,
// one per key (a newer write of a key replaces the one waiting). Add
// never blocks; it refuses when the queue is full or closed, and the
// caller then writes itself, so nothing is dropped. The UDP and HTTP
// refreshes (behind) and the WebSocket front end's (wsapi) use it.
type Queue[K comparable, V any] struct {
	mu      sync.Mutex
	max     int
	pending map[K]V
	closed  bool
}

// NewQueue returns a queue of at most max writes.
func NewQueue[K comparable, V any](max int) *Queue[K, V] {
	return &Queue[K, V]{max: max, pending: make(map[K]V)}
}

// Add queues v under k, and reports whether it did.
func (q *Queue[K, V]) Add(k K, v V) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if _, ok := q.pending[k]; !ok && len(q.pending) >= q.max {
		return false
	}
	q.pending[k] = v
	return true
}

// Remove drops the write waiting under k, if any.
func (q *Queue[K, V]) Remove(k K) {
	q.mu.Lock()
	delete(q.pending, k)
	q.mu.Unlock()
}

// Take empties the queue and returns what it held; with close it closes
// it too, so that nothing is queued after the last write.
func (q *Queue[K, V]) Take(close bool) []V {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = q.closed || close
	if len(q.pending) == 0 {
		return nil
	}
	out := make([]V, 0, len(q.pending))
	for _, v := range q.pending {
		out = append(out, v)
	}
	clear(q.pending)
	return out
}

// Full reports whether the queue takes no new key now (full or closed).
func (q *Queue[K, V]) Full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed || len(q.pending) >= q.max
}

// Len is how many writes wait.
func (q *Queue[K, V]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// behind is the queue of refreshes to write, one per peer.
type behind struct {
	*Queue[peerKey, bittorrent.PeerChange]
}

type peerKey struct {
	ih     bittorrent.InfoHash
	member string
}

func newBehind(max int) *behind {
	return &behind{NewQueue[peerKey, bittorrent.PeerChange](max)}
}

func (b *behind) add(c bittorrent.PeerChange) bool        { return b.Add(peerKey{c.InfoHash, c.Peer}, c) }
func (b *behind) take(close bool) []bittorrent.PeerChange { return b.Take(close) }
func (b *behind) len() int                                { return b.Len() }

// flushTimeout bounds the last write, at shutdown.
const flushTimeout = 5 * time.Second

// Run writes the refreshes queued, once every WriteBehind, until ctx
// ends; then it closes the queue (re-announces still coming are written
// before their answer) and writes what is left. It returns nil: a write
// that fails is counted and logged, and its refreshes are lost (the
// peers' next announces make them good).
func (s *Store) Run(ctx context.Context) error {
	if s.behind == nil {
		return nil
	}
	t := time.NewTicker(s.cfg.WriteBehind)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			defer cancel()
			s.flush(fctx, true)
			return nil
		case <-t.C:
			s.flush(ctx, false)
		}
	}
}

// flush writes what the queue holds.
func (s *Store) flush(ctx context.Context, last bool) {
	cs := s.behind.take(last)
	if len(cs) == 0 {
		return
	}
	refreshed, added, err := s.ref.Refresh(ctx, cs)
	s.m.written.Add(float64(refreshed))
	s.m.addedBack.Add(float64(added))
	if err != nil {
		s.m.failed.Add(float64(len(cs) - refreshed - added))
		s.m.errLog.Log(slog.LevelWarn, "refreshes written behind failed; the peers' next announces make them good", "refreshes", len(cs), "err", err)
	}
	if last {
		s.log.Info("refreshes written behind flushed at stop", "refreshes", len(cs), "err", err)
	}
}
