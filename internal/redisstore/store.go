// Package redisstore keeps a tracker node's swarms in Redis: one sorted set
// per swarm (past 128 peers, buckets of them: swarm.lua), member = the
// peer's binary form, score = its class's band plus when it was last seen
// (see PeerScore), and a completed counter. Every
// announce is one atomic server-side script, so counts are exact under any
// number of concurrent writers, and one round trip. Ghost peers expire by
// score (filtered by every read, trimmed when a peer joins a large swarm or
// a read would carry them) and idle swarms by key TTL; no code path walks
// all keys.
package redisstore

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Config is what the store needs to know.
type Config struct {
	// Prefix namespaces every key.
	Prefix string
	// NodeID is the keyspace this store reads and writes.
	NodeID string
	// PeerLifetime is how long a peer counts after it was last seen.
	PeerLifetime time.Duration
	// CompletedTTL is how long a swarm's completed counter survives after
	// the last announce of a seeder.
	CompletedTTL time.Duration
	// Timeout bounds every call to Redis.
	Timeout time.Duration
	// PeerIDs stores each peer's id in its member, so that dictionary-model
	// answers (compact=0) can carry "peer id". It costs 20 bytes a peer, and
	// makes the id part of the peer's identity. Off, a peer is its address
	// and port, as most trackers see it, and every client is served
	// compact. All nodes of a link must agree on it.
	PeerIDs bool
	// NewSwarmRate caps how many new swarms (torrents with no live peer)
	// this process starts: a token bucket of NewSwarmRate a second, in
	// bursts of up to NewSwarmBurst. An announce that would start one
	// beyond it gets bittorrent.ErrNoNewSwarms. Since swarms expire after
	// the peer lifetime, the swarms a process can hold are bounded by
	// NewSwarmRate × lifetime + NewSwarmBurst. 0: no cap.
	NewSwarmRate  float64
	NewSwarmBurst int
	// BindKeys binds a peer to the key it announced with, in the swarm's
	// keys, so that every replica of the node holds to it: while the peer
	// is live, a change of it sent with another key or none gets
	// bittorrent.ErrKeyMismatch. A binding costs the peer about 35 bytes
	// more in Redis in small swarms, 65 in large ones (see
	// docs/architecture.md).
	BindKeys bool
}

// Store is a node's view of its keyspace. It is safe for concurrent use.
type Store struct {
	rdb          redis.UniversalClient
	ks           Keyspace
	lifetime     int64 // seconds (key TTLs)
	lifetimeMs   int64 // milliseconds (scores)
	completedTTL int64 // seconds
	timeout      time.Duration
	peerIDs      bool
	// cluster: scripts may touch one slot only, so a batch is a pipeline
	// of one script call per announce.
	cluster bool
	now     func() time.Time
	swarms  *swarmBudget // nil: no cap on new swarms
	bind    bool
	fn      *functions
	// extendEvery (seconds) is how often at most a refresh extends a
	// swarm's key TTLs; ext records when this process last did
	// (extend.go).
	extendEvery int64
	ext         *extensions
}

//go:embed announce.lua
var announceSrc string

// swarmSrc is the layout of a swarm's peers (one set, or buckets), put in
// front of both scripts that write peers.
//
//go:embed swarm.lua
var swarmSrc string

// checksSrc is how the functions check their numbers (digits, int), at the
// library's top level.
//
//go:embed checks.lua
var checksSrc string

// rtcCommonSrc is what the WebRTC functions share (rtc_trim), at the
// library's top level.
//
//go:embed rtc_common.lua
var rtcCommonSrc string

