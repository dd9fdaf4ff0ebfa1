package tracker

import (
	"hash/maphash"
	"net/netip"
	"time"
)

// swarmShares shares the process's budget of new swarms out by network
// prefix, so that one prefix cannot spend it all and shut new torrents
// out for everyone else. Each prefix has a token bucket at every level of
// its address: an IPv4 address and its /24; an IPv6 /64, its /56 and its
// /48 (what a subscriber, a site and an organisation usually hold). The
// unit (address or /64) refills at rate in bursts of burst, a /24 or /56
// at shareMid times that, a /48 at shareTop times: the many /64s of one
// /48 together get what the /48 gets. An announce may start a swarm only
// while every level of its prefix holds a token (may), and each level
// gives one when the store reports that it did start one (charge).
// Concurrent announces may overdraw a bucket by those in flight; it then
// refills from below zero.
//
// Each level is a direct-mapped table of fixed size, like addrLimiter's,
// so memory is bounded whatever addresses clients come from; but a bucket
// is written only when its prefix starts a swarm, and a slot is taken over
// only from a bucket that has refilled to its burst (one that would allow
// all it can anyway). A prefix that finds its slot held by another one's
// spent bucket is not recorded at that level: the share errs on the
// lenient side, never refuses wrongly, and the process's own budget
// still bounds everything. The seed is secret, so no one can aim at
// another prefix's slot; the levels' tables are apart, so the many /64s
// of one /48 cannot push the /48's bucket out.
type swarmShares struct {
	seed   maphash.Seed
	levels [3]shareLevel
}

// The levels, and how much more than a unit the larger prefixes get.
const (
	shareMid = 4 // an IPv4 /24, an IPv6 /56
	shareTop = 8 // an IPv6 /48
	// shareSlots is the size of each level's table (24 bytes a slot).
	shareSlots = 1 << 15
)

type shareLevel struct {
	bits4, bits6 int // prefix length of IPv4 and IPv6 addresses; 0: the level has none of that family
	perNano      float64
	burst        float64
	shards       [limiterShards]limiterShard
}

func newSwarmShares(rate float64, burst int) *swarmShares {
	s := &swarmShares{seed: maphash.MakeSeed()}
	for i, l := range []struct{ bits4, bits6, times int }{{32, 64, 1}, {24, 56, shareMid}, {0, 48, shareTop}} {
		lv := &s.levels[i]
		lv.bits4, lv.bits6 = l.bits4, l.bits6
		lv.perNano, lv.burst = rate*float64(l.times)/1e9, float64(burst*l.times)
		for j := range lv.shards {
			lv.shards[j].slots = make([]bucket, shareSlots/limiterShards)
		}
	}
	return s
}

// may reports whether addr's prefix may start a swarm now: every level of
// it holds a token (a level without a bucket of its own holds its burst).
func (s *swarmShares) may(addr netip.Addr, now time.Time) bool {
	ok := true
	s.each(addr, now, func(lv *shareLevel, b *bucket, h uint64, t int64) bool {
		ok = b.key != h || lv.refill(b, t) >= 1
		return ok
	})
	return ok
}

// charge takes a token from every level of addr's prefix: it started a
// swarm.
func (s *swarmShares) charge(addr netip.Addr, now time.Time) {
	s.each(addr, now, func(lv *shareLevel, b *bucket, h uint64, t int64) bool {
		switch {
		case b.key == h:
			lv.refill(b, t)
			b.tokens--
		case b.key == 0 || lv.refill(b, t) >= lv.burst:
			*b = bucket{key: h, tokens: lv.burst - 1, last: t}
		}
		return true
	})
}

// each calls f, under its shard's lock, with the slot of each level of
// addr's prefix (h: the prefix's hash, t: now in unix ns), from the unit
// up, while f returns true.
func (s *swarmShares) each(addr netip.Addr, now time.Time, f func(lv *shareLevel, b *bucket, h uint64, t int64) bool) {
	addr = addr.Unmap()
	t := now.UnixNano()
	for i := range s.levels {
		lv := &s.levels[i]
		h, ok := s.key(lv, addr)
		if !ok {
			continue
		}
		sh, b := lv.slot(h)
		sh.mu.Lock()
		more := f(lv, b, h, t)
		sh.mu.Unlock()
		if !more {
			return
		}
	}
}

// refill brings b's tokens up to time t and returns them.
func (lv *shareLevel) refill(b *bucket, t int64) float64 {
	if t > b.last {
		b.tokens = min(lv.burst, b.tokens+float64(t-b.last)*lv.perNano)
		b.last = t
	}
	return b.tokens
}

func (lv *shareLevel) slot(h uint64) (*limiterShard, *bucket) {
	sh := &lv.shards[h%limiterShards]
	return sh, &sh.slots[(h/limiterShards)%uint64(len(sh.slots))]
}

// key is the hash of addr's prefix at level lv, and whether lv has one
// for addr's family.
func (s *swarmShares) key(lv *shareLevel, addr netip.Addr) (uint64, bool) {
	bits := lv.bits6
	if addr.Is4() {
		bits = lv.bits4
	}
	if bits == 0 {
		return 0, false
	}
	p, err := addr.WithZone("").Prefix(bits)
	if err != nil {
		return 0, false
	}
	var b [17]byte
	a := p.Addr().As16()
	copy(b[:16], a[:])
	b[16] = byte(bits)
	if addr.Is4() {
		b[16] |= 0x80 // an IPv4 /24 is not the IPv6 prefix of the same bytes
	}
	h := maphash.Bytes(s.seed, b[:])
	if h == 0 {
		h = 1
	}
	return h, true
}
