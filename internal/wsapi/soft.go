package wsapi

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/softstate"
)

// The soft state of the WebRTC peers (docs/soft-state.md), on when the
// store is a SoftStore and ReadCache is not 0. Redis stays the only
// authority; this process keeps beside it what it may lose at any moment:
//
//   - the peers whose sockets it holds, per swarm, with their class and
//     when it last wrote them to the store (always fresh: a join, a class
//     change, a stop and a socket's close change them at once);
//   - per swarm, the live peers of the other processes with the process
//     holding each one, read from the store at most ReadCache ago (only
//     swarms of at most maxSoftRead live peers);
//   - the refreshes waiting to be written (softstate.Queue).
//
// A refresh, a regular re-announce (no event) of a peer this process
// wrote within its lifetime, in the same class and on the same socket,
// changes nothing in the store but when the peer was last seen. It is
// answered from the above: counts from the local peers and the read,
// offers delivered here to peers whose sockets this process holds, and
// published (one pipeline, no script) to the processes holding the
// others; its write is queued and made within WriteBehind (rtc_refresh,
// which never brings back a peer that stopped or left). Everything else
// (a join, a stop, a completion, a class change, a peer not known here, a
// swarm too large or not readable) goes to the store's rtc_announce as
// before and is written before the answer; a kill -9 loses only the
// refreshes of the last window, which the peers' next announces make
// good.

// SoftStore is what the soft state needs of the store beyond Store
// (redisstore.RTC).
type SoftStore interface {
	Process() string
	ReadRTCSwarms(ctx context.Context, hashes []bittorrent.InfoHash, max int) ([]bittorrent.RTCSwarm, error)
	RefreshRTC(ctx context.Context, rs []bittorrent.RTCRefresh) (gone []bittorrent.RTCRefresh, err error)
	Publish(ctx context.Context, sigs []bittorrent.RemoteSignal) error
}

var _ SoftStore = (*redisstore.RTC)(nil)

const (
	// maxSoftRead: a swarm with more live peers is not cached (its
	// refreshes go to the store as announces).
	maxSoftRead = 256
	softShards  = 64
	// publishQueue bounds the signals waiting to be published to other
	// processes; past it they are dropped and counted (publish_full).
	publishQueue = 8192
	maxPublish   = 256
)

type soft struct {
	store     SoftStore
	proc      string
	readCache int64 // ms
	window    time.Duration
	// knownFor: a peer this process wrote longer ago than this is not
	// known (its record may be near the end of its lifetime).
	knownFor int64 // ms
	shards   [softShards]softShard
	queue    *softstate.Queue[member, bittorrent.RTCRefresh]
	pub      chan bittorrent.RemoteSignal
	now      func() time.Time
}

type softShard struct {
	mu sync.Mutex
	m  map[bittorrent.InfoHash]*softSwarm
}

// softSwarm is one swarm as this process knows it: its local peers (by
// class, for picking) and the other processes' peers last read. It exists
// while a local peer does.
type softSwarm struct {
	local             map[bittorrent.PeerID]*localPeer
	leechers, seeders []*localPeer
	remote            []bittorrent.RTCPeer // leechers first
	remoteLeechers    int
	readAt            int64 // unix ms of the last read; 0: none
	reading, tooLarge bool
}

type localPeer struct {
	id     bittorrent.PeerID
	c      *conn
	seeder bool
	pos    int   // in leechers or seeders
	known  int64 // unix ms this process last wrote (or queued) it; 0: not known
}

func newSoft(cfg Config, st SoftStore) *soft {
	if cfg.ReadCache <= 0 {
		return nil
	}
	sf := &soft{store: st, proc: st.Process(), readCache: cfg.ReadCache.Milliseconds(), window: cfg.WriteBehind,
		knownFor: (cfg.PeerLifetime() - 2*time.Second).Milliseconds(), pub: make(chan bittorrent.RemoteSignal, publishQueue), now: time.Now}
	if cfg.WriteBehind > 0 {
		sf.queue = softstate.NewQueue[member, bittorrent.RTCRefresh](max(1, cfg.WriteBehindQueue))
	}
	for i := range sf.shards {
		sf.shards[i].m = make(map[bittorrent.InfoHash]*softSwarm)
	}
	return sf
}

