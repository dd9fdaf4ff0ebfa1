// Package softstate is a node's soft state between the tracker core and
// its store: a short read cache of hot swarms, and refreshes written
// behind. Redis stays the only authority; what this package holds a
// process may lose at any moment (a kill -9) without losing a join, a
// stop, a completion or any other change but refreshes of the last
// write-behind window, which the peers' next announces make good.
//
// What it does to an announce:
//
//   - A regular re-announce (no event, or paused) of a peer this process
//     accepted before, in the same class and with the same key, changes
//     nothing in its swarm but the time the peer was last seen. When the
//     swarm's counts and a sample of its peers are cached (from an answer
//     the store gave this process at most ReadCache ago), the announce is
//     answered from them, and its refresh is queued and written within
//     WriteBehind, many in one call (redisstore's refresh function);
//     with WriteBehind 0 it is written before the answer, still without
//     reading the swarm. The link publishes the refresh as it publishes
//     any local change.
//   - A regular re-announce whose swarm is not cached reads the swarm
//     (a plain read, merged with the reads of other announces into one
//     round trip) and is answered from it when that read makes it a
//     refresh: of a peer known here, or of one not known here (written by
//     another replica, or relayed) that Redis holds live in the
//     announce's class with the announce's key binding, which is then
//     known here (adoptee).
//   - Everything else (a join, a stop, a completion, paused from a
//     leecher, a change of class or key, a peer Redis does not hold so, a
//     swarm too large to read whole, a full write-behind queue) goes to
//     the store as before, and is written before the answer; its answer
//     refills the cache.
//
// Scrapes always read Redis. docs/soft-state.md says what may be stale, and for how long.
package softstate

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Config is the soft state's part of the configuration.
type Config struct {
	// ReadCache is how old cached counts and peers may be when they
	// answer a refresh; 0 turns the cache off (and with it
	// the write-behind: every announce goes to the store).
	ReadCache time.Duration `env:"READ_CACHE" envDefault:"1s"`
	// CacheSwarms bounds the swarms cached (each at most about 7.5 KB: see
	// docs/soft-state.md); past it an arbitrary one makes room.
	CacheSwarms int `env:"READ_CACHE_SWARMS" envDefault:"16384"`
	// WriteBehind is the window over which refreshes are gathered and
	// written together; 0 writes each before its answer.
	WriteBehind time.Duration `env:"WRITE_BEHIND" envDefault:"100ms"`
	// WriteBehindQueue bounds the refreshes waiting; when it is full a
	// re-announce is written before its answer, as without soft state.
	WriteBehindQueue int `env:"WRITE_BEHIND_QUEUE" envDefault:"65536"`
	// PeerSlots bounds the table of peers this process knows (24 bytes a
	// slot): a peer it does not find there goes to the store.
	PeerSlots int `env:"SOFT_PEER_SLOTS" envDefault:"1048576"`

	// Set by the node from the rest of its configuration.
	// Sample is how many peers of a swarm are cached (the default
	// numwant); an announce that asks for more than a sample that is
	// not the whole swarm goes to the store.
	Sample int `env:"-"`
	// PeerLifetime: a peer not heard from this long is not known.
	PeerLifetime time.Duration `env:"-"`
	// PeerIDs: the store's members carry the peer id.
	PeerIDs bool `env:"-"`
	// ReadLinger is how long a read of swarms waits for others to join
	// it when it holds fewer than linger.Fill (TRACKER_REDIS_PIPELINE_LINGER,
	// as the store's pipeline waits for announces; see readGroup).
	ReadLinger time.Duration `env:"-"`
}

// Validate checks the settings; errors name the variable.
func (c Config) Validate() error {
	switch {
	case c.ReadCache < 0 || c.ReadCache > time.Minute:
		return errors.New("TRACKER_READ_CACHE must be from 0 (off) to 1m")
	case c.ReadCache > 0 && (c.CacheSwarms < shards || c.CacheSwarms > 1<<24):
		return errors.New("TRACKER_READ_CACHE_SWARMS must be from 64 to 16777216")
	case c.WriteBehind < 0 || c.WriteBehind > time.Second:
		return errors.New("TRACKER_WRITE_BEHIND must be from 0 (off) to 1s")
	case c.ReadCache > 0 && c.WriteBehind > 0 && (c.WriteBehindQueue < 1 || c.WriteBehindQueue > 1<<24):
		return errors.New("TRACKER_WRITE_BEHIND_QUEUE must be from 1 to 16777216")
	case c.ReadCache > 0 && (c.PeerSlots < shards || c.PeerSlots > 1<<26):
		return errors.New("TRACKER_SOFT_PEER_SLOTS must be from 64 to 67108864")
	}
	return nil
}