// New returns a store on rdb. It does not talk to Redis.
func New(rdb redis.UniversalClient, cfg Config) (*Store, error) {
	ks, err := NewKeyspace(cfg.Prefix, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	if cfg.PeerLifetime < time.Second {
		return nil, fmt.Errorf("peer lifetime must be at least 1s, got %s", cfg.PeerLifetime)
	}
	if cfg.CompletedTTL < cfg.PeerLifetime {
		return nil, fmt.Errorf("completed TTL (%s) must not be shorter than the peer lifetime (%s)", cfg.CompletedTTL, cfg.PeerLifetime)
	}
	if cfg.Timeout <= 0 {
		return nil, errors.New("redis timeout must be positive")
	}
	var budget *swarmBudget
	if cfg.NewSwarmRate > 0 {
		budget = &swarmBudget{perNano: cfg.NewSwarmRate / 1e9, burst: float64(max(1, cfg.NewSwarmBurst)), tokens: float64(max(1, cfg.NewSwarmBurst))}
	}
	return &Store{
		swarms:       budget,
		rdb:          rdb,
		ks:           ks,
		lifetime:     ceilSeconds(cfg.PeerLifetime),
		lifetimeMs:   ceilSeconds(cfg.PeerLifetime) * 1000,
		completedTTL: ceilSeconds(cfg.CompletedTTL),
		timeout:      cfg.Timeout,
		peerIDs:      cfg.PeerIDs,
		now:          time.Now,
		cluster:      isCluster(rdb),
		bind:         cfg.BindKeys,
		fn:           &functions{rdb: rdb, timeout: cfg.Timeout},
		extendEvery:  ceilSeconds(cfg.PeerLifetime) / extendFraction,
		ext:          newExtensions(ceilSeconds(cfg.PeerLifetime) / extendFraction),
	}, nil
}

// keyTTL is the TTL (seconds) every write gives a swarm's keys: the peer
// lifetime, a second, and extendEvery (see extend.go).
func (s *Store) keyTTL() int64 { return s.lifetime + 1 + s.extendEvery }

// completedKeyTTL is the TTL (seconds) a seeder's write gives the
// swarm's completed counter.
func (s *Store) completedKeyTTL() int64 { return s.completedTTL + s.extendEvery }

func isCluster(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// Prepare checks that Redis (every master of a Redis Cluster) has this
// build's function library (see Functions). When it has not, Prepare
// loads it if this process's credentials may (no ACLs: a single Redis of
// one's own, tests), and says so with loaded; when they may not (a node's
// ACL user), it returns an error wrapping ErrFunctionsMissing, which names
// the command to run. Any other error is Redis's: not there yet.
func (s *Store) Prepare(ctx context.Context) (loaded bool, err error) {
	return s.fn.ensure(ctx)
}

// FunctionsMissing returns how many calls Redis answered that it lacks the
// library since the store was made (each failed, unless this process could
// load the library again and sent them once more).
func (s *Store) FunctionsMissing() uint64 { return s.fn.missing.Load() }

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.rdb.Ping(ctx).Err()
}

// Announce records req in the swarm and returns the swarm's counts and up to
// numWant peers, in one round trip.
func (s *Store) Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c := s.newCall(req, numWant)
	var res [1]callResult
	s.sendCalls(ctx, []*announceCall{&c}, res[:])
	return s.decode(&c, res[0])
}

// AnnounceBatch records every request of reqs, each with its numWant, in
// one round trip (under Redis Cluster one per Redis node involved): one
// script call for the whole batch on one Redis, a pipeline of one script
// call per announce on a Cluster; either way each announce is atomic.
// Results and errors go to out[i] and errs[i], which must be as long as
// reqs. A front end that reads requests in batches (UDP) answers a whole
// batch this way.
func (s *Store) AnnounceBatch(ctx context.Context, reqs []*bittorrent.AnnounceRequest, numWant []int, out []bittorrent.AnnounceResult, errs []error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	calls, ptrs := s.newCalls(reqs, numWant)
	res := make([]callResult, len(reqs))
	s.sendCalls(ctx, ptrs, res)
	s.decodeAll(calls, res, out, errs)
}

// newCalls makes the calls of a batch, and pointers to them.
func (s *Store) newCalls(reqs []*bittorrent.AnnounceRequest, numWant []int) ([]announceCall, []*announceCall) {
	calls := make([]announceCall, len(reqs))
	ptrs := make([]*announceCall, len(reqs))
	for i, r := range reqs {
		calls[i] = s.newCall(r, numWant[i])
		ptrs[i] = &calls[i]
	}
	return calls, ptrs
}

// decodeAll reads the results of a batch into out and errs.
func (s *Store) decodeAll(calls []announceCall, res []callResult, out []bittorrent.AnnounceResult, errs []error) {
	for i := range calls {
		out[i], errs[i] = s.decode(&calls[i], res[i])
	}
}

// announceCall is one announce, ready to send: its four keys and its five
// values of the script's ARGV.
type announceCall struct {
	keys    [4]string
	args    [5]any
	numWant int
	fam     bittorrent.Family
	// change is what the call writes; its Completion is set from the reply.
	change bittorrent.PeerChange
}

// callResult is one announce's part of a script reply: the counts and its
// candidates, or the error of the call that carried it.
type callResult struct {
	nS, nL, counted int64
	cands           []string
	err             error
}

