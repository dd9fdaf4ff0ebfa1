package redisstore

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"slices"
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

// refreshPerRound bounds the refreshes of one round trip of plain
// ZADDs; Redis serves its other clients between the commands of a
// pipeline as it reads them (16 KB at a time).
const refreshPerRound = 1024

// Refresh writes refreshes of peers this node answered already (regular
// re-announces that change nothing but when each peer was last seen,
// written behind by internal/softstate): each change's Op (a class, never
// a stop) and Seen for its Peer in its swarm, applied by time as
// refresh.lua says (a peer held with a newer time is left; a peer not
// held is added back unless a stop at least as new is recorded). It
// returns how many were refreshed in place and how many added back.
//
// The common case costs Redis one command, without a script: each
// swarm's refreshes are one ZADD XX GT CH of its set (one round trip for
// up to refreshPerRound refreshes), which moves on the time of peers held
// in a one-set swarm with an older time in the same band or a lower one,
// exactly as refresh.lua's first step does, and adds no one. A swarm
// where it changed fewer peers than it was given (a peer not held, held
// with a newer time or in a higher band, or a swarm in buckets, which
// has no set) is written again whole with the refresh function, which
// decides each case (re-applying what the ZADD applied changes nothing):
// on one Redis in calls of up to refreshPerCall refreshes, one round trip
// after another; under Redis Cluster one call per swarm, up to
// refreshPerCall refreshes a round trip. A swarm's key TTLs are extended
// at most once per extendEvery (extend.go), by EXPIREs beside the ZADDs
// (and by the function, for a swarm in buckets). A command or call that
// fails does not undo the others; the first error is returned.
func (s *Store) Refresh(ctx context.Context, changes []bittorrent.PeerChange) (refreshed, added int, err error) {
	if len(changes) == 0 {
		return 0, 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	now := s.now().UnixMilli()
	// Changes of one swarm are one group; they need not be next to each
	// other in changes. Sorted by swarm (stably: a swarm's changes keep
	// their order), each group is a run of idx.
	idx := make([]int, len(changes))
	for i, c := range changes {
		if c.Op == bittorrent.OpStopped || !c.Op.Valid() {
			return 0, 0, fmt.Errorf("store refresh: change %d is not a refresh (op %d)", i, c.Op)
		}
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return bytes.Compare(changes[a].InfoHash[:], changes[b].InfoHash[:]) })
	var groups []refreshGroup
	s.ext.mu.Lock()
	for start := 0; start < len(idx); {
		ih := changes[idx[start]].InfoHash
		end, seeder := start, false
		for ; end < len(idx) && changes[idx[end]].InfoHash == ih; end++ {
			seeder = seeder || changes[idx[end]].Op == bittorrent.OpSeeder
		}
		keys, completed := s.ext.due(ih, seeder, now)
		groups = append(groups, refreshGroup{refreshExt: refreshExt{ih, keys, completed}, idx: idx[start:end:end]})
		start = end
	}
	s.ext.mu.Unlock()

	// Round 1: the ZADDs and the EXPIREs due, in rounds of about
	// refreshPerRound refreshes.
	var again []*refreshGroup
	for rest := groups; len(rest) > 0; {
		n, w := 0, 0
		for n < len(rest) && (n == 0 || w+len(rest[n].idx) <= refreshPerRound) {
			w += len(rest[n].idx)
			n++
		}
		round := rest[:n]
		rest = rest[n:]
		pipe := s.rdb.Pipeline()
		for g := range round {
			s.queueRefresh(ctx, pipe, &round[g], changes)
		}
		pipe.Exec(ctx) // per-command errors are read below
		for g := range round {
			gr := &round[g]
			r, e := gr.zadd.Result()
			for _, x := range gr.expires {
				if e == nil {
					e = x.Err()
				}
			}
			switch {
			case e != nil:
				if err == nil {
					err = fmt.Errorf("store refresh: %w", e)
				}
			case int(r) < len(gr.idx):
				again = append(again, gr)
			default:
				refreshed += len(gr.idx)
				gr.ok = true
			}
		}
	}

	// Round 2: the swarms the ZADDs did not settle, with the function.
	if len(again) > 0 {
		r, a, e := s.refreshCalls(ctx, again, changes, now)
		refreshed += r
		added += a
		if err == nil {
			err = e
		}
	}
	// Only extensions Redis made are recorded (see extend.go).
	s.ext.mu.Lock()
	for _, gr := range groups {
		if gr.ok {
			s.ext.done(gr.ih, gr.keys, gr.completed, now)
		}
	}
	s.ext.mu.Unlock()
	return refreshed, added, err
}

