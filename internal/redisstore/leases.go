package redisstore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Leases are the hubs' leases on the partitions of the link's relay, and
// their registry of live hubs, in one Redis (hub: the first member's link
// Redis). A lease is a key holding its hub's id, set with NX and an expiry
// and renewed by its holder only: a hub that dies loses its leases when
// they expire, and another takes them. Renewing and releasing compare the
// holder first, in a WATCH/MULTI transaction (no script), so that a hub
// never extends or deletes a lease another hub took after its own expired.
// Sharded (a Redis Cluster), every key carries the channels' hash tag, so
// that one transaction covers them all.
type Leases struct {
	rdb     redis.UniversalClient
	channel string
	sharded bool
	holder  string
	ttl     time.Duration
	timeout time.Duration
}

// NewLeases returns the leases of holder (a hub's id, unique per process)
// on the link of channel, expiring after ttl unless renewed. Each call
// takes at most timeout.
func NewLeases(rdb redis.UniversalClient, channel string, sharded bool, holder string, ttl, timeout time.Duration) *Leases {
	return &Leases{rdb: rdb, channel: channel, sharded: sharded, holder: holder, ttl: ttl, timeout: timeout}
}

// Holder is the id leases are taken under.
func (l *Leases) Holder() string { return l.holder }

func (l *Leases) key(part int) string { return LinkLeaseKey(l.channel, l.sharded, strconv.Itoa(part)) }

func (l *Leases) keys(parts []int) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = l.key(p)
	}
	return out
}

// Register records the holder as a live hub until now plus the lease time,
// drops the hubs whose time has passed, and returns how many are live.
func (l *Leases) Register(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	now := time.Now()
	key := LinkHubsKey(l.channel, l.sharded)
	pipe := l.rdb.TxPipeline()
	pipe.ZAdd(ctx, key, redis.Z{Score: float64(now.Add(l.ttl).UnixMilli()), Member: l.holder})
	pipe.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10))
	pipe.PExpire(ctx, key, 10*l.ttl)
	n := pipe.ZCard(ctx, key)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	return int(n.Val()), nil
}

// Deregister removes the holder from the live hubs (a clean stop).
func (l *Leases) Deregister(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.rdb.ZRem(ctx, LinkHubsKey(l.channel, l.sharded), l.holder).Err()
}

// Holders returns the holder of each of n partitions ("": free).
func (l *Leases) Holders(ctx context.Context, n int) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	vals, err := l.rdb.MGet(ctx, l.keys(parts)...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[i] = s
		}
	}
	return out, nil
}

// Take takes the lease of part if it is free.
func (l *Leases) Take(ctx context.Context, part int) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.rdb.SetNX(ctx, l.key(part), l.holder, l.ttl).Result()
}

// Renew extends the leases of parts that the holder still holds, and
// returns those.
func (l *Leases) Renew(ctx context.Context, parts []int) ([]int, error) {
	return l.ifHeld(ctx, parts, func(p redis.Pipeliner, key string) { p.PExpire(ctx, key, l.ttl) })
}

// Release gives up the leases of parts that the holder holds.
func (l *Leases) Release(ctx context.Context, parts []int) error {
	_, err := l.ifHeld(ctx, parts, func(p redis.Pipeliner, key string) { p.Del(ctx, key) })
	return err
}

// leaseTries bounds the transactions one call makes when another client
// changes a watched lease meanwhile (another hub taking one that expired).
const leaseTries = 3

// ifHeld runs op, in one transaction, on each lease of parts the holder
// holds, and returns those parts. The leases are watched while they are
// read, so none that changed hands meanwhile is touched.
func (l *Leases) ifHeld(ctx context.Context, parts []int, op func(redis.Pipeliner, string)) ([]int, error) {
	if len(parts) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	keys := l.keys(parts)
	var held []int
	var err error
	for range leaseTries {
		held = held[:0]
		err = l.rdb.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.MGet(ctx, keys...).Result()
			if err != nil {
				return err
			}
			for i, v := range vals {
				if s, ok := v.(string); ok && s == l.holder {
					held = append(held, parts[i])
				}
			}
			if len(held) == 0 {
				return nil
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, part := range held {
					op(p, l.key(part))
				}
				return nil
			})
			return err
		}, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return held, nil
}
