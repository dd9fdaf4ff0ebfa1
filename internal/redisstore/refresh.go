package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

//go:embed refresh.lua
var refreshSrc string

// refreshPerCall bounds the refreshes of one function call on one Redis,
// and of one round trip: Redis serves nobody else while it runs them
// (a few µs a refresh), so a window's refreshes go as several round
// trips, between which Redis serves its other clients.
const refreshPerCall = 128

// Refresh writes refreshes of peers this node answered already (regular
// re-announces that change nothing but when each peer was last seen,
// written behind by internal/softstate): each change's Op (a class, never
// a stop) and Seen for its Peer in its swarm, applied by time as
// refresh.lua says (a peer held with a newer time is left; a peer not
// held is added back unless a stop at least as new is recorded). It
// returns how many were refreshed in place and how many added back. On
// one Redis it sends calls of up to refreshPerCall refreshes each, one
// round trip after another (under
// Redis Cluster one call per swarm, up to refreshPerCall refreshes a
// round trip). A call that fails does not undo the others; the first
// error is returned.
func (s *Store) Refresh(ctx context.Context, changes []bittorrent.PeerChange) (refreshed, added int, err error) {
	if len(changes) == 0 {
		return 0, 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cutoff := s.now().UnixMilli() - s.lifetimeMs
	header := append([]any{s.lifetime + 1, s.completedTTL, cutoff}, expiredBounds(cutoff)...)
	var calls []*refreshCall
	var cur *refreshCall
	bind := "0"
	if s.bind {
		bind = "1"
	}
	// Changes of one swarm are one group of a call; they need not be
	// next to each other in changes.
	bySwarm := map[bittorrent.InfoHash][]int{}
	var order []bittorrent.InfoHash
	for i, c := range changes {
		if c.Op == bittorrent.OpStopped || !c.Op.Valid() {
			return 0, 0, fmt.Errorf("store refresh: change %d is not a refresh (op %d)", i, c.Op)
		}
		if _, ok := bySwarm[c.InfoHash]; !ok {
			order = append(order, c.InfoHash)
		}
		bySwarm[c.InfoHash] = append(bySwarm[c.InfoHash], i)
	}
	for _, ih := range order {
		idx := bySwarm[ih]
		if cur == nil || s.cluster || cur.n+len(idx) > refreshPerCall {
			cur = &refreshCall{args: append([]any(nil), header...)}
			calls = append(calls, cur)
		}
		k := s.ks.Swarm(ih).announceList()
		cur.keys = append(cur.keys, k[:]...)
		seeder := "0"
		for _, i := range idx {
			if changes[i].Op == bittorrent.OpSeeder {
				seeder = "1"
			}
		}
		cur.args = append(cur.args, seeder+bind, len(idx))
		for _, i := range idx {
			c := changes[i]
			cur.args = append(cur.args, c.Seen+classBand(c.Op), c.Peer)
		}
		cur.n += len(idx)
	}
	// The calls go in rounds of about refreshPerCall refreshes (one call
	// on one Redis; many one-swarm calls under Redis Cluster), one round
	// trip each, one after another: Redis runs a pipeline's commands
	// back to back, so a window's refreshes in one pipeline would hold
	// every other client up for all of them at once.
	var cmds []*redis.Cmd
	for len(calls) > 0 {
		n, w := 0, 0
		for n < len(calls) && (n == 0 || w+calls[n].n <= refreshPerCall) {
			w += calls[n].n
			n++
		}
		round := calls[:n]
		calls = calls[n:]
		cmds = append(cmds, s.refreshRound(ctx, round)...)
	}
	for _, c := range cmds {
		r, e := c.Int64Slice()
		if e == nil && len(r) != 2 {
			e = fmt.Errorf("reply of %d items", len(r))
		}
		if e != nil {
			if err == nil {
				err = fmt.Errorf("store refresh: %w", e)
			}
			continue
		}
		refreshed += int(r[0])
		added += int(r[1])
	}
	return refreshed, added, err
}

// refreshCall is one call of the refresh function: its keys, arguments
// and number of refreshes.
type refreshCall struct {
	keys []string
	args []any
	n    int
}

// refreshRound sends calls in one pipeline and returns their commands.
// Calls that found the library missing are sent once more if this
// process could load it (applying a refresh twice changes nothing), and
// otherwise fail with ErrFunctionsMissing.
func (s *Store) refreshRound(ctx context.Context, calls []*refreshCall) []*redis.Cmd {
	build := func(pipe redis.Pipeliner) []*redis.Cmd {
		cmds := make([]*redis.Cmd, len(calls))
		for i, c := range calls {
			cmds[i] = pipe.FCall(ctx, library.refresh, c.keys, c.args...)
		}
		return cmds
	}
	sent := time.Now()
	pipe := s.rdb.Pipeline()
	cmds := build(pipe)
	pipe.Exec(ctx) // per-command errors are read by the caller
	var missing []string
	for i, c := range cmds {
		if isFunctionMissing(c.Err()) {
			missing = append(missing, calls[i].keys[0])
		}
	}
	if len(missing) == 0 {
		return cmds
	}
	if s.fn.reload(ctx, sent, missing) {
		pipe = s.rdb.Pipeline()
		cmds = build(pipe)
		pipe.Exec(ctx)
	}
	for _, c := range cmds {
		if e := c.Err(); isFunctionMissing(e) {
			c.SetErr(missingErr(e))
		}
	}
	return cmds
}
