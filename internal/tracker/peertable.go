package tracker

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// peerTable remembers, for each peer (torrent, address, port) that
// announced to this process, when it last did: enough to refuse a regular
// re-announce sooner than min interval. (Keys bind peers in the store,
// where every replica sees them.)
//
// It counts only announces this process accepted: peers the link relayed,
// announces to other nodes of a network (a client may use several trackers
// of a network) and announces the store refused (another key for the peer)
// never make a peer look too eager. Like addrLimiter it is a direct-mapped
// table of fixed size (a keyed hash picks the slot; a peer that finds
// another one's entry takes the slot over), so memory is bounded and an
// eviction can only let a request through, never refuse one wrongly.
// Replicas keep a table each.
type peerTable struct {
	seed     maphash.Seed
	lifetime time.Duration // a peer silent this long is gone
	shards   [limiterShards]peerShard
}

type peerShard struct {
	mu    sync.Mutex
	slots []peerSlot
}

// peerSlot is 16 bytes (12 used, aligned to 8).
type peerSlot struct {
	key  uint64 // the peer's hash; 0: empty
	last uint32 // unix seconds of its last accepted announce
}

// peerSlotSize is the memory of one slot, for the documentation's sums.
const peerSlotSize = 16

func newPeerTable(slots int, lifetime time.Duration) *peerTable {
	r := &peerTable{seed: maphash.MakeSeed(), lifetime: lifetime}
	per := max(1, slots/limiterShards)
	for i := range r.shards {
		r.shards[i].slots = make([]peerSlot, per)
	}
	return r
}

func (r *peerTable) slot(req *bittorrent.AnnounceRequest) (*peerShard, *peerSlot, uint64) {
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

// since is how long ago req's peer last had an announce accepted by this
// process; 0 when that is not known.
func (r *peerTable) since(req *bittorrent.AnnounceRequest, now time.Time) time.Duration {
	sh, s, h := r.slot(req)
	t := uint32(now.Unix())
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.key == h && time.Duration(t-s.last)*time.Second < r.lifetime {
		return max(time.Duration(t-s.last)*time.Second, time.Nanosecond)
	}
	return 0
}

// record notes an accepted announce of req's peer; a stop forgets it.
func (r *peerTable) record(req *bittorrent.AnnounceRequest, now time.Time) {
	sh, s, h := r.slot(req)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if req.Event == bittorrent.Stopped {
		*s = peerSlot{}
	} else {
		*s = peerSlot{key: h, last: uint32(now.Unix())}
	}
}
