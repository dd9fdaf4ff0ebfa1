package redisstore

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

//go:embed apply.lua
var applySrc string

// Relayer writes relayed peer changes into the keyspaces of other nodes and
// reads swarms back for resyncs. The hub is its only user: it is the only
// writer of relayed peers.
type Relayer struct {
	rdb          redis.UniversalClient
	cluster      bool // one swarm per script call (one slot each)
	prefix       string
	lifetimeMs   int64
	completedTTL int64
	timeout      time.Duration
	now          func() time.Time
	// idx adds the swarms written into to each target node's swarm index,
	// in the same pipeline.
	idx *Indexer
	fn  *functions
}

// NewRelayer returns a relayer; cfg.NodeID is not used.
func NewRelayer(rdb redis.UniversalClient, cfg Config) (*Relayer, error) {
	cfg.NodeID = "hub"
	s, err := New(rdb, cfg)
	if err != nil {
		return nil, err
	}
	_, cluster := rdb.(*redis.ClusterClient)
	// The hub remembers an entry per node and torrent: fewer than a
	// node's publisher (about 80 B each, so at most about 20 MB); past
	// the bound it forgets them all and writes each once more.
	idx := NewIndexer(rdb, cfg.Prefix, 0, time.Duration(s.lifetimeMs)*time.Millisecond)
	idx.max = relayIndexed
	return &Relayer{rdb: rdb, cluster: cluster, prefix: cfg.Prefix, lifetimeMs: s.lifetimeMs, completedTTL: s.completedTTL, timeout: cfg.Timeout, now: time.Now,
		idx: idx, fn: s.fn}, nil
}

// Prepare is Store.Prepare for the relayer's Redis (a member's, in a
// network of members).
func (r *Relayer) Prepare(ctx context.Context) (loaded bool, err error) { return r.fn.ensure(ctx) }

// FunctionsMissing is Store.FunctionsMissing.
func (r *Relayer) FunctionsMissing() uint64 { return r.fn.missing.Load() }

// relayIndexed bounds the index entries a relayer remembers.
const relayIndexed = 1 << 18

// Target is one swarm of one node and the changes to apply to it.
type Target struct {
	Node    string
	Changes []bittorrent.PeerChange // all of one info hash
}

// Apply applies every target's changes in one pipeline (one round trip)
// and returns how many changes were applied (not older than what a node
// held already). On one Redis, all swarms of one node go in one script
// call; under Redis Cluster each swarm is a call of its own. The same
// pipeline refreshes the swarms' entries in the target nodes' swarm
// indexes when they are due (once per IndexRefresh), so that a node's
// index lists the swarms it holds peers of, relayed ones too.
func (r *Relayer) Apply(ctx context.Context, targets []Target) (int, error) {
	if len(targets) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	now := r.now().UnixMilli()
	// Group into calls: per node, or per node and swarm under Cluster.
	type call struct {
		keys []string
		args []any
	}
	var calls []*call
	byNode := map[string]*call{}
	index := Entries{}
	for _, t := range targets {
		if len(t.Changes) == 0 {
			continue
		}
		for key, zs := range r.idx.Due(t.Node, t.Changes...) {
			index[key] = append(index[key], zs...)
		}
		ks, err := NewKeyspace(r.prefix, t.Node)
		if err != nil {
			return 0, err
		}
		c := byNode[t.Node]
		if c == nil || r.cluster {
			cutoff := now - r.lifetimeMs
			c = &call{args: append([]any{now, cutoff, r.lifetimeMs, r.completedTTL}, expiredBounds(cutoff)...)}
			calls = append(calls, c)
			byNode[t.Node] = c
		}
		c.keys = append(c.keys, ks.Swarm(t.Changes[0].InfoHash).relayList()...)
		c.args = append(c.args, len(t.Changes))
		for _, ch := range t.Changes {
			c.args = append(c.args, opLetter(ch.Op, ch.Completion), changeScore(ch.Op, ch.Seen), ch.Peer)
		}
	}
	// Sending a call again (the library was missing) is safe: applying
	// is idempotent.
	cmds := make([]*redis.Cmd, len(calls))
	var adds map[string]*redis.IntCmd
	r.fn.run(ctx, cmds, nil, func(pipe redis.Pipeliner, i int) *redis.Cmd {
		return pipe.FCall(ctx, library.apply, calls[i].keys, calls[i].args...)
	}, func(i int) string { return calls[i].keys[0] }, func(pipe redis.Pipeliner) { adds = r.idx.Add(ctx, pipe, index) })
	// An index entry not written is written with a later change; it is
	// not an error of the relay.
	r.idx.Failed(index, adds)
	// A call that failed (its shard down, a timeout) does not undo the
	// others: each is counted or reported on its own.
	applied := 0
	var first error
	for _, c := range cmds {
		n, err := c.Int()
		if err != nil && first == nil {
			first = fmt.Errorf("relay apply: %w", err)
		}
		applied += n
	}
	return applied, first
}

