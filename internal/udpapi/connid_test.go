package udpapi

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestConnIDValidity(t *testing.T) {
	ids := newConnIDs([]byte("a secret of the tests"))
	other := newConnIDs([]byte("another secret entirely"))
	ip := netip.MustParseAddr("192.0.2.1")
	// Issued at the last moment of a unit: the shortest validity.
	unitStart := time.Unix(1_800_000_000-1_800_000_000%10, 0)
	issued := unitStart.Add(9999 * time.Millisecond)
	id := ids.issue(ip, issued)
	for _, tc := range []struct {
		name  string
		ids   *connIDs
		ip    netip.Addr
		at    time.Time
		valid bool
	}{
		{"at once", ids, ip, issued, true},
		{"after 2 minutes", ids, ip, issued.Add(2 * time.Minute), true},
		{"after 130 s", ids, ip, issued.Add(130 * time.Second), true},
		{"in the 15th unit after issue", ids, ip, unitStart.Add(140 * time.Second), false},
		{"an hour later", ids, ip, issued.Add(time.Hour), false},
		{"43 min later (low byte wrapped around)", ids, ip, issued.Add(256 * 10 * time.Second), false},
		{"another address", ids, netip.MustParseAddr("192.0.2.2"), issued, false},
		{"the same address as IPv4-mapped IPv6", ids, netip.MustParseAddr("::ffff:192.0.2.1"), issued, true},
		{"another secret", other, ip, issued, false},
		{"checker's clock 30 s behind", ids, ip, unitStart.Add(-30 * time.Second), true},
		{"checker's clock 40 s behind", ids, ip, unitStart.Add(-40 * time.Second), false},
	} {
		if got := tc.ids.valid(id, tc.ip, tc.at); got != tc.valid {
			t.Errorf("%s: valid = %v, want %v", tc.name, got, tc.valid)
		}
	}
	// Issued at the first moment of a unit: the longest validity, 140 s.
	id = ids.issue(ip, unitStart)
	if !ids.valid(id, ip, unitStart.Add(139*time.Second)) || ids.valid(id, ip, unitStart.Add(140*time.Second)) {
		t.Error("an ID issued at the start of a unit is not valid for exactly 140 s")
	}
	// Across the wrap of the unit's low byte.
	for u := int64(250); u < 262; u++ {
		at := time.Unix(u*10, 0)
		if id := ids.issue(ip, at); !ids.valid(id, ip, at.Add(100*time.Second)) {
			t.Fatalf("unit %d: not valid 100 s later", u)
		}
	}
}

func TestConnIDsResistGuessing(t *testing.T) {
	ids := newConnIDs([]byte("a secret of the tests"))
	ip := netip.MustParseAddr("2001:db8::1")
	now := time.Now()
	for i := 0; i < 100_000; i++ {
		if ids.valid(rand.Uint64(), ip, now) {
			t.Fatal("a random connection ID was accepted")
		}
	}
}

func BenchmarkConnIDValid(b *testing.B) {
	ids := newConnIDs([]byte("a secret of the tests"))
	ip := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	id := ids.issue(ip, now)
	b.ReportAllocs()
	for b.Loop() {
		if !ids.valid(id, ip, now) {
			b.Fatal("invalid")
		}
	}
}
