package testkit

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Store is an in-memory tracker.Store, for the front ends' unit tests
// (HTTP, UDP), which test parsing, encoding and limits and need a store
// that answers, not Redis. It keeps the rules a front end can see: a peer
// is its address and port (and its id with PeerIDs), a stop removes it, a
// seeder or a partial seed (BEP 21) is sent downloaders only, nobody is
// sent itself, the answer is a random sample of at most numWant peers of
// the request's family, a completion counts once per peer that becomes a
// seeder, a key binds a peer (ErrKeyMismatch), and NoNewSwarm refuses to
// start a swarm. The zero value is an empty store.
// Peers never expire here: the tests that need time are the real store's.
// Storage tests use real Redis (StartRedis), never this.
type Store struct {
	// PeerIDs keeps peers' ids (a peer is then its address, port and id),
	// as redisstore.Config.PeerIDs.
	PeerIDs bool

	mu     sync.Mutex
	swarms map[bittorrent.InfoHash]*fakeSwarm
	err    error
	calls  int
}

type fakeSwarm struct {
	peers      map[string]*fakePeer // by binary form
	downloaded int
}

type fakePeer struct {
	op  bittorrent.ChangeOp
	key string
}

// Fail makes every call fail with err from now on (nil: answer again), as
// a store whose Redis is down.
func (s *Store) Fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// Calls is how many calls (Announce, Batch, Scrape, Ping) the store has
// taken.
func (s *Store) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Announce records the announce and answers it.
func (s *Store) Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.err != nil {
		return bittorrent.AnnounceResult{}, s.err
	}
	return s.announce(req, numWant)
}

func (s *Store) announce(req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	var res bittorrent.AnnounceResult
	me := string(req.Peer.AppendBinary(nil, s.PeerIDs))
	if s.swarms == nil {
		s.swarms = map[bittorrent.InfoHash]*fakeSwarm{}
	}
	sw := s.swarms[req.InfoHash]
	if sw == nil || len(sw.peers) == 0 {
		if req.NoNewSwarm && req.Op() != bittorrent.OpStopped {
			return res, bittorrent.ErrNoNewSwarms
		}
		if sw == nil {
			sw = &fakeSwarm{peers: map[string]*fakePeer{}}
			s.swarms[req.InfoHash] = sw
		}
		res.NewSwarm = req.Op() != bittorrent.OpStopped
	}
	old := sw.peers[me]
	if old != nil && old.key != "" && old.key != req.Key {
		return res, bittorrent.ErrKeyMismatch
	}
	op := req.Op()
	res.Change = bittorrent.PeerChange{InfoHash: req.InfoHash, Op: op, Seen: time.Now().UnixMilli(), Peer: me}
	if op == bittorrent.OpStopped {
		delete(sw.peers, me)
	} else {
		if op == bittorrent.OpSeeder && req.Event == bittorrent.Completed && (old == nil || old.op != bittorrent.OpSeeder) {
			sw.downloaded++
			res.Change.Completion = true
		}
		key := req.Key
		if old != nil && old.key != "" {
			key = old.key
		}
		sw.peers[me] = &fakePeer{op: op, key: key}
	}
	seeders, leechers := sw.counts()
	res.Seeders, res.Leechers = seeders, leechers
	if op == bittorrent.OpStopped {
		return res, nil
	}
	var candidates []bittorrent.Peer
	for m, p := range sw.peers {
		// A seeder or a partial seed is sent downloaders only: neither
		// wants anything of the other.
		if m == me || (op != bittorrent.OpLeecher && p.op != bittorrent.OpLeecher) {
			continue
		}
		peer, err := bittorrent.PeerFromBinary(m)
		if err != nil || !req.Family.Carries(peer) {
			continue
		}
		candidates = append(candidates, peer)
	}
	rand.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	res.Peers = candidates[:min(len(candidates), max(numWant, 0))]
	return res, nil
}

func (sw *fakeSwarm) counts() (seeders, leechers int) {
	for _, p := range sw.peers {
		if p.op == bittorrent.OpSeeder {
			seeders++
		} else {
			leechers++
		}
	}
	return seeders, leechers
}

// Batch answers every announce and scrape of b at its index.
func (s *Store) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	b.AnnounceResults = make([]bittorrent.AnnounceResult, len(b.Announces))
	b.AnnounceErrs = make([]error, len(b.Announces))
	for i, req := range b.Announces {
		if s.err != nil {
			b.AnnounceErrs[i] = s.err
			continue
		}
		b.AnnounceResults[i], b.AnnounceErrs[i] = s.announce(req, b.NumWant[i])
	}
	b.ScrapeResults = make([][]bittorrent.Scrape, len(b.Scrapes))
	b.ScrapeErrs = make([]error, len(b.Scrapes))
	for i, hashes := range b.Scrapes {
		if s.err != nil {
			b.ScrapeErrs[i] = s.err
			continue
		}
		b.ScrapeResults[i] = s.scrape(hashes)
	}
}

// Scrape answers the counts of each swarm (zeros for one it does not know).
func (s *Store) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.err != nil {
		return nil, s.err
	}
	return s.scrape(hashes), nil
}

func (s *Store) scrape(hashes []bittorrent.InfoHash) []bittorrent.Scrape {
	out := make([]bittorrent.Scrape, len(hashes))
	for i, ih := range hashes {
		out[i].InfoHash = ih
		sw := s.swarms[ih]
		if sw == nil {
			continue
		}
		out[i].Complete, out[i].Incomplete = sw.counts()
		out[i].Downloaded = sw.downloaded
		for _, p := range sw.peers {
			if p.op == bittorrent.OpLeecher {
				out[i].Downloaders++
			}
		}
	}
	return out
}

// Ping answers nil, or the error Fail set.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	return s.err
}
