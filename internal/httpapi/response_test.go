package httpapi

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

// TestScrapeLeavesOutUnavailable: a swarm the store could not read is
// left out of files (BEP 48: no data for it) and a warning says how many.
func TestScrapeLeavesOutUnavailable(t *testing.T) {
	a, b := bittorrent.InfoHash{1}, bittorrent.InfoHash{2}
	w := httptest.NewRecorder()
	writeScrape(w, []bittorrent.Scrape{{InfoHash: a, Complete: 3}, {InfoHash: b, Unavailable: true}})
	var m map[string]any
	if err := bencode.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	files := m["files"].(map[string]any)
	if len(files) != 1 || files[string(a[:])].(map[string]any)["complete"] != int64(3) {
		t.Fatalf("files %v", files)
	}
	if m["warning message"] != "1 of the torrents asked for are unavailable now and left out; try again later" {
		t.Fatalf("warning %q", m["warning message"])
	}
	w = httptest.NewRecorder()
	writeScrape(w, []bittorrent.Scrape{{InfoHash: a}})
	if m = nil; bencode.Unmarshal(w.Body.Bytes(), &m) != nil || m["warning message"] != nil {
		t.Fatalf("a whole answer carries a warning: %q", w.Body.String())
	}
}

// benchAnswer is a typical answer: 50 IPv4 peers, compact.
func benchAnswer() (*bittorrent.AnnounceRequest, *tracker.Answer) {
	ans := &tracker.Answer{Interval: 30 * time.Minute, MinInterval: 5 * time.Minute}
	ans.Seeders, ans.Leechers = 12, 38
	for i := range 50 {
		ans.Peers = append(ans.Peers, bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(6881+i))})
	}
	return &bittorrent.AnnounceRequest{Compact: true}, ans
}

// discard is a ResponseWriter that keeps nothing, for benchmarks.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkWriteAnnounce: encoding and writing one compact answer.
func BenchmarkWriteAnnounce(b *testing.B) {
	req, ans := benchAnswer()
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for range b.N {
		writeAnnounce(w, req, ans)
	}
}

// TestCompactAnswerAsBencode: the hand-written compact answer is byte for
// byte what the bencode library makes of announceResponse, for answers
// with no peers, IPv4 only, IPv6 only and both, and large counts.
func TestCompactAnswerAsBencode(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		ans := &tracker.Answer{Interval: time.Duration(rng.IntN(7200)) * time.Second, MinInterval: time.Duration(rng.IntN(600)) * time.Second}
		ans.Seeders, ans.Leechers = rng.IntN(1<<31), rng.IntN(1000)
		for range rng.IntN(60) {
			var a netip.Addr
			if i%4 == 1 || (i%4 == 3 && rng.IntN(2) == 0) {
				var b [16]byte
				b[0], b[1], b[15] = 0x20, 0x01, byte(rng.IntN(256))
				a = netip.AddrFrom16(b)
			} else if i%4 != 0 {
				a = netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), 1})
			} else {
				break
			}
			ans.Peers = append(ans.Peers, bittorrent.Peer{Addr: netip.AddrPortFrom(a, uint16(rng.IntN(65536)))})
		}
		want := announceResponse{Complete: ans.Seeders, Incomplete: ans.Leechers,
			Interval: int64(ans.Interval / time.Second), MinInterval: int64(ans.MinInterval / time.Second)}
		v4 := []byte{}
		var v6 []byte
		for _, p := range ans.Peers {
			if p.Is6() {
				v6 = p.AppendBinary(v6, false)
			} else {
				v4 = p.AppendBinary(v4, false)
			}
		}
		want.Peers, want.Peers6 = v4, v6
		wb, err := bencode.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendCompactAnswer(nil, ans); !bytes.Equal(got, wb) {
			t.Fatalf("answer %d:\n got %q\nwant %q", i, got, wb)
		}
	}
}
