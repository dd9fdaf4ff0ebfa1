// Package redisstore keeps a tracker node's swarms in Redis: one sorted set
// per swarm and peer class (seeders, leechers), member = the peer's binary
// form, score = when it was last seen, and a completed counter. Every
// announce is one atomic server-side script, so counts are exact under any
// number of concurrent writers, and one round trip. Ghost peers expire by
// score (trimmed by every write, filtered by every read) and idle swarms by
// key TTL; no code path walks all keys.
package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
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
	// CompletedTTL is how long a swarm's completed counter survives without
	// a write to the swarm.
	CompletedTTL time.Duration
	// Timeout bounds every call to Redis.
	Timeout time.Duration
	// PeerIDs stores each peer's id in its member, so that dictionary-model
	// answers (compact=0) can carry "peer id". It costs 20 bytes a peer, and
	// makes the id part of the peer's identity. Off, a peer is its address
	// and port, as most trackers see it, and every client is served
	// compact. All nodes of a link must agree on it.
	PeerIDs bool
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
	now          func() time.Time
}

//go:embed announce.lua
var announceSrc string

var announceScript = redis.NewScript(announceSrc)

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
	return &Store{
		rdb:          rdb,
		ks:           ks,
		lifetime:     ceilSeconds(cfg.PeerLifetime),
		lifetimeMs:   ceilSeconds(cfg.PeerLifetime) * 1000,
		completedTTL: ceilSeconds(cfg.CompletedTTL),
		timeout:      cfg.Timeout,
		peerIDs:      cfg.PeerIDs,
		now:          time.Now,
	}, nil
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// Prepare loads the scripts into Redis so that the first announce does not
// pay for a NOSCRIPT round trip. Announces recover from NOSCRIPT by
// themselves (after a Redis restart or SCRIPT FLUSH), so this is an
// optimisation, not a requirement.
func (s *Store) Prepare(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := announceScript.Load(ctx, s.rdb).Err(); err != nil {
		return fmt.Errorf("load announce script: %w", err)
	}
	return nil
}

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
	res, err := announceScript.Run(ctx, s.rdb, c.keys, c.args...).Slice()
	return c.decode(res, err)
}

// AnnounceBatch records every request of reqs, each with its numWant, in
// one pipeline (one round trip; under Redis Cluster one per Redis node
// involved): each is still its own atomic script. Results and errors go to
// out[i] and errs[i], which must be as long as reqs. A front end that reads
// requests in batches (UDP) answers a whole batch this way.
func (s *Store) AnnounceBatch(ctx context.Context, reqs []*bittorrent.AnnounceRequest, numWant []int, out []bittorrent.AnnounceResult, errs []error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	calls := make([]announceCall, len(reqs))
	ptrs := make([]*announceCall, len(reqs))
	for i, r := range reqs {
		calls[i] = s.newCall(r, numWant[i])
		ptrs[i] = &calls[i]
	}
	for i, cmd := range s.sendCalls(ctx, ptrs) {
		res, err := cmd.Slice()
		out[i], errs[i] = calls[i].decode(res, err)
	}
}

// announceCall is one announce, ready to send.
type announceCall struct {
	keys    []string
	args    []any
	self    string
	numWant int
	seen    int64
}

func (s *Store) newCall(req *bittorrent.AnnounceRequest, numWant int) announceCall {
	now := s.now().UnixMilli()
	m := string(req.Peer.AppendBinary(make([]byte, 0, bittorrent.PeerLen6WithID), s.peerIDs))
	op := opLeecher
	switch {
	case req.Event == bittorrent.Stopped:
		op, numWant = opStop, 0
	case req.Seeder():
		op = opSeeder
	}
	completed := "0"
	if req.Event == bittorrent.Completed {
		completed = "1"
	}
	family := "0"
	switch req.Family {
	case bittorrent.OnlyIPv4:
		family = "4"
	case bittorrent.OnlyIPv6:
		family = "6"
	}
	return announceCall{
		keys:    s.ks.Swarm(req.InfoHash).list(),
		args:    []any{now, now - s.lifetimeMs, s.lifetime + 1, m, op, completed, numWant, s.completedTTL, family},
		self:    m,
		numWant: numWant,
		seen:    now,
	}
}

func (c announceCall) decode(res []any, err error) (bittorrent.AnnounceResult, error) {
	if err != nil {
		return bittorrent.AnnounceResult{}, fmt.Errorf("store announce: %w", err)
	}
	out, err := decodeAnnounce(res, c.self, c.numWant)
	out.Seen = c.seen
	return out, err
}

const (
	opLeecher = "L"
	opSeeder  = "S"
	opStop    = "X"
)

// decodeAnnounce reads the script's reply {seeders, leechers, counted,
// member...}: drops self, and picks numWant of the candidates at random.
func decodeAnnounce(res []any, self string, numWant int) (bittorrent.AnnounceResult, error) {
	if len(res) < 3 {
		return bittorrent.AnnounceResult{}, fmt.Errorf("store announce: short reply of %d items", len(res))
	}
	nS, ok1 := res[0].(int64)
	nL, ok2 := res[1].(int64)
	counted, ok3 := res[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return bittorrent.AnnounceResult{}, fmt.Errorf("store announce: malformed reply %v", res[:3])
	}
	out := bittorrent.AnnounceResult{Seeders: int(nS), Leechers: int(nL), Completion: counted == 1}
	cands := res[3:]
	if len(cands) == 0 || numWant <= 0 {
		return out, nil
	}
	peers := make([]bittorrent.Peer, 0, min(len(cands), numWant))
	// Partial Fisher-Yates over the candidates: each pick is uniform among
	// those not yet picked.
	for i := 0; i < len(cands) && len(peers) < numWant; i++ {
		j := i + rand.IntN(len(cands)-i)
		cands[i], cands[j] = cands[j], cands[i]
		m, ok := cands[i].(string)
		if !ok || m == self {
			continue
		}
		p, err := bittorrent.PeerFromBinary(m)
		if err != nil {
			// Only the store's own scripts write members; a bad one means
			// somebody else wrote into our keyspace. Skip it, don't fail.
			continue
		}
		peers = append(peers, p)
	}
	out.Peers = peers
	return out, nil
}

// Scrape returns the counts of each swarm, in one round trip (a pipeline;
// under Redis Cluster, one per Redis node involved). Expired peers are not
// counted even when no write has trimmed them yet.
func (s *Store) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	min := "(" + strconv.FormatInt(s.now().UnixMilli()-s.lifetimeMs, 10)
	pipe := s.rdb.Pipeline()
	type cmds struct {
		seeders, leechers *redis.IntCmd
		completed         *redis.StringCmd
	}
	cs := make([]cmds, len(hashes))
	for i, ih := range hashes {
		k := s.ks.Swarm(ih)
		cs[i] = cmds{
			seeders:   pipe.ZCount(ctx, k.Seeders, min, "+inf"),
			leechers:  pipe.ZCount(ctx, k.Leechers, min, "+inf"),
			completed: pipe.Get(ctx, k.Completed),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("store scrape: %w", err)
	}
	out := make([]bittorrent.Scrape, len(hashes))
	for i, ih := range hashes {
		c := cs[i]
		done, err := c.completed.Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("store scrape: completed counter: %w", err)
		}
		out[i] = bittorrent.Scrape{
			InfoHash:   ih,
			Complete:   int(c.seeders.Val()),
			Incomplete: int(c.leechers.Val()),
			Downloaded: int(done),
		}
	}
	return out, nil
}