func (s *Store) newCall(req *bittorrent.AnnounceRequest, numWant int) announceCall {
	now := s.now().UnixMilli()
	m := string(req.Peer.AppendBinary(make([]byte, 0, bittorrent.PeerLen6WithID), s.peerIDs))
	op := req.Op()
	if op == bittorrent.OpStopped {
		numWant = 0
	}
	numWant = min(max(numWant, 0), maxWant)
	// flags: op, completed, family, create, then a random number (see
	// announce.lua).
	flags := [4]byte{opLetter(op, false)[0], '0', '0', '1'}
	if req.Event == bittorrent.Completed {
		flags[1] = '1'
	}
	switch req.Family {
	case bittorrent.OnlyIPv4:
		flags[2] = '4'
	case bittorrent.OnlyIPv6:
		flags[2] = '6'
	}
	if req.NoNewSwarm || (s.swarms != nil && !s.swarms.available(now)) {
		flags[3] = '0'
	}
	score := changeScore(op, now)
	bind := ""
	if s.bind {
		bind = "-"
		if req.Key != "" {
			bind = "=" + keyDigest(req.Key)
		}
	}
	k := s.ks.Swarm(req.InfoHash)
	return announceCall{
		keys:    k.announceList(),
		args:    [5]any{score, m, string(strconv.AppendUint(flags[:], uint64(rand.Uint32()), 10)), numWant, bind},
		numWant: numWant,
		fam:     req.Family,
		change:  bittorrent.PeerChange{InfoHash: req.InfoHash, Op: op, Seen: now, Peer: m},
	}
}

// sendCalls runs calls in one round trip and puts each one's part of the
// reply in res (as long as calls). On one Redis the batch is one script
// call; under Redis Cluster, whose scripts may touch one slot only, it is
// one call per announce, in one pipeline per master, the pipelines side by
// side: a master that hangs (paused, or dying before Redis fails it over)
// then costs only the announces of its own slots, where one pipeline
// across masters would fail whole when its time runs out. Calls that
// found the function library missing (a Redis restarted without its data,
// FUNCTION FLUSH) fail with ErrFunctionsMissing, counted, unless this
// process may load the library and so sends them once more.
func (s *Store) sendCalls(ctx context.Context, calls []*announceCall, res []callResult) {
	groups := [][]*announceCall{calls}
	if s.cluster && len(calls) > 1 {
		groups = make([][]*announceCall, len(calls))
		for i := range calls {
			groups[i] = calls[i : i+1 : i+1]
		}
	}
	cmds := make([]*redis.Cmd, len(groups))
	if !s.cluster || len(groups) == 1 {
		s.exec(ctx, groups, cmds, nil)
	} else {
		byShard := map[string][]int{}
		cc, _ := s.rdb.(*redis.ClusterClient)
		for gi, g := range groups {
			shard := ""
			if cc != nil {
				if m, err := cc.MasterForKey(ctx, g[0].keys[0]); err == nil {
					shard = m.Options().Addr
				}
			}
			byShard[shard] = append(byShard[shard], gi)
		}
		var wg sync.WaitGroup
		for _, sel := range byShard {
			wg.Add(1)
			go func() { defer wg.Done(); s.exec(ctx, groups, cmds, sel) }()
		}
		wg.Wait()
	}
	i := 0
	for g, cmd := range cmds {
		reply, err := cmd.Slice()
		n := len(groups[g])
		if err == nil {
			err = splitReply(reply, res[i:i+n])
		}
		if err != nil {
			for j := range n {
				res[i+j] = callResult{err: err}
			}
		}
		i += n
	}
}

// exec sends one function call per group of sel (nil: every group) in one
// pipeline, and puts each command in cmds at its group's index. Calls
// that found the library missing are sent once more if this process could
// load it (functions.reload), and otherwise fail with ErrFunctionsMissing.
func (s *Store) exec(ctx context.Context, groups [][]*announceCall, cmds []*redis.Cmd, sel []int) {
	header := s.callHeader()
	send := func(pipe redis.Pipeliner, g []*announceCall) *redis.Cmd {
		var c0 announceCall
		keys := make([]string, 0, len(c0.keys)*len(g))
		args := make([]any, 0, len(header)+len(c0.args)*len(g))
		args = append(args, header...)
		for _, c := range g {
			keys = append(keys, c.keys[:]...)
			args = append(args, c.args[:]...)
		}
		return pipe.FCall(ctx, library.announce, keys, args...)
	}
	s.fn.run(ctx, cmds, sel, func(pipe redis.Pipeliner, gi int) *redis.Cmd { return send(pipe, groups[gi]) },
		func(gi int) string { return groups[gi][0].keys[0] }, nil)
}