// Swarms returns the live peers and the stops (tombstones) within the peer
// lifetime of some of one node's swarms as changes (seen = their score), in
// one round trip, for a resync: at most limit members of each of a swarm's
// sets, and limit stops (limit ≤ 0: all). A swarm whose keys hold what no
// writer of ours writes (a key of the wrong type) is left out and counted
// in bad; with another error, the swarms that were read are returned too
// (the others empty) with the first error.
func (r *Relayer) Swarms(ctx context.Context, node string, hashes []bittorrent.InfoHash, limit int) (out [][]bittorrent.PeerChange, bad int, err error) {
	ks, err := NewKeyspace(r.prefix, node)
	if err != nil {
		return nil, 0, err
	}
	if limit <= 0 {
		limit = -1
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	cutoff := r.now().UnixMilli() - r.lifetimeMs
	min := "(" + strconv.FormatInt(cutoff, 10)
	// The peers, each class with the op that writes it, and the
	// tombstones of stopped peers: a resync carries stops as well, so the
	// newest of each peer wins everywhere and a stale copy of a stopped
	// peer on one node is removed rather than copied back.
	keys := make([]SwarmKeys, len(hashes))
	for i, ih := range hashes {
		keys[i] = ks.Swarm(ih)
	}
	stopCmds := make([]*redis.ZSliceCmd, len(hashes))
	sets, errs := readSwarmPeers(ctx, r.rdb, keys, int64(limit), func(pipe redis.Pipeliner) {
		for i, k := range keys {
			stopCmds[i] = pipe.ZRangeByScoreWithScores(ctx, k.Stopped, &redis.ZRangeBy{Min: min, Max: "+inf", Count: int64(limit)})
		}
	})
	// A swarm that could not be read whole (its shard down, a timeout) is
	// left out, and the first error returned with what was read.
	out = make([][]bittorrent.PeerChange, len(hashes))
	var first error
	for i, ih := range hashes {
		peers := sets[i]
		stops, err := stopCmds[i].Result()
		if err = cmp.Or(errs[i], err); err != nil && !errors.Is(err, redis.Nil) {
			if IsBadData(err) {
				bad++
			} else if first == nil {
				first = fmt.Errorf("relay read swarms: %w", err)
			}
			continue
		}
		cs := make([]bittorrent.PeerChange, 0, len(peers)+len(stops))
		for _, z := range peers {
			if op, seen := PeerClass(z.Score); seen > cutoff {
				cs = append(cs, bittorrent.PeerChange{InfoHash: ih, Op: op, Seen: seen, Peer: z.Member.(string)})
			}
		}
		for _, z := range stops {
			cs = append(cs, bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpStopped, Seen: int64(z.Score), Peer: z.Member.(string)})
		}
		out[i] = cs
	}
	return out, bad, first
}