// Inner is the store the soft state stands in front of (tracker.Store).
type Inner interface {
	Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error)
	Batch(ctx context.Context, b *bittorrent.StoreBatch)
	Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error)
	Ping(ctx context.Context) error
}

// Refresher writes refreshes (redisstore.Store.Refresh): each change a
// class and a time of a peer, applied by time; it returns how many
// peers were refreshed in place and how many were added back.
type Refresher interface {
	Refresh(ctx context.Context, changes []bittorrent.PeerChange) (refreshed, added int, err error)
}

// SwarmReader reads small swarms whole, without a script
// (redisstore.Store.ReadSwarms): each swarm's live peers as changes
// (class, last seen, member), whole[i] false for a swarm it did not read
// whole (too large, in buckets, empty, or not readable); and, in the same
// round trip, whether each check's key binding agrees (keyOK).
type SwarmReader interface {
	ReadSwarms(ctx context.Context, hashes []bittorrent.InfoHash, max int, checks []bittorrent.KeyCheck) (peers [][]bittorrent.PeerChange, whole, keyOK []bool, err error)
}

// Store is the soft state in front of a store; it is a tracker.Store.
// Its zero value is not usable: New makes one. Run writes the refreshes
// behind; without it, refreshes wait in the queue (and re-announces go
// to the store once it is full).
type Store struct {
	cfg    Config
	inner  Inner
	ref    Refresher
	reader SwarmReader // nil: refreshes of swarms not cached go to the store
	cache  *cache      // nil: no read cache
	known  *knownPeers // nil: no read cache
	behind *behind     // nil: refreshes written before the answer
	reads  readGroup
	now    func() time.Time
	log    *slog.Logger
	m      metrics
}

// New returns the soft state in front of inner, which ref refreshes
// behind. Its metrics are registered on reg.
func New(cfg Config, inner Inner, ref Refresher, log *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, inner: inner, ref: ref, now: time.Now, log: log}
	// A refresher that reads swarms too (the Redis store) serves the
	// refreshes of a UDP batch whose swarms are not cached with a plain
	// read of those swarms instead of announces.
	s.reader, _ = ref.(SwarmReader)
	if cfg.ReadCache > 0 {
		s.cache = newCache(cfg.CacheSwarms)
		s.known = newKnownPeers(cfg.PeerSlots, cfg.PeerLifetime)
		if cfg.WriteBehind > 0 {
			s.behind = newBehind(cfg.WriteBehindQueue)
		}
	}
	if err := s.m.register(reg, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Ping is the store's.
func (s *Store) Ping(ctx context.Context) error { return s.inner.Ping(ctx) }

// Announce answers a refresh from the cache (see the package comment) and
// sends anything else to the store.
func (s *Store) Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	now := s.now()
	res, ok, refresh, err := s.hit(ctx, req, numWant, now, true)
	if ok || err != nil {
		return res, err
	}
	if s.readable(req, now) {
		// A regular re-announce whose swarm is not cached: the swarm is
		// read (with the announces of other front ends that read now, in
		// one round trip), and the announce answered from what was read.
		s.read(ctx, []bittorrent.InfoHash{req.InfoHash}, s.adoptee(req, refresh), now)
		if res, ok, _, err = s.hit(ctx, req, numWant, now, false); ok || err != nil {
			if ok {
				s.m.announceRead.Inc()
			}
			return res, err
		}
	}
	s.unqueue(req)
	res, err = s.inner.Announce(ctx, req, s.fetchWant(req, numWant))
	if err == nil {
		s.learn(req, &res, numWant, now)
	}
	return res, err
}

// unqueue takes out a refresh of req's peer still waiting to be written,
// before req goes to the store: req's change is newer, and a refresh
// written after it would undo it where it changes the peer's class (the
// score bands put classes before times, so a seeder's late refresh would
// outrank the leecher the peer has become, with an older time). A
// refresh already being written is not caught here; its window is that
// one write.
func (s *Store) unqueue(req *bittorrent.AnnounceRequest) {
	if s.behind == nil || s.behind.len() == 0 {
		return
	}
	var buf [bittorrent.PeerLen6WithID]byte
	s.behind.Remove(peerKey{req.InfoHash, string(req.Peer.AppendBinary(buf[:0], s.cfg.PeerIDs))})
}

