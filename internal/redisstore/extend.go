package redisstore

import (
	"hash/maphash"
	"sync"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Refreshes extend a swarm's key TTLs (its set or buckets hash, its key
// bindings, its completed counter) at most once per extendEvery, not on
// every refresh: the EXPIREs were most of what a refresh cost Redis when
// each swarm's refreshes come a few at a time.
//
// Why no key expires under a live peer: every writer that extends a key
// (announce.lua, refresh.lua) gives it the same TTL, keyTTL = the peer
// lifetime + 1 s + extendEvery (the completed counter: the completed TTL
// + extendEvery), counted by Redis's clock when the write runs, so a
// later extension never shortens an earlier one (apply.lua only ever
// raises a TTL). A refresh that does not extend runs at most extendEvery
// after an extension this process made and saw succeed (the table below
// records only those), so the key lives at least the lifetime + 1 s past
// that refresh's time: longer than the peer it wrote. A process that
// does not find a swarm in its table (a new process, a slot taken by
// another swarm) extends, so losing the table costs only EXPIREs.
//
// The price: a swarm's keys outlive its last peer by up to extendEvery
// more (an eighth of the lifetime), and its tombstones, which take the
// same TTL, by as much.

// extendFraction: extendEvery is the peer lifetime over this.
const extendFraction = 8

// extendSlots is the size of the table of extensions (40 bytes a slot).
const extendSlots = 1 << 16

// extensions is the table of when this process last extended each
// swarm's TTLs with a refresh: a fixed array indexed by a keyed hash of
// the info hash, where a swarm takes the slot of another (a collision
// costs extensions, nothing else).
type extensions struct {
	mu    sync.Mutex
	every int64 // milliseconds; 0: extend every time
	seed  maphash.Seed
	slots []extension
}

type extension struct {
	ih bittorrent.InfoHash
	// keys and completed are when the swarm's set (and bindings) and its
	// completed counter were last extended, in unix milliseconds.
	keys, completed int64
}

func newExtensions(everySeconds int64) *extensions {
	return &extensions{every: everySeconds * 1000, seed: maphash.MakeSeed()}
}

// slot returns the swarm's slot; the table is made at the first refresh
// (a process that never refreshes, a hub, does not pay for it). The
// caller holds e.mu.
func (e *extensions) slot(ih bittorrent.InfoHash) *extension {
	if e.slots == nil {
		e.slots = make([]extension, extendSlots)
	}
	return &e.slots[maphash.Bytes(e.seed, ih[:])%extendSlots]
}

// due reports whether a refresh of swarm ih at now (unix ms) extends its
// set and bindings, and (seeder: it refreshes a seeder) its completed
// counter. The caller holds e.mu.
func (e *extensions) due(ih bittorrent.InfoHash, seeder bool, now int64) (keys, completed bool) {
	if e.every == 0 {
		return true, seeder
	}
	x := e.slot(ih)
	if x.ih != ih {
		return true, seeder
	}
	// 0: never recorded (an empty slot holds the zero info hash).
	stale := func(at int64) bool { return at == 0 || now-at >= e.every }
	return stale(x.keys), seeder && stale(x.completed)
}

// done records extensions that Redis made at now (unix ms). The caller
// holds e.mu.
func (e *extensions) done(ih bittorrent.InfoHash, keys, completed bool, now int64) {
	if e.every == 0 || !keys && !completed {
		return
	}
	x := e.slot(ih)
	if x.ih != ih {
		*x = extension{ih: ih}
	}
	if keys {
		x.keys = now
	}
	if completed {
		x.completed = now
	}
}
