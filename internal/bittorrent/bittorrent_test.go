package bittorrent

import (
	"net/netip"
	"testing"
)

func TestPeerBinaryRoundTrip(t *testing.T) {
	id := PeerID{'-', 'T', 'L'}
	for _, tc := range []struct {
		addr   string
		withID bool
		length int
	}{
		{"192.0.2.1:6881", false, PeerLen4},
		{"192.0.2.1:6881", true, PeerLen4WithID},
		{"[2001:db8::1]:1", false, PeerLen6},
		{"[2001:db8::1]:65535", true, PeerLen6WithID},
		{"[::ffff:192.0.2.9]:80", false, PeerLen4}, // v4-mapped is stored as v4
	} {
		p := Peer{ID: id, Addr: netip.MustParseAddrPort(tc.addr)}
		b := p.AppendBinary(nil, tc.withID)
		if len(b) != tc.length {
			t.Fatalf("%s: %d bytes, want %d", tc.addr, len(b), tc.length)
		}
		got, err := PeerFromBinary(string(b))
		if err != nil {
			t.Fatal(err)
		}
		want := Peer{Addr: netip.AddrPortFrom(p.Addr.Addr().Unmap(), p.Addr.Port())}
		if tc.withID {
			want.ID = id
		}
		if got != want {
			t.Fatalf("%s: round trip gave %+v, want %+v", tc.addr, got, want)
		}
	}
	for _, n := range []int{0, 5, 7, 20, 39} {
		if _, err := PeerFromBinary(string(make([]byte, n))); err == nil {
			t.Fatalf("%d bytes accepted", n)
		}
	}
}

func TestParse(t *testing.T) {
	for _, bad := range []string{"pause", "Paused", "update", "\x00"} {
		if _, err := ParseEvent(bad); err == nil {
			t.Fatalf("unknown event %q accepted", bad)
		}
	}
	for s, want := range map[string]Event{"": None, "empty": None, "started": Started, "completed": Completed, "stopped": Stopped, "paused": Paused} {
		if e, err := ParseEvent(s); err != nil || e != want || (s != "empty" && e.String() != s) {
			t.Fatalf("%q: %v %v", s, e, err)
		}
	}
	h, err := ParseInfoHash("0123456789abcdef0123456789abcdef01234567")
	if err != nil || h.String() != "0123456789abcdef0123456789abcdef01234567" {
		t.Fatal(h, err)
	}
	for _, bad := range []string{"", "xyz", "0123456789abcdef0123456789abcdef0123456g"} {
		if _, err := ParseInfoHash(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	if _, err := InfoHashFromBytes(make([]byte, 19)); err == nil {
		t.Fatal("19 bytes accepted")
	}
}

func TestUnicast(t *testing.T) {
	for s, want := range map[string]bool{
		"192.0.2.1": true, "127.0.0.1": true, "10.1.2.3": true, "169.254.1.1": true, "2001:db8::1": true, "::1": true, "fe80::1": true,
		"::ffff:192.0.2.1": true,
		"0.0.0.0":          false, "::": false, "224.0.0.1": false, "239.255.255.250": false, "255.255.255.255": false,
		"ff02::1": false, "ff05::2": false, "::ffff:224.0.0.1": false,
	} {
		if got := Unicast(netip.MustParseAddr(s)); got != want {
			t.Errorf("Unicast(%s) = %v, want %v", s, got, want)
		}
	}
	if Unicast(netip.Addr{}) {
		t.Error("the zero address is unicast")
	}
}

// TestCheckPeer: what another node may claim is what a front end stores.
func TestCheckPeer(t *testing.T) {
	bin := func(addr string, id bool) string {
		return string(Peer{Addr: netip.MustParseAddrPort(addr)}.AppendBinary(nil, id))
	}
	for name, tc := range map[string]struct {
		peer string
		ok   bool
	}{
		"ipv4":            {bin("192.0.2.1:6881", false), true},
		"ipv4 with id":    {bin("192.0.2.1:6881", true), true},
		"ipv6":            {bin("[2001:db8::1]:6881", false), true},
		"ipv6 with id":    {bin("[2001:db8::1]:6881", true), true},
		"multicast":       {bin("224.0.0.1:6881", false), false},
		"broadcast":       {bin("255.255.255.255:6881", false), false},
		"unspecified":     {bin("0.0.0.0:6881", false), false},
		"ipv6 multicast":  {bin("[ff02::1]:6881", false), false},
		"port 0":          {bin("192.0.2.1:0", false), false},
		"ipv4 as ipv6":    {"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xc0\x00\x02\x01\x1a\xe1", false},
		"short":           {"\x01\x02\x03", false},
		"empty":           {"", false},
		"between lengths": {bin("192.0.2.1:6881", false) + "x", false},
	} {
		if err := CheckPeer(tc.peer); (err == nil) != tc.ok {
			t.Errorf("%s: CheckPeer = %v, want ok %v", name, err, tc.ok)
		}
	}
}
