package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// What a node holds, for its admin page: counted in the swarms of its swarm
// index (the swarms its clients announced in and those the hub relayed
// peers into; see Indexed) and in the swarms the caller adds (the torrents
// it carries, in allowed-torrents mode), never by scanning keys. Each count is exact for the
// swarms read; a node with more indexed swarms than the limit reads the
// most recent ones and says so.

// Held is the peers a node holds in its indexed swarms.
type Held struct {
	Swarms   int `json:"swarms"`
	Seeders  int `json:"seeders"`
	Leechers int `json:"leechers"` // BEP 21 partial seeds included
	// Truncated: the index held more swarms than were read.
	Truncated bool `json:"truncated,omitempty"`
}

// Peers is seeders plus leechers.
func (h Held) Peers() int { return h.Seeders + h.Leechers }

// heldBatch is how many swarms one pipeline counts.
const heldBatch = 500

// Held counts the live peers of the node's indexed swarms and of also,
// reading at most limit indexed swarms (the most recently announced in
// each part of the index).
func (s *Store) Held(ctx context.Context, limit int, also []bittorrent.InfoHash) (Held, error) {
	var out Held
	seen := make(map[string]bool, len(also))
	var extra []string
	for _, ih := range also {
		if m := string(ih[:]); !seen[m] {
			seen[m] = true
			extra = append(extra, m)
		}
	}
	now := s.now().UnixMilli()
	cutoff := strconv.FormatInt(now-s.lifetimeMs-indexSlack.Milliseconds(), 10)
	live := now - s.lifetimeMs
	perPart := max(1, limit/IndexParts)
	// Every part of the index in one round trip, then the swarms counted
	// in batches.
	keys := IndexKeys(s.ks.prefix, s.ks.node)
	tctx, cancel := context.WithTimeout(ctx, s.timeout)
	pipe := s.rdb.Pipeline()
	reads := make([]*redis.StringSliceCmd, len(keys))
	for i, key := range keys {
		reads[i] = pipe.ZRevRangeByScore(tctx, key, &redis.ZRangeBy{Min: "(" + cutoff, Max: "+inf", Count: int64(perPart + 1)})
	}
	_, err := pipe.Exec(tctx)
	cancel()
	if err != nil {
		return out, fmt.Errorf("read swarm index: %w", err)
	}
	var all []string
	for _, r := range reads {
		members := r.Val()
		if len(members) > perPart {
			members, out.Truncated = members[:perPart], true
		}
		all = append(all, slices.DeleteFunc(members, func(m string) bool { return seen[m] })...)
	}
	all = append(all, extra...)
	for start := 0; start < len(all); start += heldBatch {
		if err := s.count(ctx, all[start:min(start+heldBatch, len(all))], live, &out); err != nil {
			return out, err
		}
	}
	return out, nil
}

// count adds the live peers of the swarms of members (raw info hashes).
func (s *Store) count(ctx context.Context, members []string, cutoff int64, out *Held) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	keys := make([]SwarmKeys, 0, len(members))
	for _, m := range members {
		var ih [20]byte
		if copy(ih[:], m) == 20 {
			keys = append(keys, s.ks.Swarm(ih))
		}
	}
	for _, c := range countSwarms(ctx, s.rdb, keys, cutoff, nil) {
		if c.err != nil {
			return fmt.Errorf("count swarm peers: %w", c.err)
		}
		seeders, leechers := int(c.seeders), int(c.leechers+c.partial)
		if seeders+leechers > 0 {
			out.Swarms++
			out.Seeders += seeders
			out.Leechers += leechers
		}
	}
	return nil
}

// Beat says that process proc of this node runs; Processes counts those
// that said so within a window. A process that stopped drops out of the
// count by time, and its entry is removed by a later read.
func (s *Store) Beat(ctx context.Context, proc string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := ProcsKey(s.ks.prefix, s.ks.node)
	pipe := s.rdb.Pipeline()
	pipe.HSet(ctx, key, proc, s.now().UnixMilli())
	pipe.Expire(ctx, key, time.Hour)
	_, err := pipe.Exec(ctx)
	return err
}

// Leave removes process proc from the registry (at a clean stop).
func (s *Store) Leave(ctx context.Context, proc string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.rdb.HDel(ctx, ProcsKey(s.ks.prefix, s.ks.node), proc).Err()
}

// Processes returns the processes of this node that beat within window,
// and removes the entries of those that did not.
func (s *Store) Processes(ctx context.Context, window time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := ProcsKey(s.ks.prefix, s.ks.node)
	all, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	since := s.now().Add(-window).UnixMilli()
	var live, gone []string
	for p, v := range all {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= since {
			live = append(live, p)
		} else {
			gone = append(gone, p)
		}
	}
	if len(gone) > 0 {
		s.rdb.HDel(ctx, key, gone...) // best effort: the next read tries again
	}
	return live, nil
}
