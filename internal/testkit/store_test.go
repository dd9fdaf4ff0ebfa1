package testkit

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

var _ tracker.Store = (*Store)(nil)

func fakeReq(ih byte, addr string, left uint64, ev bittorrent.Event) *bittorrent.AnnounceRequest {
	r := &bittorrent.AnnounceRequest{Left: left, Event: ev}
	r.InfoHash[0] = ih
	r.Peer.Addr = netip.MustParseAddrPort(addr)
	return r
}

// TestStoreRules: the fake keeps the rules a front end can see.
func TestStoreRules(t *testing.T) {
	ctx := context.Background()
	s := &Store{}
	must := func(r bittorrent.AnnounceResult, err error) bittorrent.AnnounceResult {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := must(s.Announce(ctx, fakeReq(1, "192.0.2.1:1001", 10, bittorrent.Started), 50))
	if !first.NewSwarm || first.Leechers != 1 || len(first.Peers) != 0 {
		t.Fatalf("first announce: %+v", first)
	}
	must(s.Announce(ctx, fakeReq(1, "192.0.2.2:1002", 10, bittorrent.Started), 50))
	must(s.Announce(ctx, fakeReq(1, "[2001:db8::3]:1003", 10, bittorrent.Started), 50))
	seed := must(s.Announce(ctx, fakeReq(1, "192.0.2.4:1004", 0, bittorrent.Completed), 50))
	if seed.NewSwarm || seed.Seeders != 1 || seed.Leechers != 3 || len(seed.Peers) != 3 || !seed.Change.Completion {
		t.Fatalf("completion: %+v", seed)
	}
	if again := must(s.Announce(ctx, fakeReq(1, "192.0.2.4:1004", 0, bittorrent.Completed), 50)); again.Change.Completion {
		t.Fatal("a live seeder's second completion counted")
	}
	seed2 := must(s.Announce(ctx, fakeReq(1, "192.0.2.5:1005", 0, bittorrent.Started), 50))
	for _, p := range seed2.Peers {
		if p.Addr.Port() == 1004 {
			t.Fatal("a seeder was sent a seeder")
		}
	}
	v4 := fakeReq(1, "192.0.2.1:1001", 10, bittorrent.None)
	v4.Family = bittorrent.OnlyIPv4
	r := must(s.Announce(ctx, v4, 1))
	if len(r.Peers) != 1 || r.Peers[0].Is6() || r.Peers[0].Addr.Port() == 1001 {
		t.Fatalf("numwant 1, IPv4 only, not itself: %+v", r.Peers)
	}
	stop := must(s.Announce(ctx, fakeReq(1, "192.0.2.2:1002", 10, bittorrent.Stopped), 50))
	if stop.Leechers != 2 || stop.Change.Op != bittorrent.OpStopped {
		t.Fatalf("stop: %+v", stop)
	}
	sc, _ := s.Scrape(ctx, []bittorrent.InfoHash{fakeReq(1, "192.0.2.1:1", 0, 0).InfoHash, {9}})
	if sc[0].Complete != 2 || sc[0].Incomplete != 2 || sc[0].Downloaded != 1 || sc[0].Downloaders != 2 || sc[1] != (bittorrent.Scrape{InfoHash: bittorrent.InfoHash{9}}) {
		t.Fatalf("scrape: %+v", sc)
	}

	keyed := fakeReq(2, "192.0.2.1:1001", 10, bittorrent.Started)
	keyed.Key = "k1"
	must(s.Announce(ctx, keyed, 50))
	keyed.Key = "k2"
	if _, err := s.Announce(ctx, keyed, 50); !errors.Is(err, bittorrent.ErrKeyMismatch) {
		t.Fatalf("another key: %v", err)
	}
	closed := fakeReq(3, "192.0.2.1:1001", 10, bittorrent.Started)
	closed.NoNewSwarm = true
	if _, err := s.Announce(ctx, closed, 50); !errors.Is(err, bittorrent.ErrNoNewSwarms) {
		t.Fatalf("no new swarm: %v", err)
	}

	down := errors.New("down")
	s.Fail(down)
	b := &bittorrent.StoreBatch{Announces: []*bittorrent.AnnounceRequest{fakeReq(1, "192.0.2.9:1", 1, 0)}, NumWant: []int{5}, Scrapes: [][]bittorrent.InfoHash{{{1}}}}
	s.Batch(ctx, b)
	if b.AnnounceErrs[0] != down || b.ScrapeErrs[0] != down || s.Ping(ctx) != down {
		t.Fatalf("failing store: %v %v", b.AnnounceErrs, b.ScrapeErrs)
	}
}
