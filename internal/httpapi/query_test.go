package httpapi

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

var (
	testHash = strings.Repeat("\x01", 18) + "+ "
	testPeer = "-TL0001-abcdefghijkl"
)

// q builds an announce query; override and drop change the defaults.
func q(override map[string]string, drop ...string) string {
	v := map[string]string{
		"info_hash": testHash, "peer_id": testPeer, "port": "6881",
		"uploaded": "1", "downloaded": "2", "left": "3",
	}
	for k, x := range override {
		v[k] = x
	}
	for _, k := range drop {
		delete(v, k)
	}
	var b strings.Builder
	for k, x := range v {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(k) + "=" + url.QueryEscape(x))
	}
	return b.String()
}

func TestParseAnnounce(t *testing.T) {
	from := netip.MustParseAddr("192.0.2.7")
	tests := []struct {
		name    string
		raw     string
		allowIP bool
		wantErr string
		check   func(*testing.T, *bittorrent.AnnounceRequest)
	}{
		{name: "valid", raw: q(nil), check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			var ih bittorrent.InfoHash
			copy(ih[:], testHash)
			if r.InfoHash != ih || string(r.Peer.ID[:]) != testPeer || r.Peer.Addr != netip.MustParseAddrPort("192.0.2.7:6881") ||
				r.Uploaded != 1 || r.Downloaded != 2 || r.Left != 3 || !r.Compact || r.NumWant != -1 || r.Event != bittorrent.None {
				t.Fatalf("parsed %+v", r)
			}
		}},
		{name: "plus is a space, %2B a plus", raw: "info_hash=" + strings.Repeat("%01", 18) + "+%2B&peer_id=" + testPeer + "&port=1&left=0", check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			if r.InfoHash[18] != ' ' || r.InfoHash[19] != '+' {
				t.Fatalf("last bytes %q, want \" +\"", r.InfoHash[18:])
			}
		}},
		{name: "events", raw: q(map[string]string{"event": "completed"}), check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			if r.Event != bittorrent.Completed {
				t.Fatal(r.Event)
			}
		}},
		{name: "event empty", raw: q(map[string]string{"event": "empty"})},
		{name: "compact=0 no_peer_id", raw: q(map[string]string{"compact": "0", "no_peer_id": "1"}), check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			if r.Compact || !r.NoPeerID {
				t.Fatal(r.Compact, r.NoPeerID)
			}
		}},
		{name: "huge numwant is bounded", raw: q(map[string]string{"numwant": "99999999999"}), check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			if r.NumWant != 1<<20 {
				t.Fatal(r.NumWant)
			}
		}},
		{name: "negative numwant means default", raw: q(map[string]string{"numwant": "-5"}), check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			if r.NumWant != -1 {
				t.Fatal(r.NumWant)
			}
		}},
		{name: "ip ignored by default", raw: q(map[string]string{"ip": "198.51.100.1"}), check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			if r.Peer.Addr.Addr() != from {
				t.Fatal(r.Peer.Addr)
			}
		}},
		{name: "ip honoured when trusted", allowIP: true, raw: q(map[string]string{"ip": "2001:db8::1"}), check: func(t *testing.T, r *bittorrent.AnnounceRequest) {
			if r.Peer.Addr != netip.MustParseAddrPort("[2001:db8::1]:6881") {
				t.Fatal(r.Peer.Addr)
			}
		}},
		{name: "bad ip when trusted", allowIP: true, raw: q(map[string]string{"ip": "example.com"}), wantErr: "ip must be"},
		{name: "missing info_hash", raw: q(nil, "info_hash"), wantErr: "missing info_hash"},
		{name: "short info_hash", raw: q(map[string]string{"info_hash": "abc"}), wantErr: "info_hash must be 20 bytes, got 3"},
		{name: "long info_hash", raw: q(map[string]string{"info_hash": strings.Repeat("a", 32)}), wantErr: "info_hash must be 20 bytes, got 32"},
		{name: "duplicate info_hash", raw: q(nil) + "&info_hash=" + url.QueryEscape(testHash), wantErr: "info_hash given twice"},
		{name: "missing peer_id", raw: q(nil, "peer_id"), wantErr: "missing peer_id"},
		{name: "short peer_id", raw: q(map[string]string{"peer_id": "x"}), wantErr: "peer_id must be 20 bytes"},
		{name: "missing port", raw: q(nil, "port"), wantErr: "missing port"},
		{name: "port 0", raw: q(map[string]string{"port": "0"}), wantErr: "port must be"},
		{name: "port too big", raw: q(map[string]string{"port": "65536"}), wantErr: "port must be"},
		{name: "port not a number", raw: q(map[string]string{"port": "http"}), wantErr: "port must be"},
		{name: "missing left", raw: q(nil, "left"), wantErr: "missing left"},
		{name: "negative left", raw: q(map[string]string{"left": "-1"}), wantErr: "left must be a non-negative number"},
		{name: "uploaded overflow", raw: q(map[string]string{"uploaded": "18446744073709551616"}), wantErr: "uploaded must be"},
		{name: "bad numwant", raw: q(map[string]string{"numwant": "lots"}), wantErr: "numwant must be a number"},
		{name: "unknown event", raw: q(map[string]string{"event": "pause"}), wantErr: "unknown event"},
		{name: "bad escape", raw: q(nil) + "&key=%zz", wantErr: "malformed percent-encoding in key"},
		{name: "truncated escape", raw: q(nil) + "&key=%4", wantErr: "malformed percent-encoding"},
		{name: "binary param name", raw: q(nil) + "&%00%ff=%zz", wantErr: "malformed percent-encoding in a parameter"},
		{name: "too long", raw: q(map[string]string{"key": strings.Repeat("k", MaxQueryLen)}), wantErr: "query too long"},
		{name: "long key", raw: q(map[string]string{"key": strings.Repeat("k", 200)}), wantErr: "key too long"},
		{name: "too many params", raw: q(nil) + strings.Repeat("&x=1", 70), wantErr: "too many query parameters"},
		{name: "empty", raw: "", wantErr: "missing info_hash"},
		{name: "only separators", raw: "&&&&", wantErr: "missing info_hash"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseAnnounce(tc.raw, announceParams{from: from, allowIP: tc.allowIP})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				if _, ok := bittorrent.IsClientError(err); !ok {
					t.Fatalf("err %v is not a client error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestParseAnnounceNeedsAddress(t *testing.T) {
	if _, err := parseAnnounce(q(nil), announceParams{}); err == nil || !strings.Contains(err.Error(), "no usable client address") {
		t.Fatalf("err = %v", err)
	}
	r, err := parseAnnounce(q(nil), announceParams{from: netip.MustParseAddr("::ffff:192.0.2.1")})
	if err != nil || !r.Peer.Addr.Addr().Is4() {
		t.Fatalf("v4-mapped address not unmapped: %v %v", r, err)
	}
}

func TestParseScrape(t *testing.T) {
	h := func(c byte) string { return "info_hash=" + url.QueryEscape(strings.Repeat(string(c), 20)) }
	tests := []struct {
		name    string
		raw     string
		want    int
		wantErr string
	}{
		{name: "one", raw: h('a'), want: 1},
		{name: "three", raw: h('a') + "&" + h('b') + "&" + h('c'), want: 3},
		{name: "duplicates once", raw: h('a') + "&" + h('a'), want: 1},
		{name: "other params ignored", raw: "passkey=x&" + h('a'), want: 1},
		{name: "none", raw: "", wantErr: "at least one info_hash"},
		{name: "too many", raw: h('a') + "&" + h('b') + "&" + h('c') + "&" + h('d') + "&" + h('e'), wantErr: "at most 4"},
		{name: "short hash", raw: "info_hash=abc", wantErr: "20 bytes"},
		{name: "bad escape", raw: "info_hash=%g1", wantErr: "malformed"},
		{name: "too long", raw: strings.Repeat("x", 5000), wantErr: "query too long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseScrape(tc.raw, 4)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("got %d hashes, err %v; want %d", len(got), err, tc.want)
			}
		})
	}
}

