package tracker

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// recentAnnounces remembers when each peer (torrent, address, port) last
// announced to this process, so that a regular re-announce (no event)
// sooner than min interval is refused. It counts only announces this
// process received: peers the link relayed, and announces to other nodes
// of a network, carry other trackers' times and must not make a client
// that uses several of them look too eager. Like addrLimiter it is a
// direct-mapped table of fixed size (a keyed hash picks the slot; a peer
// that finds another one's entry takes the slot over), so memory is
// bounded and an eviction can only let a re-announce through, never
// refuse one wrongly. Replicas keep a table each.
type recentAnnounces struct {
	seed   maphash.Seed
	shards [limiterShards]recentShard
}

type recentShard struct {
	mu    sync.Mutex
	slots []recentSlot
}

type recentSlot struct {
	key  uint64 // 0: empty
	last int64  // unix nanoseconds
}

// recentSlotSize is the memory of one slot, for the documentation's sums.
const recentSlotSize = 16

func newRecentAnnounces(slots int) *recentAnnounces {
	r := &recentAnnounces{seed: maphash.MakeSeed()}
	per := max(1, slots/limiterShards)
	for i := range r.shards {
		r.shards[i].slots = make([]recentSlot, per)
	}
	return r
}

func (r *recentAnnounces) slot(req *bittorrent.AnnounceRequest) (*recentShard, *recentSlot, uint64) {
	var b [20 + 16 + 2]byte
	copy(b[:20], req.InfoHash[:])
	a := req.Peer.Addr.Addr().As16()
	copy(b[20:36], a[:])
	binary.BigEndian.PutUint16(b[36:], req.Peer.Addr.Port())
	h := maphash.Bytes(r.seed, b[:])
	if h == 0 {
		h = 1
	}
	sh := &r.shards[h%limiterShards]
	return sh, &sh.slots[(h/limiterShards)%uint64(len(sh.slots))], h
}

// seen records req at now and returns how long ago the same peer last
// announced to this process (0: not remembered). A stop forgets the peer.
func (r *recentAnnounces) seen(req *bittorrent.AnnounceRequest, now time.Time) time.Duration {
	sh, s, h := r.slot(req)
	t := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var since time.Duration
	if s.key == h {
		since = time.Duration(t - s.last)
	}
	if req.Event == bittorrent.Stopped {
		*s = recentSlot{}
	} else {
		*s = recentSlot{key: h, last: t}
	}
	return since
}
