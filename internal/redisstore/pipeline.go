package redisstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/linger"
)

// Pipeliner sends concurrent announces to Redis in batches: each worker
// takes the announces that are waiting and sends them in one script call
// (Store.sendCalls; a pipeline of calls under Redis Cluster), one write and
// one read. Under light load a batch is one announce and nothing waits for
// a timer; under heavy load batches grow (gather), and Redis and the node
// each make one system call pair and Redis one script call per batch
// instead of per announce. A batch holds up to maxBatch announces, but a
// queued UDP batch is never split. The script handles each announce as if
// it were alone, inside one atomic call, so exact counts are unchanged,
// and each announce is exactly one round trip.
//
// A front end's batch of scrapes goes through the same queue, with its
// announces (Batch): all the scrapes the worker took are one pipeline,
// sent beside its script call, so a UDP worker's scrapes share a round
// trip with each other and with every other worker's instead of taking
// one each.
// A scrape counts toward maxBatch for a quarter of an announce a hash.
//
// The queue is bounded: when it is full, Announce waits for room until its
// context ends (backpressure, never unbounded memory).
type Pipeliner struct {
	s        *Store
	calls    chan *pipelinedCall
	workers  int
	maxBatch int
	// yields bounds how many times a worker yields to gather a batch
	// (maxYields; a benchmark sets 0 to compare).
	yields int
	// linger is how long a worker whose batch is below linger.Fill waits
	// for more (0: never; WithLinger).
	linger time.Duration
}

// pipelinedCall is what a caller queues: one announce (HTTP) or a batch
// of them (a UDP worker's), answered together. The worker writes only
// res and done, which the item owns, so a caller that stopped waiting
// leaves nothing of its own to be written.
type pipelinedCall struct {
	calls []*announceCall
	res   []callResult
	// scr are the item's scrapes (hashes copied in), answered in place.
	scr  scrapes
	done chan struct{}
}

// weight is what the item counts for toward a batch's maxBatch.
func (c *pipelinedCall) weight() int { return len(c.calls) + c.scr.weight() }

func newPipelinedCall(calls []*announceCall) *pipelinedCall {
	return &pipelinedCall{calls: calls, res: make([]callResult, len(calls)), done: make(chan struct{})}
}

// finish answers every announce of c with err.
func (c *pipelinedCall) finish(err error) {
	for i := range c.res {
		c.res[i] = callResult{err: err}
	}
	c.scr.finish(err)
	close(c.done)
}

// NewPipeliner returns a pipeliner over s with the given number of workers
// (concurrent pipelines in flight), batch limit and queue length. It starts
// nothing; Run does.
func NewPipeliner(s *Store, workers, maxBatch, queue int) *Pipeliner {
	return &Pipeliner{s: s, calls: make(chan *pipelinedCall, queue), workers: max(workers, 1), maxBatch: max(maxBatch, 1), yields: maxYields}
}

// WithLinger has the workers wait up to d for more announces when a
// batch holds fewer than linger.Fill (see worker.linger) and returns p. Call it
// before Run.
func (p *Pipeliner) WithLinger(d time.Duration) *Pipeliner {
	p.linger = max(d, 0)
	return p
}

// Announce is Store.Announce through the pipeline. It needs Run to be running.
func (p *Pipeliner) Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	call := p.s.newCall(req, numWant)
	c := newPipelinedCall([]*announceCall{&call})
	if err := p.wait(ctx, c); err != nil {
		return bittorrent.AnnounceResult{}, err
	}
	return p.s.decode(&call, c.res[0])
}

// AnnounceBatch is Store.AnnounceBatch through the pipeline: the batch is
// one item of the queue, so the batches of several front-end workers (and
// single announces) share round trips.
func (p *Pipeliner) AnnounceBatch(ctx context.Context, reqs []*bittorrent.AnnounceRequest, numWant []int, out []bittorrent.AnnounceResult, errs []error) {
	calls, ptrs := p.s.newCalls(reqs, numWant)
	c := newPipelinedCall(ptrs)
	if err := p.wait(ctx, c); err != nil {
		for i := range reqs {
			out[i], errs[i] = bittorrent.AnnounceResult{}, err
		}
		return
	}
	p.s.decodeAll(calls, c.res, out, errs)
}

// wait queues c and waits for its answer, within the store's timeout.
func (p *Pipeliner) wait(ctx context.Context, c *pipelinedCall) error {
	ctx, cancel := context.WithTimeout(ctx, p.s.timeout)
	defer cancel()
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return fmt.Errorf("store pipeline: queue: %w", ctx.Err())
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store pipeline: %w", ctx.Err())
	}
}

// Scrape is Store.Scrape (an HTTP scrape: one round trip of its own; the
// pipeline carries the scrapes of batches, Batch).
func (p *Pipeliner) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	return p.s.Scrape(ctx, hashes)
}

// Batch is Store.Batch through the pipeline: the front end's announces
// and scrapes are one item of the queue, answered in the same turn as
// the other items queued meanwhile (the announces in one script call, the
// scrapes in one pipeline beside it).
func (p *Pipeliner) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	calls, ptrs := p.s.newCalls(b.Announces, b.NumWant)
	c := newPipelinedCall(ptrs)
	for _, h := range b.Scrapes {
		c.scr.add(h)
	}
	if err := p.wait(ctx, c); err != nil {
		for i := range b.Announces {
			b.AnnounceResults[i], b.AnnounceErrs[i] = bittorrent.AnnounceResult{}, err
		}
		for i := range b.Scrapes {
			b.ScrapeResults[i], b.ScrapeErrs[i] = nil, err
		}
		return
	}
	p.s.decodeAll(calls, c.res, b.AnnounceResults, b.AnnounceErrs)
	copy(b.ScrapeResults, c.scr.out)
	copy(b.ScrapeErrs, c.scr.errs)
}