func (sf *soft) shard(ih bittorrent.InfoHash) *softShard {
	return &sf.shards[(uint(ih[0])|uint(ih[1])<<8)%softShards]
}

// joined records that the store has the peer m on c's socket, in its
// class, as of now.
func (sf *soft) joined(m member, c *conn, seeder bool) {
	now := sf.now().UnixMilli()
	sh := sf.shard(m.ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sw := sh.m[m.ih]
	if sw == nil {
		sw = &softSwarm{local: make(map[bittorrent.PeerID]*localPeer)}
		sh.m[m.ih] = sw
	}
	lp := sw.local[m.peer]
	if lp != nil && lp.seeder != seeder {
		sw.drop(lp)
		lp = nil
	}
	if lp == nil {
		lp = &localPeer{id: m.peer, seeder: seeder}
		sw.local[m.peer] = lp
		list := &sw.leechers
		if seeder {
			list = &sw.seeders
		}
		lp.pos = len(*list)
		*list = append(*list, lp)
	}
	lp.c, lp.known = c, now
}

// holds says whether this process wrote (or queued) peer m as c's within
// the time it trusts that (knownFor): then an answer to m may go to c
// without asking the store. A peer the store may have let expire, or
// that another process took over, is not held.
func (sf *soft) holds(m member, c *conn) bool {
	if c == nil {
		return false
	}
	now := sf.now().UnixMilli()
	sh := sf.shard(m.ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sw := sh.m[m.ih]
	if sw == nil {
		return false
	}
	lp := sw.local[m.peer]
	return lp != nil && lp.c == c && lp.known != 0 && now-lp.known <= sf.knownFor
}

// left forgets the peer m of c's socket (stopped, or the socket closed),
// and its waiting refresh.
func (sf *soft) left(m member, c *conn) {
	sh := sf.shard(m.ih)
	sh.mu.Lock()
	sw := sh.m[m.ih]
	mine := false
	if sw != nil {
		if lp := sw.local[m.peer]; lp != nil && lp.c == c {
			mine = true
			sw.drop(lp)
			if len(sw.local) == 0 {
				delete(sh.m, m.ih)
			}
		}
	}
	sh.mu.Unlock()
	// A refresh queued for the peer is this socket's only if the peer is
	// still this socket's: another socket of this process that took the
	// peer over keeps its own.
	if mine && sf.queue != nil {
		sf.queue.Remove(m)
	}
}

// forget makes the next announce of these peers go to the store (their
// refresh found them gone, or its write failed).
func (sf *soft) forget(rs []bittorrent.RTCRefresh) {
	for _, r := range rs {
		sh := sf.shard(r.InfoHash)
		sh.mu.Lock()
		if sw := sh.m[r.InfoHash]; sw != nil {
			if lp := sw.local[r.PeerID]; lp != nil {
				lp.known = 0
			}
		}
		sh.mu.Unlock()
	}
}

// drop takes lp out of the swarm's lists and map.
func (sw *softSwarm) drop(lp *localPeer) {
	list := &sw.leechers
	if lp.seeder {
		list = &sw.seeders
	}
	last := len(*list) - 1
	(*list)[lp.pos] = (*list)[last]
	(*list)[lp.pos].pos = lp.pos
	(*list)[last] = nil
	*list = (*list)[:last]
	delete(sw.local, lp.id)
}

// fill replaces the other processes' peers with a read.
func (sw *softSwarm) fill(proc string, r *bittorrent.RTCSwarm, now int64) {
	sw.readAt = now
	sw.remote, sw.remoteLeechers = sw.remote[:0], 0
	sw.tooLarge = !r.Whole && r.Leechers+r.Seeders > 0
	for _, p := range r.Peers {
		if p.Process == proc {
			continue // held here: the local peers are fresher
		}
		if p.Process == "" {
			continue // no socket recorded: nowhere to send an offer
		}
		if lp := sw.local[p.ID]; lp != nil {
			// Another process took it since: this process's copy is
			// not known any more, and is not offered twice.
			lp.known = 0
			continue
		}
		sw.remote = append(sw.remote, p)
		if !p.Seeder {
			sw.remoteLeechers++
		}
	}
}

// target is a peer an offer goes to: local (c != nil) or held by the
// process named.
type target struct {
	id   bittorrent.PeerID
	proc string
}

// refresh answers req, an announce without event of a peer already on
// c's socket, from the soft state, and reports whether it did; false:
// the caller sends it to the store.
func (c *conn) refresh(req *request, m member) bool {
	s := c.srv
	sf := s.soft
	now := sf.now().UnixMilli()
	sh := sf.shard(m.ih)
	sh.mu.Lock()
	sw := sh.m[m.ih]
	var lp *localPeer
	if sw != nil {
		lp = sw.local[m.peer]
	}
	if lp == nil || lp.c != c || lp.seeder != req.seeder || lp.known == 0 || now-lp.known > sf.knownFor {
		sh.mu.Unlock()
		s.m.soft.WithLabelValues("unknown").Inc()
		return false
	}
	if now-sw.readAt > sf.readCache {
		if sw.reading {
			sh.mu.Unlock()
			s.m.soft.WithLabelValues("miss").Inc()
			return false
		}
		sw.reading = true
		sh.mu.Unlock()
		read, err := sf.store.ReadRTCSwarms(s.base, []bittorrent.InfoHash{m.ih}, maxSoftRead)
		sh.mu.Lock()
		sw.reading = false
		if err != nil {
			sh.mu.Unlock()
			s.m.storeErrors.WithLabelValues("read").Inc()
			s.errLog.Log(slog.LevelError, "websocket swarm read failed", "err", err)
			return false
		}
		sw.fill(sf.proc, &read[0], now)
		s.m.soft.WithLabelValues("read").Inc()
		// This socket's goroutine is the only one that drops lp (left
		// checks the socket); a join on another socket may have taken
		// it meanwhile.
		if lp.c != c || lp.known == 0 {
			sh.mu.Unlock()
			return false
		}
	}
	if sw.tooLarge {
		sh.mu.Unlock()
		s.m.soft.WithLabelValues("too_large").Inc()
		return false
	}
	ref := bittorrent.RTCRefresh{InfoHash: m.ih, PeerID: m.peer, Seeder: req.seeder, At: now}
	if sf.queue != nil && !sf.queue.Add(m, ref) {
		sh.mu.Unlock()
		s.m.soft.WithLabelValues("queue_full").Inc()
		return false
	}
	lp.known = now
	var picked [bittorrent.MaxOffers]target
	targets := sw.pick(lp, len(req.offers), picked[:0])
	leechers, seeders := len(sw.leechers)+sw.remoteLeechers, len(sw.seeders)+len(sw.remote)-sw.remoteLeechers
	sh.mu.Unlock()
	if sf.queue == nil {
		// No window: written before the answer, still without reading.
		gone, err := sf.store.RefreshRTC(s.base, []bittorrent.RTCRefresh{ref})
		if err != nil || len(gone) > 0 {
			sf.forget([]bittorrent.RTCRefresh{ref})
			return false
		}
	}
	s.m.softHit.Inc()
	remote := 0
	for i, t := range targets {
		sig := bittorrent.Signal{Kind: bittorrent.SignalOffer, To: t.id, InfoHash: m.ih, From: m.peer, OfferID: req.offerIDs[i], Payload: req.offers[i]}
		if t.proc == "" {
			s.deliver(&sig, true)
			continue
		}
		remote++
		sig.Payload = bytes.Clone(sig.Payload) // the read buffer is reused
		select {
		case sf.pub <- bittorrent.RemoteSignal{Process: t.proc, Signal: sig}:
		default:
			s.m.dropped.WithLabelValues("publish_full").Inc()
		}
	}
	s.m.offersLocal.Add(float64(len(targets) - remote))
	if remote > 0 {
		s.m.offersRemote.Add(float64(remote))
	}
	if unsent := len(req.offers) - len(targets); unsent > 0 {
		s.m.dropped.WithLabelValues("no_peer").Add(float64(unsent))
	}
	var reply [replySize]byte
	c.write(announceReply(reply[:0], m.ih, int(s.cfg.ClientInterval/time.Second), seeders, leechers))
	return true
}

// pick chooses up to want distinct peers other than me for its offers, at
// random among the live ones (a seeder's among leechers only): the local
// leechers, the remote leechers, then (for a leecher) the local and remote
// seeders, as one range of positions, sampled by Floyd's method.
func (sw *softSwarm) pick(me *localPeer, want int, out []target) []target {
	nl, rl, ns, rs := len(sw.leechers), sw.remoteLeechers, len(sw.seeders), len(sw.remote)-sw.remoteLeechers
	total := nl + rl
	if !me.seeder {
		total += ns + rs
	}
	k := min(want+1, total) // one more: me may be among them
	if want == 0 || k == 0 {
		return out
	}
	var chosen [bittorrent.MaxOffers + 1]int
	got := chosen[:0]
	for j := total - k; j < total; j++ {
		x := rand.IntN(j + 1)
		for _, y := range got {
			if y == x {
				x = j
				break
			}
		}
		got = append(got, x)
	}
	for _, x := range got {
		if len(out) == want {
			break
		}
		var lp *localPeer
		switch {
		case x < nl:
			lp = sw.leechers[x]
		case x < nl+rl:
			out = append(out, target{sw.remote[x-nl].ID, sw.remote[x-nl].Process})
			continue
		case x < nl+rl+ns:
			lp = sw.seeders[x-nl-rl]
		default:
			p := sw.remote[rl+x-nl-rl-ns]
			out = append(out, target{p.ID, p.Process})
			continue
		}
		if lp != me {
			out = append(out, target{id: lp.id})
		}
	}
	return out
}

// runSoft writes the refreshes queued once every WriteBehind and
// publishes the signals for other processes, until stop; then it closes
// the queue (later refreshes go to the store) and writes what is left.
func (s *Server) runSoft(stop <-chan struct{}, done *sync.WaitGroup) {
	sf := s.soft
	done.Add(1)
	go func() {
		defer done.Done()
		batch := make([]bittorrent.RemoteSignal, 0, maxPublish)
		for sig := range sf.pub {
			batch = append(batch[:0], sig)
		more:
			for len(batch) < maxPublish {
				select {
				case sig, ok := <-sf.pub:
					if !ok {
						break more
					}
					batch = append(batch, sig)
				default:
					break more
				}
			}
			if err := sf.store.Publish(s.base, batch); err != nil {
				s.m.storeErrors.WithLabelValues("publish").Inc()
				s.m.dropped.WithLabelValues("publish_failed").Add(float64(len(batch)))
				s.errLog.Log(slog.LevelError, "websocket publish failed", "err", err)
			}
			clear(batch)
		}
	}()
	if sf.queue == nil {
		return
	}
	done.Add(1)
	go func() {
		defer done.Done()
		t := time.NewTicker(sf.window)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.flushRefreshes(false)
			case <-stop:
				s.flushRefreshes(true)
				return
			}
		}
	}()
}

// flushRefreshes writes the refreshes waiting; last closes the queue.
func (s *Server) flushRefreshes(last bool) {
	sf := s.soft
	rs := sf.queue.Take(last)
	if len(rs) == 0 {
		return
	}
	gone, err := sf.store.RefreshRTC(s.base, rs)
	sf.forget(gone)
	if err != nil {
		// gone holds the failed calls' refreshes too.
		s.m.storeErrors.WithLabelValues("refresh").Inc()
		s.m.behind.WithLabelValues("failed").Add(float64(len(gone)))
		s.m.behind.WithLabelValues("written").Add(float64(len(rs) - len(gone)))
		s.errLog.Log(slog.LevelWarn, "websocket refreshes written behind failed; those peers' next announces go to the store", "refreshes", len(rs), "err", err)
		return
	}
	s.m.behind.WithLabelValues("written").Add(float64(len(rs) - len(gone)))
	s.m.behind.WithLabelValues("gone").Add(float64(len(gone)))
}