// Batch is Announce and Scrape for a front end's batch: what the cache
// answers is answered; refreshes of swarms not cached read those swarms
// (when the store can: SwarmReader) and are answered from what was read;
// the rest goes to the store in one batch, beside that read.
func (s *Store) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	if s.cache == nil {
		s.inner.Batch(ctx, b)
		return
	}
	now := s.now()
	var in bittorrent.StoreBatch
	var aidx, sidx, ridx []int
	var read []bittorrent.InfoHash
	var adopt []adoptee
	for i, req := range b.Announces {
		res, ok, refresh, err := s.hit(ctx, req, b.NumWant[i], now, true)
		if ok || err != nil {
			b.AnnounceResults[i], b.AnnounceErrs[i] = res, err
			continue
		}
		if s.readable(req, now) {
			if len(ridx) == 0 || !slices.Contains(read, req.InfoHash) {
				read = append(read, req.InfoHash)
			}
			adopt = append(adopt, s.adoptee(req, refresh)...)
			ridx = append(ridx, i)
			continue
		}
		aidx = append(aidx, i)
	}
	for i, hashes := range b.Scrapes {
		in.Scrapes = append(in.Scrapes, hashes)
		sidx = append(sidx, i)
	}
	var reading sync.WaitGroup
	if len(read) > 0 {
		reading.Go(func() { s.read(ctx, read, adopt, now) })
	}
	s.storeBatch(ctx, b, &in, aidx, sidx, now)
	reading.Wait()
	if len(ridx) == 0 {
		return
	}
	// The swarms read answer their refreshes; a swarm that could not be
	// read whole sends its refreshes to the store.
	var left []int
	for _, i := range ridx {
		res, ok, _, err := s.hit(ctx, b.Announces[i], b.NumWant[i], now, false)
		if ok || err != nil {
			if ok {
				s.m.announceRead.Inc()
			}
			b.AnnounceResults[i], b.AnnounceErrs[i] = res, err
			continue
		}
		left = append(left, i)
	}
	if len(left) > 0 {
		s.storeBatch(ctx, b, &bittorrent.StoreBatch{}, left, nil, now)
	}
}

// storeBatch sends b's announces aidx and in's scrapes (b's sidx) to the
// store in one batch and puts their answers in b.
func (s *Store) storeBatch(ctx context.Context, b, in *bittorrent.StoreBatch, aidx, sidx []int, now time.Time) {
	if len(aidx) == 0 && len(sidx) == 0 {
		return
	}
	for _, i := range aidx {
		s.unqueue(b.Announces[i])
		in.Announces = append(in.Announces, b.Announces[i])
		in.NumWant = append(in.NumWant, s.fetchWant(b.Announces[i], b.NumWant[i]))
	}
	in.AnnounceResults = make([]bittorrent.AnnounceResult, len(aidx))
	in.AnnounceErrs = make([]error, len(aidx))
	in.ScrapeResults = make([][]bittorrent.Scrape, len(sidx))
	in.ScrapeErrs = make([]error, len(sidx))
	s.inner.Batch(ctx, in)
	for j, i := range aidx {
		b.AnnounceResults[i], b.AnnounceErrs[i] = in.AnnounceResults[j], in.AnnounceErrs[j]
		if in.AnnounceErrs[j] == nil {
			s.learn(b.Announces[i], &b.AnnounceResults[i], b.NumWant[i], now)
		}
	}
	for j, i := range sidx {
		b.ScrapeResults[i], b.ScrapeErrs[i] = in.ScrapeResults[j], in.ScrapeErrs[j]
	}
}

// readMax is the most members of a swarm read whole for the cache; a
// larger swarm's refreshes go to the store.
const readMax = 64

// readable reports whether req is a regular re-announce (no event, or
// paused) that a read of its swarm may answer: the store can read
// swarms, and the swarm was not found too large to read within the
// cache's age.
//
// Not while the write-behind queue is full: what a read found could not
// be answered (its refresh would have nowhere to go), so the announce
// goes to the store at once, as before.
func (s *Store) readable(req *bittorrent.AnnounceRequest, now time.Time) bool {
	return s.reader != nil && s.cache != nil && (req.Event == bittorrent.None || req.Event == bittorrent.Paused) &&
		(s.behind == nil || !s.behind.Full()) && !s.cache.large(req.InfoHash, now, s.cfg.ReadCache)
}

