package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Pipeliner sends concurrent announces to Redis in pipelines: each worker
// takes the announces that are waiting, sends them in one write and reads
// their replies in one read. Under light load a batch is one announce and
// nothing waits for a timer; under heavy load batches grow, and Redis and
// the node each make one system call pair per batch instead of per
// announce. Every announce is still one script, so atomicity and exact
// counts are unchanged, and each is exactly one round trip.
//
// The queue is bounded: when it is full, Announce waits for room until its
// context ends (backpressure, never unbounded memory).
type Pipeliner struct {
	s        *Store
	calls    chan *pipelinedCall
	workers  int
	maxBatch int
}

type pipelinedCall struct {
	*announceCall
	done chan pipelinedResult
}

type pipelinedResult struct {
	res []any
	err error
}

// NewPipeliner returns a pipeliner over s with the given number of workers
// (concurrent pipelines in flight), batch limit and queue length. It starts
// nothing; Run does.
func NewPipeliner(s *Store, workers, maxBatch, queue int) *Pipeliner {
	return &Pipeliner{s: s, calls: make(chan *pipelinedCall, queue), workers: max(workers, 1), maxBatch: max(maxBatch, 1)}
}

// Announce is Store.Announce through the pipeline. It needs Run to be running.
func (p *Pipeliner) Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	ctx, cancel := context.WithTimeout(ctx, p.s.timeout)
	defer cancel()
	call := p.s.newCall(req, numWant)
	c := &pipelinedCall{announceCall: &call, done: make(chan pipelinedResult, 1)}
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return bittorrent.AnnounceResult{}, fmt.Errorf("store announce: queue: %w", ctx.Err())
	}
	select {
	case r := <-c.done:
		return c.decode(r.res, r.err)
	case <-ctx.Done():
		return bittorrent.AnnounceResult{}, fmt.Errorf("store announce: %w", ctx.Err())
	}
}

// AnnounceBatch is Store.AnnounceBatch: the batch is a pipeline already,
// so it does not wait in the queue.
func (p *Pipeliner) AnnounceBatch(ctx context.Context, reqs []*bittorrent.AnnounceRequest, numWant []int, out []bittorrent.AnnounceResult, errs []error) {
	p.s.AnnounceBatch(ctx, reqs, numWant, out, errs)
}

// Scrape is Store.Scrape.
func (p *Pipeliner) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	return p.s.Scrape(ctx, hashes)
}

// Ping is Store.Ping.
func (p *Pipeliner) Ping(ctx context.Context) error { return p.s.Ping(ctx) }

// Run sends pipelines until ctx ends. Announces still queued then fail.
func (p *Pipeliner) Run(ctx context.Context) error {
	done := make(chan struct{})
	for range p.workers {
		go func() {
			defer func() { done <- struct{}{} }()
			batch := make([]*pipelinedCall, 0, p.maxBatch)
			for {
				select {
				case <-ctx.Done():
					return
				case c := <-p.calls:
					batch = append(batch[:0], c)
				}
			fill:
				for len(batch) < p.maxBatch {
					select {
					case c := <-p.calls:
						batch = append(batch, c)
					default:
						break fill
					}
				}
				p.send(ctx, batch)
			}
		}()
	}
	for range p.workers {
		<-done
	}
	for {
		select {
		case c := <-p.calls:
			c.done <- pipelinedResult{err: errors.New("store is shutting down")}
		default:
			return nil
		}
	}
}

// send runs one batch and hands each caller its reply.
func (p *Pipeliner) send(ctx context.Context, batch []*pipelinedCall) {
	ctx, cancel := context.WithTimeout(ctx, p.s.timeout)
	defer cancel()
	calls := make([]*announceCall, len(batch))
	for i, c := range batch {
		calls[i] = c.announceCall
	}
	for i, cmd := range p.s.sendCalls(ctx, calls) {
		res, err := cmd.Slice()
		batch[i].done <- pipelinedResult{res: res, err: err}
	}
}

// sendCalls runs calls in one pipeline: EVALSHA for all, then EVAL for
// those Redis did not have the script for (after a restart or SCRIPT
// FLUSH). Each command carries its own reply or error.
func (s *Store) sendCalls(ctx context.Context, calls []*announceCall) []*redis.Cmd {
	cmds := s.exec(ctx, calls, false)
	var retry []*announceCall
	var retryIdx []int
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			retry, retryIdx = append(retry, calls[i]), append(retryIdx, i)
		}
	}
	if len(retry) > 0 {
		for j, cmd := range s.exec(ctx, retry, true) {
			cmds[retryIdx[j]] = cmd
		}
	}
	return cmds
}

func (s *Store) exec(ctx context.Context, calls []*announceCall, eval bool) []*redis.Cmd {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		if eval {
			cmds[i] = announceScript.Eval(ctx, pipe, c.keys, c.args...)
		} else {
			cmds[i] = announceScript.EvalSha(ctx, pipe, c.keys, c.args...)
		}
	}
	// Per-command errors are read from each command by the caller.
	pipe.Exec(ctx)
	return cmds
}
