package softstate

import (
	"bytes"
	"context"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/linger"
)

// readGroup merges the swarm reads of front-end batches that want one at
// the same time into one round trip, as the store's pipeliner merges
// their announces: the first batch to want a read leads a round; it
// yields the processor a few times so that the batches that can run now
// add their swarms, then reads them all and wakes the others, which wait
// for it. A round's read is bounded by the store's timeout, so nobody
// waits longer than that and the linger below.
//
// Then, when the round holds fewer than linger.Fill swarms, the leader waits
// up to the linger (Config.ReadLinger) for more, as the store's pipeline
// does for announces: each round trip costs Redis a fixed part (a system
// call pair, a wake-up) far above a small swarm's read, and at a modest
// rate spread over the replicas of a node, each replica's rounds would
// hold one swarm, so that Redis's CPU per announce would grow with the
// replicas (issue 29). A lone client waits about once in
// linger.MaxSkip announces (linger.Backoff).
type readGroup struct {
	mu  sync.Mutex
	cur *readRound     // the round taking swarms; nil: none
	lb  linger.Backoff // under mu
}

type readRound struct {
	hashes []bittorrent.InfoHash
	adopt  []adoptee
	more   chan struct{} // a swarm joined (for the leader's linger)
	done   chan struct{}
}

// readYields bounds how often a round's leader yields to gather swarms.
const readYields = 4

// read reads hashes (and the swarms of the batches that join the round)
// into the cache, checks adopt's peers (see adoptee), and returns once
// they are read.
func (s *Store) read(ctx context.Context, hashes []bittorrent.InfoHash, adopt []adoptee, now time.Time) {
	g := &s.reads
	g.mu.Lock()
	r, lead := g.cur, false
	if r == nil {
		r, lead = &readRound{more: make(chan struct{}, 1), done: make(chan struct{})}, true
		g.cur = r
	}
	r.hashes = append(r.hashes, hashes...)
	r.adopt = append(r.adopt, adopt...)
	g.mu.Unlock()
	if !lead {
		select {
		case r.more <- struct{}{}:
		default:
		}
		// A waiter whose own request ends stops waiting (what the round
		// reads still fills the cache).
		select {
		case <-r.done:
		case <-ctx.Done():
		}
		return
	}
	defer close(r.done)
	// The round reads for every announce in it: the leader's request
	// ending (an HTTP client that hung up) must not fail the others'.
	// The read is bounded by the store's timeout, the linger by its own
	// (it ends with no request).
	ctx = context.WithoutCancel(ctx)
	for range readYields {
		runtime.Gosched()
	}
	s.linger(r)
	g.mu.Lock()
	g.cur = nil
	all, adopt := r.hashes, r.adopt
	g.mu.Unlock()
	slices.SortFunc(all, func(a, b bittorrent.InfoHash) int { return bytes.Compare(a[:], b[:]) })
	s.readSwarms(ctx, slices.Compact(all), adopt, now)
}

// linger waits up to the linger for round r to hold linger.Fill swarms
// (see readGroup).
func (s *Store) linger(r *readRound) {
	g := &s.reads
	if s.cfg.ReadLinger <= 0 {
		return
	}
	g.mu.Lock()
	n := len(r.hashes)
	wait := n < linger.Fill && g.lb.Linger()
	g.mu.Unlock()
	if !wait {
		return
	}
	t := time.NewTimer(s.cfg.ReadLinger)
	defer t.Stop()
	caught := false
	for n < linger.Fill {
		select {
		case <-r.more:
			caught = true
			g.mu.Lock()
			n = len(r.hashes)
			g.mu.Unlock()
			continue
		case <-t.C:
		}
		break
	}
	g.mu.Lock()
	g.lb.Settle(caught)
	g.mu.Unlock()
}
