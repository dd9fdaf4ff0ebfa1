package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// ReadSwarms reads the live peers of small swarms, for a node's read cache
// (internal/softstate): in one round trip, one ZRANGE WITHSCORES of each
// swarm's set, no script. A swarm is read whole when it is one set of at
// most max members (out[i] its live peers, each as a change: class,
// last seen, member; whole[i] true); a swarm in buckets, of more members,
// with no peers, or that could not be read is not (whole[i] false), and
// the caller asks the store otherwise. What a keyspace holds is checked
// like input: a member of a length no writer of ours writes, or a score
// out of the bands, makes the swarm not read. The error is the first of
// the swarms that could not be read for a reason other than their size.
func (s *Store) ReadSwarms(ctx context.Context, hashes []bittorrent.InfoHash, max int) (out [][]bittorrent.PeerChange, whole []bool, err error) {
	out = make([][]bittorrent.PeerChange, len(hashes))
	whole = make([]bool, len(hashes))
	if len(hashes) == 0 {
		return out, whole, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cutoff := s.now().UnixMilli() - s.lifetimeMs
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(hashes))
	for i, ih := range hashes {
		cmds[i] = pipe.ZRangeWithScores(ctx, s.ks.Swarm(ih).Peers, 0, int64(max))
	}
	pipe.Exec(ctx) // per-command errors are read below
	for i, c := range cmds {
		zs, e := c.Result()
		if e != nil {
			if err == nil && !errors.Is(e, redis.Nil) {
				err = fmt.Errorf("store read swarms: %w", e)
			}
			continue
		}
		if len(zs) == 0 || len(zs) > max {
			continue
		}
		ch, ok := liveChanges(hashes[i], zs, cutoff)
		out[i], whole[i] = ch, ok
	}
	return out, whole, err
}

// liveChanges turns a swarm set's members and scores into changes, the
// live ones only; false when a member or score is not one of ours.
func liveChanges(ih bittorrent.InfoHash, zs []redis.Z, cutoff int64) ([]bittorrent.PeerChange, bool) {
	out := make([]bittorrent.PeerChange, 0, len(zs))
	for _, z := range zs {
		m, ok := z.Member.(string)
		if _, perr := bittorrent.PeerFromBinary(m); !ok || perr != nil || z.Score < 0 || z.Score >= 3*float64(band) {
			return nil, false
		}
		op, seen := PeerClass(z.Score)
		if seen <= cutoff {
			continue
		}
		out = append(out, bittorrent.PeerChange{InfoHash: ih, Op: op, Seen: seen, Peer: m})
	}
	return out, true
}
