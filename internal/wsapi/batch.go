package wsapi

import (
	"context"
	"runtime"
	"sync"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Announces go to the store in batches: each batcher takes the announces
// that are waiting (after letting the readers that are ready queue
// theirs) and sends them in one pipeline, one round trip for all; each is
// still its own atomic script call, so nothing about its result changes.
// Under light load a batch is one announce and nothing waits for a timer.
// The queue is bounded: a reader waits for room (backpressure).
const (
	batchers   = 4
	maxBatch   = 64
	batchQueue = 1024
)

type pendingAnnounce struct {
	a    bittorrent.RTCAnnounce
	res  bittorrent.RTCResult
	err  error
	done chan struct{}
}

var pendingAnnounces = sync.Pool{New: func() any { return &pendingAnnounce{done: make(chan struct{}, 1)} }}

// announceBatched is store.Announce through the batchers.
func (s *Server) announceBatched(a *bittorrent.RTCAnnounce) (bittorrent.RTCResult, error) {
	p := pendingAnnounces.Get().(*pendingAnnounce)
	p.a = *a
	s.batch <- p
	<-p.done
	res, err := p.res, p.err
	*p = pendingAnnounce{done: p.done}
	pendingAnnounces.Put(p)
	return res, err
}

// runBatcher sends batches until the queue is closed.
func (s *Server) runBatcher(ctx context.Context) {
	batch := make([]*pendingAnnounce, 0, maxBatch)
	as := make([]*bittorrent.RTCAnnounce, 0, maxBatch)
	out := make([]bittorrent.RTCResult, maxBatch)
	errs := make([]error, maxBatch)
	for p := range s.batch {
		batch = append(batch[:0], p)
		for range gatherYields {
			runtime.Gosched()
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case p, ok := <-s.batch:
				if !ok {
					break fill
				}
				batch = append(batch, p)
			default:
				break fill
			}
		}
		as = as[:0]
		for _, p := range batch {
			as = append(as, &p.a)
		}
		s.store.AnnounceBatch(ctx, as, out[:len(batch)], errs[:len(batch)])
		for i, p := range batch {
			p.res, p.err = out[i], errs[i]
			out[i], errs[i] = bittorrent.RTCResult{}, nil
			p.done <- struct{}{}
		}
		clear(batch)
		clear(as)
	}
}
