package tracker

import (
	"encoding/binary"
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// peerTable remembers, for each peer (torrent, address, port) that
// announced to this process, when it last did and the key it sent: enough
// to refuse a regular re-announce sooner than min interval, and a change
// sent for the peer with another key (a neighbour behind the same NAT, or
// anyone with TRACKER_ALLOW_IP_PARAM, stopping someone else's peer).
//
// It counts only announces this process received: peers the link relayed,
// and announces to other nodes of a network, carry other trackers' times
// and keys, and a client may use several trackers of a network. Like
// addrLimiter it is a direct-mapped table of fixed size (a keyed hash
// picks the slot; a peer that finds another one's entry takes the slot
// over), so memory is bounded and an eviction can only let a request
// through, never refuse one wrongly. Replicas keep a table each.
type peerTable struct {
	seed     maphash.Seed
	lifetime time.Duration // a peer silent this long is gone: its key no longer binds
	bindKeys bool
	shards   [limiterShards]peerShard
}

type peerShard struct {
	mu    sync.Mutex
	slots []peerSlot
}

// peerSlot is 16 bytes.
type peerSlot struct {
	key  uint64 // the peer's hash; 0: empty
	last uint32 // unix seconds of its last accepted announce
	bind uint32 // hash of the key it announced with; 0: none
}

// peerSlotSize is the memory of one slot, for the documentation's sums.
const peerSlotSize = 16

func newPeerTable(slots int, lifetime time.Duration, bindKeys bool) *peerTable {
	r := &peerTable{seed: maphash.MakeSeed(), lifetime: lifetime, bindKeys: bindKeys}
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

// keyHash is the 32-bit digest of a peer's key that a slot keeps; 0 for
// no key. Keys compare without case: clients send their key over HTTP as
// hex (libtorrent in capitals) and over UDP as 4 bytes (which the UDP
// front end writes as lower-case hex), so one client is one key on both.
func (r *peerTable) keyHash(key string) uint32 {
	if key == "" || !r.bindKeys {
		return 0
	}
	return uint32(maphash.String(r.seed, strings.ToLower(key))) | 1
}

// seen checks req against what the table knows of its peer and records
// it. keyOK is false when the peer is bound to another key: then nothing
// is recorded. since is how long ago the peer last announced (0: not
// known). A stop forgets the peer.
func (r *peerTable) seen(req *bittorrent.AnnounceRequest, now time.Time) (since time.Duration, keyOK bool) {
	sh, s, h := r.slot(req)
	t := uint32(now.Unix())
	kh := r.keyHash(req.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.key == h && time.Duration(t-s.last)*time.Second < r.lifetime {
		if s.bind != 0 && s.bind != kh {
			return 0, false
		}
		since = max(time.Duration(t-s.last)*time.Second, time.Nanosecond)
	}
	if req.Event == bittorrent.Stopped {
		*s = peerSlot{}
	} else {
		*s = peerSlot{key: h, last: t, bind: kh}
	}
	return since, true
}
