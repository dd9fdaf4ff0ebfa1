package testkit

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// TripCounter is a client hook that counts the round trips (a command
// alone, or a pipeline) that carry a command named Command (lower case,
// as go-redis names it: "zcount"): a test's way to see that requests
// share round trips.
type TripCounter struct {
	Command string
	n       atomic.Int64
}

// Count is the number of such round trips so far.
func (h *TripCounter) Count() int64 { return h.n.Load() }

// Reset sets the count to zero.
func (h *TripCounter) Reset() { h.n.Store(0) }

func (h *TripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *TripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == h.Command {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *TripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == h.Command {
				h.n.Add(1)
				break
			}
		}
		return next(ctx, cmds)
	}
}
