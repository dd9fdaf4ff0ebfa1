package softstate

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// behind is the queue of refreshes to write: at most max of them, one per
// peer (a newer refresh of a peer replaces the one waiting). add never
// blocks; it refuses when the queue is full or closed, and the caller
// then writes the announce itself, so nothing is dropped.
type behind struct {
	mu      sync.Mutex
	max     int
	pending map[peerKey]bittorrent.PeerChange
	closed  bool
}

type peerKey struct {
	ih     bittorrent.InfoHash
	member string
}

func newBehind(max int) *behind {
	return &behind{max: max, pending: make(map[peerKey]bittorrent.PeerChange)}
}

// add queues a refresh, and reports whether it did.
func (b *behind) add(c bittorrent.PeerChange) bool {
	k := peerKey{c.InfoHash, c.Peer}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	if _, ok := b.pending[k]; !ok && len(b.pending) >= b.max {
		return false
	}
	b.pending[k] = c
	return true
}

// take empties the queue and returns what it held; close closes it too,
// so that nothing is queued after the last write.
func (b *behind) take(close bool) []bittorrent.PeerChange {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = b.closed || close
	if len(b.pending) == 0 {
		return nil
	}
	out := make([]bittorrent.PeerChange, 0, len(b.pending))
	for _, c := range b.pending {
		out = append(out, c)
	}
	clear(b.pending)
	return out
}

func (b *behind) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

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
