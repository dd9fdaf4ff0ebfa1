package tracker

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// drain charges swarms to the addresses addr(0), addr(1), ... for as long
// as their prefix may start one, and returns how many it started (at most
// limit).
func drain(s *swarmShares, now time.Time, limit int, addr func(i int) netip.Addr) int {
	for i := range limit {
		a := addr(i)
		if !s.may(a, now) {
			return i
		}
		s.charge(a, now)
	}
	return limit
}

// TestSwarmShares: the many addresses of one prefix together get the
// prefix's share of new swarms, not one share each, and another prefix
// still gets its own.
func TestSwarmShares(t *testing.T) {
	const burst = 3
	tests := []struct {
		name  string
		addr  func(i int) netip.Addr // the i-th address of one prefix, each a fresh unit
		want  int                    // swarms the prefix may start at once
		other netip.Addr             // an address of another prefix
	}{
		{"one IPv4 address", func(int) netip.Addr { return netip.MustParseAddr("198.51.100.7") }, burst, netip.MustParseAddr("198.51.100.8")},
		{"IPv4 addresses of one /24", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }, burst * shareMid, netip.MustParseAddr("198.51.101.1")},
		{"IPv4-mapped is IPv4", func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 203, 13: 0, 14: 113, 15: byte(i)})
		}, burst * shareMid, netip.MustParseAddr("203.0.114.1")},
		{"one IPv6 /64", func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8:1:1::%x", i+1)) }, burst, netip.MustParseAddr("2001:db8:1:2::1")},
		{"/64s of one /56", func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", i)) }, burst * shareMid, netip.MustParseAddr("2001:db8:1:100::1")},
		{"/64s of one /48 over many /56s", func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", i<<8)) }, burst * shareTop, netip.MustParseAddr("2001:db8:2::1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSwarmShares(1e-9, burst)
			now := time.Unix(1000, 0)
			if got := drain(s, now, 1000, tc.addr); got != tc.want {
				t.Fatalf("the prefix started %d swarms, want %d", got, tc.want)
			}
			if !s.may(tc.other, now) {
				t.Fatalf("another prefix (%s) may not start a swarm", tc.other)
			}
		})
	}
}

// TestSwarmSharesRefill: a spent share refills at its rate, up to its
// burst.
func TestSwarmSharesRefill(t *testing.T) {
	s := newSwarmShares(2, 5)
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(1000, 0)
	if got := drain(s, now, 100, func(int) netip.Addr { return a }); got != 5 {
		t.Fatalf("burst: %d, want 5", got)
	}
	if got := drain(s, now.Add(time.Second), 100, func(int) netip.Addr { return a }); got != 2 {
		t.Fatalf("a second later: %d, want 2", got)
	}
	if got := drain(s, now.Add(time.Hour), 100, func(int) netip.Addr { return a }); got != 5 {
		t.Fatalf("an hour later: %d, want the burst (5)", got)
	}
}

// TestSwarmSharesBounded: a million other prefixes starting swarms leave
// the tables at their size and cannot push a spent prefix's bucket out (a
// slot is taken over only from a full bucket).
func TestSwarmSharesBounded(t *testing.T) {
	s := newSwarmShares(1e-9, 2)
	now := time.Unix(1000, 0)
	spent := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8:7:%x::1", i<<8)) }
	if got := drain(s, now, 1000, spent); got != 2*shareTop {
		t.Fatalf("the /48 started %d swarms, want %d", got, 2*shareTop)
	}
	for i := range 1_000_000 {
		s.charge(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	for i := range s.levels {
		size := 0
		for j := range s.levels[i].shards {
			size += len(s.levels[i].shards[j].slots)
		}
		if size != shareSlots {
			t.Fatalf("level %d has %d slots, want %d", i, size, shareSlots)
		}
	}
	if s.may(netip.MustParseAddr("2001:db8:7:ff00::1"), now) {
		t.Fatal("the spent /48 may start swarms again after a flood of other prefixes")
	}
}

// BenchmarkAddrLimiterWithSwarmShares is what admission costs an announce
// with both tables (as admit: the address's bucket, then whether its
// prefix may start a swarm), from many goroutines over many addresses;
// BenchmarkAddrLimiter is the first alone.
func BenchmarkAddrLimiterWithSwarmShares(b *testing.B) {
	for _, family := range []string{"ipv4", "ipv6"} {
		b.Run(family, func(b *testing.B) {
			l, s := newAddrLimiter(20, 300, 1<<18), newSwarmShares(1, 1000)
			b.RunParallel(func(pb *testing.PB) {
				i := uint32(0)
				now := time.Now()
				for pb.Next() {
					i++
					a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
					if family == "ipv6" {
						a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 4: byte(i >> 16), 5: byte(i >> 8), 6: byte(i), 15: 1})
					}
					l.allow(a, now)
					s.may(a, now)
				}
			})
		})
	}
}