// adoptee is a regular re-announce of a peer this process does not know
// (its earlier announces went to another replica of the node, or came
// over the link): the read of its swarm also checks its key binding, and
// a peer that the read finds live in the announce's class, with a binding
// that agrees, is known from then on, as if this process had written it.
// Redis is the authority on it: what it holds is what this process would
// have written. So a regular re-announce costs a read whichever replica
// it reaches, and the replicas of a node cost Redis what one process
// does (issue 29), where an unknown peer's re-announce once went through
// the store's announce.
type adoptee struct {
	check bittorrent.KeyCheck
	op    bittorrent.ChangeOp
}

// adoptee returns req's adoptee, none when its peer is known (refresh).
func (s *Store) adoptee(req *bittorrent.AnnounceRequest, known bool) []adoptee {
	if known {
		return nil
	}
	var buf [bittorrent.PeerLen6WithID]byte
	m := req.Peer.AppendBinary(buf[:0], s.cfg.PeerIDs)
	return []adoptee{{check: bittorrent.KeyCheck{InfoHash: req.InfoHash, Peer: string(m), Key: req.Key}, op: req.Op()}}
}

// readSwarms reads small swarms whole and caches what it read; a swarm
// not read whole is marked large (for the cache age), so that its
// refreshes go to the store without a read first. The adoptees whose
// peers it finds (see adoptee) become known. A read that failed is
// logged (sampled); its refreshes go to the store.
func (s *Store) readSwarms(ctx context.Context, hashes []bittorrent.InfoHash, adopt []adoptee, now time.Time) {
	checks := make([]bittorrent.KeyCheck, len(adopt))
	for i, a := range adopt {
		checks[i] = a.check
	}
	sw, whole, keyOK, err := s.reader.ReadSwarms(ctx, hashes, readMax, checks)
	if err != nil {
		s.m.errLog.Log(slog.LevelWarn, "swarm read for the read cache failed; announces go to the store", "err", err)
		return
	}
	for i, ih := range hashes {
		if whole[i] {
			s.cache.fill(ih, sw[i], now)
		} else {
			s.cache.markLarge(ih, now)
		}
	}
	for i, a := range adopt {
		j, found := slices.BinarySearchFunc(hashes, a.check.InfoHash, func(x, y bittorrent.InfoHash) int { return bytes.Compare(x[:], y[:]) })
		if !keyOK[i] || !found || !whole[j] {
			continue
		}
		for _, c := range sw[j] {
			if c.Peer == a.check.Peer {
				if c.Op == a.op {
					s.known.record(a.check.InfoHash, []byte(c.Peer), a.op, a.check.Key, now)
					s.m.adopted.Inc()
				}
				break
			}
		}
	}
}

// Scrape is the store's: scrapes always read Redis, so that what a
// scrape counts is never older than what the link has written.
func (s *Store) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	return s.inner.Scrape(ctx, hashes)
}

// fetchWant is how many peers the store is asked for: a sample the
// cache can answer others from, or the announce's own numWant if larger.
func (s *Store) fetchWant(req *bittorrent.AnnounceRequest, numWant int) int {
	if s.cache == nil || req.Event == bittorrent.Stopped {
		return numWant
	}
	return max(numWant, s.cfg.Sample)
}

