package redisstore

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// LinkConn is a Redis as the link uses it: publish and subscribe on the
// link's channels (on a Redis Cluster, sharded: SPUBLISH and SSUBSCRIBE at
// the shard that owns the channel's slot), the hub's registry of the
// processes heard on a member's channel, and the hubs' partition leases.
type LinkConn struct {
	rdb redis.UniversalClient
}

// NewLinkConn returns the link's use of rdb.
func NewLinkConn(rdb redis.UniversalClient) *LinkConn { return &LinkConn{rdb: rdb} }

// Publish publishes payload on channel.
func (c *LinkConn) Publish(ctx context.Context, channel string, sharded bool, payload []byte) error {
	if sharded {
		return c.rdb.SPublish(ctx, channel, payload).Err()
	}
	return c.rdb.Publish(ctx, channel, payload).Err()
}

// Subscribe subscribes to channels and waits for Redis to confirm. It
// returns a function that waits up to timeout for the next message (ok
// false: something else came, such as a confirmation; a timeout is an
// error whose Timeout() is true) and one that ends the subscription.
func (c *LinkConn) Subscribe(ctx context.Context, sharded bool, channels ...string) (
	receive func(ctx context.Context, timeout time.Duration) (channel string, payload []byte, ok bool, err error), close func() error, err error) {
	sub := c.rdb.Subscribe
	if sharded {
		sub = c.rdb.SSubscribe
	}
	ps := sub(ctx, channels...)
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, nil, err
	}
	receive = func(ctx context.Context, timeout time.Duration) (string, []byte, bool, error) {
		msg, err := ps.ReceiveTimeout(ctx, timeout)
		if m, ok := msg.(*redis.Message); ok {
			return m.Channel, []byte(m.Payload), true, err
		}
		return "", nil, false, err
	}
	return receive, ps.Close, nil
}

// Procs returns the hub's registry of the processes heard on channel
// (LinkProcsKey).
func (c *LinkConn) Procs(channel string, sharded bool) *Procs {
	return &Procs{rdb: c.rdb, key: LinkProcsKey(channel, sharded)}
}

// Leases returns the partition leases of the hubs on channel, as held by
// holder (NewLeases).
func (c *LinkConn) Leases(channel string, sharded bool, holder string, ttl, timeout time.Duration) *Leases {
	return NewLeases(c.rdb, channel, sharded, holder, ttl, timeout)
}

// Procs is the hub's registry of a member's processes: one hash, a field
// per process and per process's stream; what the fields hold is the hub's.
type Procs struct {
	rdb redis.UniversalClient
	key string
}

// All returns every field.
func (p *Procs) All(ctx context.Context) (map[string]string, error) {
	return p.rdb.HGetAll(ctx, p.key).Result()
}

// Get returns the values of fields (nil for a missing one).
func (p *Procs) Get(ctx context.Context, fields ...string) ([]any, error) {
	return p.rdb.HMGet(ctx, p.key, fields...).Result()
}

// Set writes fields in one command.
func (p *Procs) Set(ctx context.Context, fields map[string]any) error {
	return p.rdb.HSet(ctx, p.key, fields).Err()
}

// Del removes fields.
func (p *Procs) Del(ctx context.Context, fields ...string) error {
	return p.rdb.HDel(ctx, p.key, fields...).Err()
}