// Ping is Store.Ping.
func (p *Pipeliner) Ping(ctx context.Context) error { return p.s.Ping(ctx) }

// Run sends pipelines until ctx ends. Announces still queued then fail.
func (p *Pipeliner) Run(ctx context.Context) error {
	done := make(chan struct{})
	for range p.workers {
		go func() {
			defer func() { done <- struct{}{} }()
			w := worker{p: p, batch: make([]*pipelinedCall, 0, p.maxBatch)}
			if p.linger > 0 {
				w.timer = time.NewTimer(p.linger)
				w.timer.Stop()
			}
			for {
				select {
				case <-ctx.Done():
					return
				case c := <-p.calls:
					w.batch, w.n = append(w.batch[:0], c), c.weight()
				}
				p.gather()
				w.fill()
				w.linger(ctx)
				p.send(ctx, w.batch)
			}
		}()
	}
	for range p.workers {
		<-done
	}
	for {
		select {
		case c := <-p.calls:
			c.finish(errors.New("store is shutting down"))
		default:
			return nil
		}
	}
}

// worker is one pipeline worker's batch in the making.
type worker struct {
	p     *Pipeliner
	batch []*pipelinedCall
	n     int // the batch's weight
	timer *time.Timer
	// lb says when not to linger (a lone client).
	lb linger.Backoff
}

// fill adds what is queued now, up to maxBatch.
func (w *worker) fill() {
	for w.n < w.p.maxBatch {
		select {
		case c := <-w.p.calls:
			w.batch = append(w.batch, c)
			w.n += c.weight()
		default:
			return
		}
	}
}

// linger waits up to p.linger for the batch to reach linger.Fill. Each
// round trip costs Redis (and the node) a fixed part, a system call pair
// and a wake-up, besides the script's work per announce; under load
// batches are large and that part is small, but at a modest rate spread
// over replicas each replica's worker would send batches of one or two,
// so that Redis's CPU per announce grows with the replicas of a tracker
// at the same load (issue 29: 74 µs with one replica, 100 µs with four,
// at 3,000 announces/s; 0.49 against 0.83 round trips an announce). A
// short wait makes every replica's batches about linger.Fill whatever
// their number, at the price of at most p.linger more latency, and only
// when the load is light (a full batch does not wait).
//
// A lone client announcing one request at a time (nothing can arrive
// while it waits) waits about once in linger.MaxSkip announces
// (linger.Backoff).
func (w *worker) linger(ctx context.Context) {
	if w.timer == nil || w.n >= min(linger.Fill, w.p.maxBatch) || !w.lb.Linger() {
		return
	}
	w.timer.Reset(w.p.linger)
	defer w.timer.Stop()
	caught := false
	for w.n < min(linger.Fill, w.p.maxBatch) {
		select {
		case c := <-w.p.calls:
			w.batch = append(w.batch, c)
			w.n += c.weight()
			caught = true
		case <-w.timer.C:
			w.lb.Settle(caught)
			return
		case <-ctx.Done():
			return
		}
	}
	w.lb.Settle(caught)
}

// maxYields bounds how many times a worker yields to gather a batch.
const maxYields = 8

// gather lets the goroutines that can run now (front ends that have read
// a request) add their announces before the worker takes its batch: it
// yields the processor, again while that brought more, up to p.yields
// times. Sending at once would wake Redis for a batch of one or two while
// requests already read wait their turn; each round trip costs a system
// call pair on both sides and, where the node and Redis share a core, two
// context switches, so batches that hold what is ready make announces
// cheaper for both. A yield with nothing else to run returns at once, so
// a lone announce does not wait. (Shared harness, 64 keep-alive
// connections, node and Redis on one core: about 18,700-19,400 announces/s
// and p99 7.4-7.7 ms, against 14,200-14,500 and 11.3 ms sending at once.)
func (p *Pipeliner) gather() {
	for range p.yields {
		n := len(p.calls)
		runtime.Gosched()
		if len(p.calls) == n {
			return
		}
	}
}

// send runs one batch and hands each caller its replies: its announces
// in one script call and, beside it, its scrapes in one pipeline.
func (p *Pipeliner) send(ctx context.Context, batch []*pipelinedCall) {
	ctx, cancel := context.WithTimeout(ctx, p.s.timeout)
	defer cancel()
	n, scraping := 0, false
	for _, c := range batch {
		n += len(c.calls)
		scraping = scraping || c.scr.len() > 0
	}
	calls := make([]*announceCall, 0, n)
	for _, c := range batch {
		calls = append(calls, c.calls...)
	}
	res := make([]callResult, n)
	var scraped sync.WaitGroup
	if scraping {
		scraped.Go(func() { p.s.answerScrapes(ctx, batch) })
	}
	if n > 0 {
		p.s.sendCalls(ctx, calls, res)
	}
	scraped.Wait()
	for _, c := range batch {
		res = res[copy(c.res, res):]
		close(c.done)
	}
}