// A node's swarm index (IndexKeys, in keys.go: IndexParts sorted sets) holds the info
// hashes of the swarms it holds peers of, score = the last change seen (unix ms): its
// own clients' swarms, written by its link publisher (or, without the link, by an
// IndexSink; off the announce path either way), and the swarms the hub relays peers
// into, written by Apply. The hub reads it to resync, and a node's admin page to
// count what it holds, without scanning keys. Its hash tags start with the node id so that one
// ACL key pattern, <prefix>:{<node>:*, covers a node's whole keyspace.

// indexSlack is how much longer than the peer lifetime an index entry
// counts: writers refresh an active torrent's entry once per IndexRefresh,
// not on every change.
const indexSlack = 2 * time.Minute

// indexPage is how many index entries one read asks for: a resync never
// makes Redis build one reply of a whole index, however large it grew.
const indexPage = 1000

// Indexed returns the info hashes of node's index seen within the peer
// lifetime (plus the refresh slack), at most limit of them (≤ 0: all),
// trimming older entries. It reads the index in pages (ZSCAN: every entry
// present for the whole read is returned, entries refreshed meanwhile
// included), each call bounded by the timeout. A part that is not a sorted
// set (what no writer of ours writes) is skipped and counted in bad; a part
// that cannot be read (its shard down) is skipped, and the others are
// returned with the first error. With parts, only the index parts for
// which it says yes are read (part i holds the info hashes whose first
// byte is i: a hub reads the parts of the partitions it relays).
func (r *Relayer) Indexed(ctx context.Context, node string, limit int, parts func(part int) bool) (out []bittorrent.InfoHash, bad int, err error) {
	keys := IndexKeys(r.prefix, node)
	if parts != nil {
		var some []string
		for i, key := range keys {
			if parts(i) {
				some = append(some, key)
			}
		}
		keys = some
	}
	cutoff := r.now().UnixMilli() - r.lifetimeMs - indexSlack.Milliseconds()
	// Every part trimmed and its first page read in one round trip; the
	// further pages of a large part one at a time.
	tctx, cancel := context.WithTimeout(ctx, r.timeout)
	pipe := r.rdb.Pipeline()
	trims := make([]*redis.IntCmd, len(keys))
	scans := make([]*redis.ScanCmd, len(keys))
	for i, key := range keys {
		trims[i] = pipe.ZRemRangeByScore(tctx, key, "-inf", strconv.FormatInt(cutoff, 10))
		scans[i] = pipe.ZScan(tctx, key, 0, "", indexPage)
	}
	pipe.Exec(tctx) // per-command errors are read below
	cancel()
	var first error
	for i, key := range keys {
		if limit > 0 && len(out) >= limit {
			break
		}
		if err := trims[i].Err(); err != nil {
			if IsBadData(err) {
				bad++
			} else {
				first = cmp.Or(first, fmt.Errorf("relay trim index: %w", err))
			}
			continue
		}
		page, cursor, err := scans[i].Result()
		seen := map[bittorrent.InfoHash]bool{} // ZSCAN may return an entry twice
		for err == nil {
			out = appendIndexed(out, page, cutoff, seen)
			if limit > 0 && len(out) >= limit {
				out = out[:limit]
				break
			}
			if cursor == 0 {
				break
			}
			tctx, cancel := context.WithTimeout(ctx, r.timeout)
			page, cursor, err = r.rdb.ZScan(tctx, key, cursor, "", indexPage).Result()
			cancel()
		}
		if err != nil {
			first = cmp.Or(first, fmt.Errorf("relay read index: %w", err))
		}
	}
	return out, bad, first
}

// appendIndexed appends the info hashes of one page of an index part
// (member, score, ...) seen after cutoff and not seen yet.
func appendIndexed(out []bittorrent.InfoHash, page []string, cutoff int64, seen map[bittorrent.InfoHash]bool) []bittorrent.InfoHash {
	for i := 0; i+1 < len(page); i += 2 {
		score, err := strconv.ParseFloat(page[i+1], 64)
		if err != nil || int64(score) <= cutoff {
			continue
		}
		if ih, err := bittorrent.InfoHashFromBytes([]byte(page[i])); err == nil && !seen[ih] {
			seen[ih] = true
			out = append(out, ih)
		}
	}
	return out
}