// refreshGroup is the refreshes of one swarm: their indexes in the
// changes, what they extend, their commands, and whether all of it was
// written (ok).
type refreshGroup struct {
	refreshExt
	idx     []int
	zadd    *redis.IntCmd
	expires []*redis.BoolCmd
	ok      bool
}

// queueRefresh queues a swarm's ZADD and the EXPIREs due.
func (s *Store) queueRefresh(ctx context.Context, pipe redis.Pipeliner, gr *refreshGroup, changes []bittorrent.PeerChange) {
	k := s.ks.Swarm(gr.ih)
	zs := make([]redis.Z, len(gr.idx))
	for j, i := range gr.idx {
		c := changes[i]
		zs[j] = redis.Z{Score: float64(c.Seen + classBand(c.Op)), Member: c.Peer}
	}
	gr.zadd = pipe.ZAddArgs(ctx, k.Peers, redis.ZAddArgs{XX: true, GT: true, Ch: true, Members: zs})
	gr.expires = gr.expires[:0]
	ttl := time.Duration(s.keyTTL()) * time.Second
	if gr.keys {
		gr.expires = append(gr.expires, pipe.Expire(ctx, k.Peers, ttl))
		if s.bind {
			gr.expires = append(gr.expires, pipe.Expire(ctx, k.Keys, ttl))
		}
	}
	if gr.completed {
		gr.expires = append(gr.expires, pipe.Expire(ctx, k.Completed, time.Duration(s.completedKeyTTL())*time.Second))
	}
}

// refreshCalls writes the refreshes of groups with the refresh function
// (see Refresh), and marks the groups it wrote ok.
func (s *Store) refreshCalls(ctx context.Context, groups []*refreshGroup, changes []bittorrent.PeerChange, now int64) (refreshed, added int, err error) {
	cutoff := now - s.lifetimeMs
	header := append([]any{s.keyTTL(), s.completedKeyTTL(), cutoff}, expiredBounds(cutoff)...)
	var calls []*refreshCall
	var cur *refreshCall
	for _, gr := range groups {
		if cur == nil || s.cluster || cur.n+len(gr.idx) > refreshPerCall {
			cur = &refreshCall{args: append([]any(nil), header...)}
			calls = append(calls, cur)
		}
		k := s.ks.Swarm(gr.ih).announceList()
		cur.keys = append(cur.keys, k[:]...)
		cur.args = append(cur.args, refreshFlags(gr.completed, gr.keys && s.bind, gr.keys), len(gr.idx))
		cur.groups = append(cur.groups, gr)
		for _, i := range gr.idx {
			c := changes[i]
			cur.args = append(cur.args, c.Seen+classBand(c.Op), c.Peer)
		}
		cur.n += len(gr.idx)
	}
	// The calls go in rounds of about refreshPerCall refreshes (one call
	// on one Redis; many one-swarm calls under Redis Cluster), one round
	// trip each, one after another: Redis runs a pipeline's commands
	// back to back, so a window's refreshes in one pipeline would hold
	// every other client up for all of them at once.
	for len(calls) > 0 {
		n, w := 0, 0
		for n < len(calls) && (n == 0 || w+calls[n].n <= refreshPerCall) {
			w += calls[n].n
			n++
		}
		round := calls[:n]
		calls = calls[n:]
		for ci, c := range s.refreshRound(ctx, round) {
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
			for _, gr := range round[ci].groups {
				gr.ok = true
			}
		}
	}
	return refreshed, added, err
}

// refreshFlags is a swarm's flags in refresh.lua's arguments: whether it
// extends the completed counter, the key bindings, and the set.
func refreshFlags(completed, bindings, set bool) string {
	b := []byte("000")
	for i, f := range []bool{completed, bindings, set} {
		if f {
			b[i] = '1'
		}
	}
	return string(b)
}

// refreshExt is what a refresh of one swarm extends.
type refreshExt struct {
	ih              bittorrent.InfoHash
	keys, completed bool
}

// refreshCall is one call of the refresh function: its keys, arguments
// and number of refreshes.
type refreshCall struct {
	keys   []string
	args   []any
	n      int
	groups []*refreshGroup
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