// hit answers req from the cache when it is a refresh of a known peer
// and its swarm is cached fresh (ok), after queueing its refresh or,
// without write-behind or with the queue full, writing it (err: that
// write failed).
func (s *Store) hit(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int, now time.Time, count bool) (res bittorrent.AnnounceResult, ok, refresh bool, err error) {
	if s.cache == nil || (req.Event != bittorrent.None && req.Event != bittorrent.Paused) {
		return res, false, false, nil
	}
	op := req.Op()
	var buf [bittorrent.PeerLen6WithID]byte
	m := req.Peer.AppendBinary(buf[:0], s.cfg.PeerIDs)
	if !s.known.is(req.InfoHash, m, op, req.Key, now) {
		return res, false, false, nil
	}
	res, ok = s.cache.answer(req, op, numWant, now, s.cfg.ReadCache)
	if !ok {
		if count {
			s.m.announceMiss.Inc()
		}
		return res, false, true, nil
	}
	res.Change = bittorrent.PeerChange{InfoHash: req.InfoHash, Op: op, Seen: now.UnixMilli(), Peer: string(m)}
	if s.behind == nil || !s.behind.add(res.Change) {
		if s.behind != nil {
			s.m.full.Inc()
			// Full: the announce is written now, as without soft state.
			return bittorrent.AnnounceResult{}, false, false, nil
		}
		if _, _, err := s.ref.Refresh(ctx, []bittorrent.PeerChange{res.Change}); err != nil {
			return bittorrent.AnnounceResult{}, false, true, err
		}
		s.m.writtenNow.Inc()
	} else {
		s.m.queued.Inc()
	}
	if count {
		s.m.announceHit.Inc()
	}
	s.known.record(req.InfoHash, m, op, req.Key, now)
	return res, true, true, nil
}

// learn notes what the store answered req: the peer is known (or, after
// a stop, forgotten, and taken out of the cached samples), and the answer
// refills the cache for announces like it. The answer's peers are cut to
// numWant (the store was asked for a sample).
func (s *Store) learn(req *bittorrent.AnnounceRequest, res *bittorrent.AnnounceResult, numWant int, now time.Time) {
	if s.cache == nil {
		return
	}
	var buf [bittorrent.PeerLen6WithID]byte
	m := req.Peer.AppendBinary(buf[:0], s.cfg.PeerIDs)
	op := req.Op()
	if op == bittorrent.OpStopped {
		s.known.forget(req.InfoHash, m)
		s.cache.drop(req.InfoHash, req.Peer)
		return
	}
	s.known.record(req.InfoHash, m, op, req.Key, now)
	want := s.fetchWant(req, numWant)
	complete := len(res.Peers) < want
	s.cache.put(req, op, res, complete, s.cfg.Sample, s.cfg.PeerIDs, now)
	if op == bittorrent.OpLeecher && complete {
		s.deriveSeederView(req, res, now)
	}
	if len(res.Peers) > numWant {
		// The sample is random: any numWant of it are.
		res.Peers = res.Peers[:numWant]
	}
}

// pick returns up to n of peers, without self, from a random start.
func pick(peers []bittorrent.Peer, self bittorrent.Peer, fam bittorrent.Family, n int) []bittorrent.Peer {
	if n <= 0 || len(peers) == 0 {
		return nil
	}
	out := make([]bittorrent.Peer, 0, min(n, len(peers)))
	start := rand.IntN(len(peers))
	for i := range peers {
		p := peers[(start+i)%len(peers)]
		if p.Addr == self.Addr || !fam.Carries(p) {
			continue
		}
		out = append(out, p)
		if len(out) == n {
			break
		}
	}
	return out
}

// deriveSeederView makes the swarm's view for seeders (leechers only)
// from a leecher's answer that held every peer of the swarm, when this
// process knows the class of enough of them to be sure: the peers it
// knows as leechers (the announcing one too) must be as many as the
// leechers the store counted, partial seeds included. A peer it does
// not know (relayed, or written by another replica) might be a
// leecher, so then nothing is derived and a seeder's announce reads the
// store. This halves the reads of a swarm of local peers.
func (s *Store) deriveSeederView(req *bittorrent.AnnounceRequest, res *bittorrent.AnnounceResult, now time.Time) {
	if len(res.Peers)+1 > s.cfg.Sample {
		return
	}
	var buf [bittorrent.PeerLen6WithID]byte
	leechers := make([]bittorrent.Peer, 0, res.Leechers)
	for _, p := range res.Peers {
		if s.known.class(req.InfoHash, p.AppendBinary(buf[:0], s.cfg.PeerIDs), now) == bittorrent.OpLeecher {
			leechers = append(leechers, p)
		}
	}
	// The announcing leecher is counted, and given to others.
	if len(leechers)+1 != res.Leechers {
		return
	}
	if req.Family.Carries(req.Peer) {
		self := req.Peer
		if !s.cfg.PeerIDs {
			self.ID = bittorrent.PeerID{}
		}
		leechers = append(leechers, self)
	}
	s.cache.putView(req.InfoHash, 1, view{at: now.UnixNano(), fam: req.Family, seeders: res.Seeders, leechers: res.Leechers, peers: leechers, complete: true})
}
