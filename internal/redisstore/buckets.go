package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// The reads of a swarm that are not scripts (scrape, the held counts, a
// resync) know its layout from swarm.lua: one set, or past 128 peers
// buckets with a hash of their number and of the swarm's counts.

// maxBuckets is swarm.lua's MAXB (prelude.go): a bucket count read beyond
// it is not one the scripts wrote.
const maxBuckets = 1024

// parseMeta reads a buckets hash (HMGET of b, S, L, P, lo): its number of
// buckets (0: the swarm is one set) and, when no member can have expired
// by cutoff, its counts.
func parseMeta(vals []any, cutoff int64) (buckets int, counts *swarmCount, err error) {
	if len(vals) != 5 {
		return 0, nil, fmt.Errorf("buckets hash: %d fields read, want 5", len(vals))
	}
	if vals[0] == nil {
		return 0, nil, nil
	}
	var n [5]int64
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			return 0, nil, fmt.Errorf("buckets hash: field %d missing", i)
		}
		if n[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, nil, fmt.Errorf("buckets hash: field %d: %w", i, err)
		}
	}
	if n[0] < 1 || n[0] > maxBuckets {
		return 0, nil, fmt.Errorf("buckets hash: %d buckets", n[0])
	}
	if n[4] > cutoff {
		counts = &swarmCount{seeders: n[1], leechers: n[2], partial: n[3]}
	}
	return int(n[0]), counts, nil
}

// swarmCount is the live peers of a swarm by class, or why they could not
// be read.
type swarmCount struct {
	seeders, leechers, partial int64
	err                        error
}

// countSwarms counts the live peers of each swarm of keys: one round trip
// reads each set's counts and its buckets hash, and more may add commands
// of its own to that pipeline; a bucketed swarm whose kept counts may
// include expired members (none was written since some expired) is
// counted bucket by bucket in a second.
func countSwarms(ctx context.Context, rdb redis.UniversalClient, keys []SwarmKeys, cutoff int64, more func(redis.Pipeliner)) []swarmCount {
	type read struct {
		s, l, p *redis.IntCmd
		meta    *redis.SliceCmd
	}
	pipe := rdb.Pipeline()
	reads := make([]read, len(keys))
	for i, k := range keys {
		reads[i] = read{
			s:    zcount(ctx, pipe, k.Peers, bittorrent.OpSeeder, cutoff),
			l:    zcount(ctx, pipe, k.Peers, bittorrent.OpLeecher, cutoff),
			p:    zcount(ctx, pipe, k.Peers, bittorrent.OpPartial, cutoff),
			meta: pipe.HMGet(ctx, k.Buckets, metaFields...),
		}
	}
	if more != nil {
		more(pipe)
	}
	pipe.Exec(ctx) // per-command errors are read below
	out := make([]swarmCount, len(keys))
	type again struct {
		i    int
		cmds [][3]*redis.IntCmd
	}
	var later []again
	for i, r := range reads {
		if err := cmp.Or(r.meta.Err(), r.s.Err(), r.l.Err(), r.p.Err()); err != nil {
			out[i].err = err
			continue
		}
		n, counts, err := parseMeta(r.meta.Val(), cutoff)
		switch {
		case err != nil:
			out[i].err = err
		case n == 0:
			out[i] = swarmCount{seeders: r.s.Val(), leechers: r.l.Val(), partial: r.p.Val()}
		case counts != nil:
			out[i] = *counts
		default:
			later = append(later, again{i: i, cmds: make([][3]*redis.IntCmd, n)})
		}
	}
	if len(later) == 0 {
		return out
	}
	pipe = rdb.Pipeline()
	for _, a := range later {
		k := keys[a.i]
		for b := range a.cmds {
			key := k.Bucket(b)
			a.cmds[b] = [3]*redis.IntCmd{zcount(ctx, pipe, key, bittorrent.OpSeeder, cutoff), zcount(ctx, pipe, key, bittorrent.OpLeecher, cutoff), zcount(ctx, pipe, key, bittorrent.OpPartial, cutoff)}
		}
	}
	pipe.Exec(ctx)
	for _, a := range later {
		var sum [3]int64
		var err error
		for _, b := range a.cmds {
			for j, cmd := range b {
				err = cmp.Or(err, cmd.Err())
				sum[j] += cmd.Val()
			}
		}
		out[a.i] = swarmCount{seeders: sum[0], leechers: sum[1], partial: sum[2], err: err}
	}
	return out
}

// badData is an error of what a keyspace held that no writer of ours
// writes: a key of the wrong type, a buckets hash out of range. A reader
// of another node's keyspace skips and counts it (IsBadData), rather than
// failing, so that one planted key cannot fail every resync.
type badData struct{ err error }

func (b badData) Error() string { return b.err.Error() }
func (b badData) Unwrap() error { return b.err }

// IsBadData reports whether err is what a keyspace held that no writer of
// ours writes (a key of the wrong type, a layout out of range).
func IsBadData(err error) bool {
	var b badData
	return errors.As(err, &b) || redis.HasErrorPrefix(err, "WRONGTYPE")
}

// readSwarmPeers reads every member of each swarm of keys with its score
// (at most limit of each of its sets; -1: no limit):
// one round trip for the sets and buckets hashes, a second for the
// buckets of bucketed swarms. more adds commands to the first.
func readSwarmPeers(ctx context.Context, rdb redis.UniversalClient, keys []SwarmKeys, limit int64, more func(redis.Pipeliner)) ([][]redis.Z, []error) {
	stop := limit - 1
	if limit < 0 {
		stop = -1
	}
	pipe := rdb.Pipeline()
	sets := make([]*redis.ZSliceCmd, len(keys))
	metas := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		sets[i] = pipe.ZRangeWithScores(ctx, k.Peers, 0, stop)
		metas[i] = pipe.HGet(ctx, k.Buckets, "b")
	}
	if more != nil {
		more(pipe)
	}
	pipe.Exec(ctx) // per-command errors are read below
	out := make([][]redis.Z, len(keys))
	errs := make([]error, len(keys))
	rest := map[int][]*redis.ZSliceCmd{}
	pipe = rdb.Pipeline()
	for i, k := range keys {
		zs, err := sets[i].Result()
		n, err2 := metas[i].Int()
		bucketed := err2 == nil
		switch {
		case errors.Is(err2, redis.Nil):
			err2 = nil // one set
		case bucketed && (n < 1 || n > maxBuckets):
			err2 = badData{fmt.Errorf("buckets hash: %d buckets", n)}
		}
		if err = cmp.Or(err, err2); err != nil {
			errs[i] = err
			continue
		}
		out[i] = zs
		if !bucketed {
			continue
		}
		for b := range n {
			rest[i] = append(rest[i], pipe.ZRangeWithScores(ctx, k.Bucket(b), 0, stop))
		}
	}
	if len(rest) == 0 {
		return out, errs
	}
	pipe.Exec(ctx)
	for i, cmds := range rest {
		for _, c := range cmds {
			zs, err := c.Result()
			if err != nil {
				errs[i], out[i] = err, nil
				break
			}
			out[i] = append(out[i], zs...)
		}
	}
	return out, errs
}