// callHeader is the head of announce.lua's ARGV: the TTLs, the cutoff, and
// the ranges of live and of expired scores of each class, made once per
// call (see announce.lua).
func (s *Store) callHeader() []any {
	cutoff := s.now().UnixMilli() - s.lifetimeMs
	h := []any{s.keyTTL(), s.completedKeyTTL(), cutoff}
	for _, op := range bandOrder {
		lo, _ := liveRange(op, cutoff)
		h = append(h, lo)
	}
	return append(h, expiredBounds(cutoff)...)
}

// splitReply cuts a script reply into the parts of its announces:
// seeders, leechers, flags, n, then n ranges of candidates, for each.
func splitReply(reply []any, res []callResult) error {
	pos := 0
	for i := range res {
		if len(reply) < pos+4 {
			return fmt.Errorf("store announce: short reply of %d items for %d announces", len(reply), len(res))
		}
		nS, ok1 := reply[pos].(int64)
		nL, ok2 := reply[pos+1].(int64)
		counted, ok3 := reply[pos+2].(int64)
		n, ok4 := reply[pos+3].(int64)
		if !ok1 || !ok2 || !ok3 || !ok4 || n < 0 || int64(len(reply)-pos-4) < n {
			return fmt.Errorf("store announce: malformed reply at item %d", pos)
		}
		cands, err := joinRanges(reply[pos+4 : pos+4+int(n)])
		if err != nil {
			return fmt.Errorf("store announce: malformed reply at item %d: %w", pos, err)
		}
		res[i] = callResult{nS: nS, nL: nL, counted: counted, cands: cands}
		pos += 4 + int(n)
	}
	if pos != len(reply) {
		return fmt.Errorf("store announce: %d items left over in the reply", len(reply)-pos)
	}
	return nil
}

// joinRanges returns the candidates of an announce's ranges as one slice.
// A range is an array of members, or one string of IPv4 members without
// ids end to end (see announce.lua), which is cut without a copy.
func joinRanges(ranges []any) ([]string, error) {
	n := 0
	for _, r := range ranges {
		switch r := r.(type) {
		case string:
			n += len(r) / bittorrent.PeerLen4
		case []any:
			n += len(r)
		}
	}
	all := make([]string, 0, n)
	for i, r := range ranges {
		switch r := r.(type) {
		case string:
			if len(r)%bittorrent.PeerLen4 != 0 {
				return nil, fmt.Errorf("range %d is a string of %d bytes", i, len(r))
			}
			for j := 0; j < len(r); j += bittorrent.PeerLen4 {
				all = append(all, r[j:j+bittorrent.PeerLen4])
			}
		case []any:
			for _, m := range r {
				s, ok := m.(string)
				if !ok {
					return nil, fmt.Errorf("range %d holds a %T", i, m)
				}
				all = append(all, s)
			}
		default:
			return nil, fmt.Errorf("range %d is a %T", i, r)
		}
	}
	return all, nil
}

// decode reads one announce's result; a swarm it started takes a token
// of the new-swarm budget.
func (s *Store) decode(c *announceCall, r callResult) (bittorrent.AnnounceResult, error) {
	if r.err != nil {
		return bittorrent.AnnounceResult{}, fmt.Errorf("store announce: %w", r.err)
	}
	switch r.counted {
	case -1:
		return bittorrent.AnnounceResult{}, bittorrent.ErrNoNewSwarms
	case -2:
		return bittorrent.AnnounceResult{}, bittorrent.ErrKeyMismatch
	}
	if r.counted < 0 {
		return bittorrent.AnnounceResult{}, fmt.Errorf("store announce: unknown refusal %d", r.counted)
	}
	if r.counted&2 != 0 && s.swarms != nil {
		s.swarms.take(c.change.Seen)
	}
	out := decodeAnnounce(r, c.change.Peer, c.fam, c.numWant)
	out.Change = c.change
	out.Change.Completion = r.counted&1 != 0
	out.NewSwarm = r.counted&2 != 0
	return out, nil
}

// keyDigest is what a binding keeps of a key: 8 bytes of its SHA-256,
// without case (clients send their key over HTTP as hex, libtorrent in
// capitals, and the UDP front end writes its 4-byte key in lower-case
// hex), the same in every process.
func keyDigest(key string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(key)))
	return string(sum[:8])
}

// swarmBudget is the token bucket of new swarms of one process. An
// announce asks whether a token is there before it is sent and takes it
// when the reply says it started a swarm, so concurrent announces may
// overdraw it by at most the announces in flight (the bucket then
// refills from below zero).
type swarmBudget struct {
	mu      sync.Mutex
	perNano float64
	burst   float64
	tokens  float64
	last    int64 // unix ms of the last refill
}

