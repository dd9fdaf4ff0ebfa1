package tracker

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// addrLimiter is a token bucket per client address, in a table of fixed
// size: memory is bounded whatever addresses clients come from. IPv4
// addresses are limited one by one, IPv6 ones per /64 (what one
// subscriber usually holds). The table is direct-mapped: an address's
// bucket lives in the slot its keyed hash picks, and an address that
// finds another one's bucket there takes the slot over with a full bucket.
// So a flood of distinct addresses can at worst give others a fresh
// bucket (the limit errs on the lenient side), and with a secret hash
// key no one can aim at another client's slot.
type addrLimiter struct {
	perNano float64 // tokens per nanosecond
	burst   float64
	seed    maphash.Seed
	shards  [limiterShards]limiterShard
}

const limiterShards = 64

type limiterShard struct {
	mu    sync.Mutex
	slots []bucket
}

type bucket struct {
	key    uint64 // the address's hash; 0 = empty
	tokens float64
	last   int64 // unix nanoseconds of the last refill
}

// bucketSize is the memory of one slot, for the documentation's sums.
const bucketSize = 24

// newAddrLimiter allows rate announces a second per address, in bursts of
// up to burst, in a table of (about) slots buckets.
func newAddrLimiter(rate float64, burst, slots int) *addrLimiter {
	l := &addrLimiter{perNano: rate / 1e9, burst: float64(burst), seed: maphash.MakeSeed()}
	per := max(1, slots/limiterShards)
	for i := range l.shards {
		l.shards[i].slots = make([]bucket, per)
	}
	return l
}

// allow takes a token from addr's bucket and reports whether there was
// one.
func (l *addrLimiter) allow(addr netip.Addr, now time.Time) bool { return l.allowN(addr, now, 1) }

// allowN takes n tokens from addr's bucket and reports whether there were
// as many; when there were not, it takes none.
func (l *addrLimiter) allowN(addr netip.Addr, now time.Time, n float64) bool {
	h := l.hash(addr)
	sh := &l.shards[h%limiterShards]
	b := &sh.slots[(h/limiterShards)%uint64(len(sh.slots))]
	t := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if b.key != h {
		*b = bucket{key: h, tokens: l.burst, last: t}
	} else if t > b.last {
		b.tokens = min(l.burst, b.tokens+float64(t-b.last)*l.perNano)
		b.last = t
	}
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

func (l *addrLimiter) hash(addr netip.Addr) uint64 {
	addr = addr.Unmap()
	var b [16]byte
	if addr.Is4() {
		a := addr.As4()
		copy(b[:], a[:])
	} else {
		a := addr.As16()
		copy(b[:8], a[:8]) // the /64
		b[15] = 6
	}
	h := maphash.Bytes(l.seed, b[:])
	if h == 0 {
		h = 1 // 0 marks an empty slot
	}
	return h
}
