package softstate

import (
	"bytes"
	"context"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// readGroup merges the swarm reads of front-end batches that want one at
// the same time into one round trip, as the store's pipeliner merges
// their announces: the first batch to want a read leads a round; it
// yields the processor a few times so that the batches that can run now
// add their swarms, then reads them all and wakes the others, which wait
// for it. A round's read is bounded by the store's timeout, so nobody
// waits longer than that.
type readGroup struct {
	mu  sync.Mutex
	cur *readRound // the round taking swarms; nil: none
}

type readRound struct {
	hashes []bittorrent.InfoHash
	done   chan struct{}
}

// readYields bounds how often a round's leader yields to gather swarms.
const readYields = 4

// read reads hashes (and the swarms of the batches that join the round)
// into the cache, and returns once they are read.
func (s *Store) read(ctx context.Context, hashes []bittorrent.InfoHash, now time.Time) {
	g := &s.reads
	g.mu.Lock()
	r, lead := g.cur, false
	if r == nil {
		r, lead = &readRound{done: make(chan struct{})}, true
		g.cur = r
	}
	r.hashes = append(r.hashes, hashes...)
	g.mu.Unlock()
	if !lead {
		<-r.done
		return
	}
	for range readYields {
		runtime.Gosched()
	}
	g.mu.Lock()
	g.cur = nil
	all := r.hashes
	g.mu.Unlock()
	slices.SortFunc(all, func(a, b bittorrent.InfoHash) int { return bytes.Compare(a[:], b[:]) })
	s.readSwarms(ctx, slices.Compact(all), now)
	close(r.done)
}