func (b *swarmBudget) refill(nowMs int64) {
	if nowMs > b.last {
		b.tokens = min(b.burst, b.tokens+float64(nowMs-b.last)*1e6*b.perNano)
		b.last = nowMs
	}
}

func (b *swarmBudget) available(nowMs int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(nowMs)
	return b.tokens >= 1
}

func (b *swarmBudget) take(nowMs int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(nowMs)
	b.tokens--
}

// opLetter is the one encoding of a change's op in both scripts
// (announce.lua and apply.lua): L leecher, S seeder, P partial seed, C
// seeder whose completion was counted at its origin (apply.lua only), X
// stopped.
func opLetter(op bittorrent.ChangeOp, completion bool) string {
	switch {
	case op == bittorrent.OpStopped:
		return letterStopped
	case op == bittorrent.OpPartial:
		return letterPartial
	case op == bittorrent.OpSeeder && completion:
		return letterCompleted
	case op == bittorrent.OpSeeder:
		return letterSeeder
	}
	return letterLeecher
}

// decodeAnnounce reads one announce's part of the reply: drops self, and
// picks numWant of the candidates at random.
func decodeAnnounce(r callResult, self string, fam bittorrent.Family, numWant int) bittorrent.AnnounceResult {
	out := bittorrent.AnnounceResult{Seeders: int(r.nS), Leechers: int(r.nL)}
	cands := r.cands
	if len(cands) == 0 || numWant <= 0 {
		return out
	}
	peers := make([]bittorrent.Peer, 0, min(len(cands), numWant))
	// Partial Fisher-Yates over the candidates: each pick is uniform among
	// those not yet picked.
	for i := 0; i < len(cands) && len(peers) < numWant; i++ {
		j := i + rand.IntN(len(cands)-i)
		cands[i], cands[j] = cands[j], cands[i]
		m := cands[i]
		if m == self {
			continue
		}
		p, err := bittorrent.PeerFromBinary(m)
		if err != nil || !fam.Carries(p) {
			// Only the store's own scripts write members; a bad one means
			// somebody else wrote into our keyspace. Skip it, don't fail.
			// A member of the other family is for other answers.
			continue
		}
		peers = append(peers, p)
	}
	out.Peers = peers
	return out
}

// zcount counts the live peers of a class in a swarm's peers.
func zcount(ctx context.Context, pipe redis.Pipeliner, peers string, op bittorrent.ChangeOp, cutoff int64) *redis.IntCmd {
	lo, hi := liveRange(op, cutoff)
	return pipe.ZCount(ctx, peers, lo, hi)
}

// Scrape returns the counts of each swarm, in one round trip (a pipeline;
// under Redis Cluster, one per Redis node involved). Expired peers are not
// counted even when no write has trimmed them yet. When some swarms could
// not be read, it returns the answer with those marked Unavailable and an
// error; when none could, only the error.
func (s *Store) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cutoff := s.now().UnixMilli() - s.lifetimeMs
	keys := make([]SwarmKeys, len(hashes))
	for i, ih := range hashes {
		keys[i] = s.ks.Swarm(ih)
	}
	completed := make([]*redis.StringCmd, len(hashes))
	counts := countSwarms(ctx, s.rdb, keys, cutoff, func(pipe redis.Pipeliner) {
		for i, k := range keys {
			completed[i] = pipe.Get(ctx, k.Completed)
		}
	})
	// A swarm that cannot be read now (under Redis Cluster: its shard is
	// down) is marked unavailable; the others are answered. Only when none
	// could be read is the scrape an error.
	out := make([]bittorrent.Scrape, len(hashes))
	var first error
	for i, ih := range hashes {
		c := counts[i]
		done, err := completed[i].Int64()
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		if err = cmp.Or(err, c.err); err != nil {
			first = cmp.Or(first, err)
			out[i] = bittorrent.Scrape{InfoHash: ih, Unavailable: true}
			continue
		}
		out[i] = bittorrent.Scrape{
			InfoHash:    ih,
			Complete:    int(c.seeders),
			Incomplete:  int(c.leechers + c.partial),
			Downloaded:  int(done),
			Downloaders: int(c.leechers),
		}
	}
	switch {
	case first == nil:
		return out, nil
	case !slices.ContainsFunc(out, func(s bittorrent.Scrape) bool { return !s.Unavailable }):
		return nil, fmt.Errorf("store scrape: %w", first)
	}
	return out, fmt.Errorf("store scrape, partly: %w", first)
}
