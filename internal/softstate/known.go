package softstate

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// knownPeers remembers, for each peer (torrent and member) whose change
// this process wrote or queued, or that a read of its swarm found in
// Redis in the class and with the key binding of its announce here
// (adoptee), its class, a hash of its key and when:
// what makes a regular re-announce a refresh (same class, same key,
// within the peer lifetime). Like the tracker's peer table it is a
// direct-mapped table of fixed size: a keyed hash picks the slot, and a
// peer that finds another's entry takes the slot over, so memory is
// bounded and an eviction only sends an announce to the store.
//
// It says what this process last wrote, not what Redis holds now: another
// replica, the link or a lost Redis may have changed the peer since.
// That is safe because a refresh is applied by time (refresh.lua): it
// never undoes a newer change, never brings back a stopped peer, and puts
// back a peer Redis lost.
type knownPeers struct {
	seed     maphash.Seed
	lifetime int64 // unix seconds
	shards   [shards]knownShard
}

type knownShard struct {
	mu    sync.Mutex
	slots []knownSlot
}

// knownSlot is 24 bytes.
type knownSlot struct {
	key  uint64 // the peer's hash; 0: empty
	keyh uint64 // its key's hash
	last uint32 // unix seconds of the last change
	op   bittorrent.ChangeOp
}

func newKnownPeers(slots int, lifetime time.Duration) *knownPeers {
	k := &knownPeers{seed: maphash.MakeSeed(), lifetime: int64(lifetime / time.Second)}
	per := max(1, slots/shards)
	for i := range k.shards {
		k.shards[i].slots = make([]knownSlot, per)
	}
	return k
}

func (k *knownPeers) slot(ih bittorrent.InfoHash, member []byte) (*knownShard, *knownSlot, uint64) {
	var h maphash.Hash
	h.SetSeed(k.seed)
	h.Write(ih[:])
	h.Write(member)
	key := h.Sum64()
	if key == 0 {
		key = 1
	}
	sh := &k.shards[key%shards]
	return sh, &sh.slots[(key/shards)%uint64(len(sh.slots))], key
}

func (k *knownPeers) keyHash(key string) uint64 {
	return maphash.String(k.seed, key)
}

// is reports whether the peer's last change here was of class op, with
// the same key, within the peer lifetime.
func (k *knownPeers) is(ih bittorrent.InfoHash, member []byte, op bittorrent.ChangeOp, key string, now time.Time) bool {
	sh, s, h := k.slot(ih, member)
	kh := k.keyHash(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return s.key == h && s.op == op && s.keyh == kh && now.Unix()-int64(s.last) < k.lifetime
}

// class returns the class of the peer's last change here within the
// peer lifetime, or 0.
func (k *knownPeers) class(ih bittorrent.InfoHash, member []byte, now time.Time) bittorrent.ChangeOp {
	sh, s, h := k.slot(ih, member)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.key == h && now.Unix()-int64(s.last) < k.lifetime {
		return s.op
	}
	return 0
}

// record notes a change of the peer to class op with key.
func (k *knownPeers) record(ih bittorrent.InfoHash, member []byte, op bittorrent.ChangeOp, key string, now time.Time) {
	sh, s, h := k.slot(ih, member)
	kh := k.keyHash(key)
	sh.mu.Lock()
	*s = knownSlot{key: h, keyh: kh, last: uint32(now.Unix()), op: op}
	sh.mu.Unlock()
}

// forget forgets the peer (it stopped).
func (k *knownPeers) forget(ih bittorrent.InfoHash, member []byte) {
	sh, s, h := k.slot(ih, member)
	sh.mu.Lock()
	if s.key == h {
		*s = knownSlot{}
	}
	sh.mu.Unlock()
}
