package redisstore

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestSplitReply: a script reply is cut into its announces, each one's
// ranges joined; a reply of the wrong shape is an error for the whole
// call, never a panic or a peer made of something else.
func TestSplitReply(t *testing.T) {
	res := make([]callResult, 2)
	reply := []any{int64(3), int64(4), int64(1), int64(3), []any{"a", "b"}, []any{"c"}, "v4-001v4-002", int64(0), int64(1), int64(2), int64(0)}
	if err := splitReply(reply, res); err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.nS != 3 || r.nL != 4 || r.counted != 1 || !slices.Equal(r.cands, []string{"a", "b", "c", "v4-001", "v4-002"}) {
		t.Fatalf("first announce: %+v", r)
	}
	if r := res[1]; r.nS != 0 || r.nL != 1 || r.counted != 2 || len(r.cands) != 0 {
		t.Fatalf("second announce: %+v", r)
	}
	for name, bad := range map[string][]any{
		"short":                            {int64(1), int64(2), int64(0)},
		"range not list":                   {int64(1), int64(2), int64(0), int64(1), int64(5), int64(0), int64(0), int64(0), int64(0)},
		"string range of part of a member": {int64(1), int64(2), int64(0), int64(1), "a", int64(0), int64(0), int64(0), int64(0)},
		"member not a string":              {int64(1), int64(2), int64(0), int64(1), []any{"a", int64(5)}, int64(0), int64(0), int64(0), int64(0)},
		"count too big":                    {int64(1), int64(2), int64(0), int64(5), []any{"a"}},
		"left over":                        {int64(1), int64(2), int64(0), int64(0), int64(1), int64(2), int64(0), int64(0), int64(9)},
		"negative count":                   {int64(1), int64(2), int64(0), int64(-1), int64(1), int64(2), int64(0), int64(0)},
	} {
		if err := splitReply(bad, make([]callResult, 2)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestDecodeAnnounceFilters: the node skips the announcing peer, members
// of the other family for a one-family answer, and anything that is not a
// member; it gives numwant of the rest.
func TestDecodeAnnounceFilters(t *testing.T) {
	p4 := func(i byte) string {
		return string(bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, i}), 6881)}.AppendBinary(nil, false))
	}
	p6 := func(i byte) string {
		return string(bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 15: i}), 6881)}.AppendBinary(nil, false))
	}
	self := p4(1)
	cands := []string{self, p4(2), p6(3), "junk", p4(4), p6(5)}
	for _, c := range []struct {
		fam     bittorrent.Family
		numWant int
		want    int
	}{{bittorrent.OnlyIPv4, 50, 2}, {bittorrent.OnlyIPv6, 50, 2}, {bittorrent.BothFamilies, 50, 4}, {bittorrent.BothFamilies, 3, 3}} {
		for range 20 {
			out := decodeAnnounce(callResult{cands: slices.Clone(cands)}, self, c.fam, c.numWant)
			if len(out.Peers) != c.want {
				t.Fatalf("family %d numwant %d: %d peers, want %d", c.fam, c.numWant, len(out.Peers), c.want)
			}
			for _, p := range out.Peers {
				if string(p.AppendBinary(nil, false)) == self || !c.fam.Carries(p) {
					t.Fatalf("family %d: gave %v", c.fam, p.Addr)
				}
			}
		}
	}
}
