package softstate

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// cache holds, per swarm, what the store last answered this process about
// it: for each of the two kinds of answer (a leecher's: peers of every
// class; a seeder's or partial seed's: leechers only) the counts and a
// sample of up to Sample peers. It is
// bounded: each shard holds at most its share of CacheSwarms swarms, and
// a new swarm in a full shard takes the place of an arbitrary one (Go's
// map order), so a flood of distinct info hashes costs nothing but hits.
//
// Concurrency: an entry is read and written under its shard's lock, and a
// view's slice of peers is never changed once stored (drop stores a new
// one), so an answer picks from it after the lock is released.
type cache struct {
	seed   maphash.Seed
	per    int // swarms a shard holds at most
	shards [shards]cacheShard
}

const shards = 64

type cacheShard struct {
	mu sync.Mutex
	m  map[bittorrent.InfoHash]*entry
}

type entry struct {
	views [2]view
	// largeAt: when a read found the swarm too large to read whole
	// (unix ns; 0: never).
	largeAt int64
}

// view is one kind of answer, as the store gave it at at (unix ns; 0:
// none) to an announce restricted to fam.
type view struct {
	at                int64
	fam               bittorrent.Family
	seeders, leechers int
	peers             []bittorrent.Peer
	// complete: peers are every peer the store had for this kind of
	// answer, not a sample.
	complete bool
}

func newCache(swarms int) *cache {
	c := &cache{seed: maphash.MakeSeed(), per: max(1, swarms/shards)}
	for i := range c.shards {
		c.shards[i].m = make(map[bittorrent.InfoHash]*entry)
	}
	return c
}

// viewOf is the kind of answer an announce of class op gets.
func viewOf(op bittorrent.ChangeOp) int {
	if op == bittorrent.OpLeecher {
		return 0
	}
	return 1
}

func (c *cache) shard(ih bittorrent.InfoHash) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, ih[:])%shards]
}

// answer answers an announce of class op from the swarm's view when it is
// younger than age, is of a family the announce may be given, and holds
// numWant peers or all there are.
func (c *cache) answer(req *bittorrent.AnnounceRequest, op bittorrent.ChangeOp, numWant int, now time.Time, age time.Duration) (bittorrent.AnnounceResult, bool) {
	sh := c.shard(req.InfoHash)
	sh.mu.Lock()
	e := sh.m[req.InfoHash]
	var v view
	if e != nil {
		v = e.views[viewOf(op)]
	}
	sh.mu.Unlock()
	if v.at == 0 || now.UnixNano()-v.at >= int64(age) || (v.fam != bittorrent.BothFamilies && v.fam != req.Family) {
		return bittorrent.AnnounceResult{}, false
	}
	if !v.complete && len(v.peers) < numWant {
		return bittorrent.AnnounceResult{}, false
	}
	return bittorrent.AnnounceResult{Seeders: v.seeders, Leechers: v.leechers, Peers: pick(v.peers, req.Peer, req.Family, numWant)}, true
}

// put keeps what the store answered an announce of class op (res, its
// peers every one there was when complete) as the swarm's view for
// announces like it, with at most sample peers, and the peer itself
// among them when announces like it would be given it.
func (c *cache) put(req *bittorrent.AnnounceRequest, op bittorrent.ChangeOp, res *bittorrent.AnnounceResult, complete bool, sample int, peerIDs bool, now time.Time) {
	n := min(len(res.Peers), sample)
	complete = complete && n == len(res.Peers)
	peers := make([]bittorrent.Peer, n, n+1)
	copy(peers, res.Peers)
	if op == bittorrent.OpLeecher && req.Family.Carries(req.Peer) {
		// A leecher's answer carries every class, so the peer itself is
		// one of those others are given (the store left it out of its own
		// answer).
		self := req.Peer
		if !peerIDs {
			// As the store gives peers back: without the id it does not keep.
			self.ID = bittorrent.PeerID{}
		}
		peers = append(peers, self)
	}
	v := view{at: now.UnixNano(), fam: req.Family, seeders: res.Seeders, leechers: res.Leechers, peers: peers, complete: complete}
	sh := c.shard(req.InfoHash)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c.entryLocked(sh, req.InfoHash).views[viewOf(op)] = v
}

// fill keeps a swarm read whole (its live peers, as changes) as both its
// views, for either family.
func (c *cache) fill(ih bittorrent.InfoHash, peers []bittorrent.PeerChange, now time.Time) {
	all := make([]bittorrent.Peer, 0, len(peers))
	leechers := make([]bittorrent.Peer, 0, len(peers))
	var nS, nL int
	for _, ch := range peers {
		p, err := bittorrent.PeerFromBinary(ch.Peer)
		if err != nil {
			continue // checked by the reader; skipped, as a sample skips one
		}
		all = append(all, p)
		switch ch.Op {
		case bittorrent.OpSeeder:
			nS++
		case bittorrent.OpLeecher:
			nL++
			leechers = append(leechers, p)
		default:
			nL++ // a partial seed counts as incomplete, and wants nothing
		}
	}
	at := now.UnixNano()
	sh := c.shard(ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := c.entryLocked(sh, ih)
	e.views[0] = view{at: at, fam: bittorrent.BothFamilies, seeders: nS, leechers: nL, peers: all, complete: true}
	e.views[1] = view{at: at, fam: bittorrent.BothFamilies, seeders: nS, leechers: nL, peers: leechers, complete: true}
	e.largeAt = 0
}

// markLarge notes that the swarm could not be read whole.
func (c *cache) markLarge(ih bittorrent.InfoHash, now time.Time) {
	sh := c.shard(ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c.entryLocked(sh, ih).largeAt = now.UnixNano()
}

// large reports whether a read found the swarm too large to read whole
// less than age ago.
func (c *cache) large(ih bittorrent.InfoHash, now time.Time, age time.Duration) bool {
	sh := c.shard(ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[ih]
	return e != nil && e.largeAt != 0 && now.UnixNano()-e.largeAt < int64(age)
}

// putView keeps v as the swarm's view of kind i.
func (c *cache) putView(ih bittorrent.InfoHash, i int, v view) {
	sh := c.shard(ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c.entryLocked(sh, ih).views[i] = v
}

// entryLocked returns the swarm's entry, made (in place of an arbitrary
// one when the shard is full) if there is none.
func (c *cache) entryLocked(sh *cacheShard, ih bittorrent.InfoHash) *entry {
	e := sh.m[ih]
	if e != nil {
		return e
	}
	if len(sh.m) >= c.per {
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	e = &entry{}
	sh.m[ih] = e
	return e
}

// drop takes a peer that stopped out of the swarm's samples (its counts
// lag until the views are refilled).
func (c *cache) drop(ih bittorrent.InfoHash, p bittorrent.Peer) {
	sh := c.shard(ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[ih]
	if e == nil {
		return
	}
	for i := range e.views {
		v := &e.views[i]
		for j, q := range v.peers {
			if q.Addr == p.Addr {
				peers := make([]bittorrent.Peer, 0, len(v.peers)-1)
				v.peers = append(append(peers, v.peers[:j]...), v.peers[j+1:]...)
				break
			}
		}
	}
}

// swarms is how many swarms are cached.
func (c *cache) swarms() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