func FuzzParseAnnounce(f *testing.F) {
	f.Add(q(nil))
	f.Add(q(map[string]string{"event": "stopped", "compact": "0", "numwant": "200", "ip": "::1"}))
	f.Add("info_hash=%01%02&&=&%")
	from := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, raw string) {
		for _, allow := range []bool{false, true} {
			r, err := parseAnnounce(raw, announceParams{from: from, allowIP: allow})
			if err != nil {
				if _, ok := bittorrent.IsClientError(err); !ok {
					t.Fatalf("non-client error %v", err)
				}
				continue
			}
			if r.Peer.Addr.Port() == 0 || !r.Peer.Addr.Addr().IsValid() || r.NumWant < -1 || r.NumWant > 1<<20 {
				t.Fatalf("accepted an invalid request %+v", r)
			}
		}
	})
}

func FuzzParseScrape(f *testing.F) {
	f.Add("info_hash=" + url.QueryEscape(strings.Repeat("a", 20)))
	f.Add("info_hash=%zz&info_hash=")
	f.Fuzz(func(t *testing.T, raw string) {
		hs, err := parseScrape(raw, 8)
		if err != nil {
			if _, ok := bittorrent.IsClientError(err); !ok {
				t.Fatalf("non-client error %v", err)
			}
			return
		}
		if len(hs) == 0 || len(hs) > 8 {
			t.Fatalf("%d hashes accepted", len(hs))
		}
	})
}
