package udpapi

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/tracker"
)

func scrapeBytes(connID uint64, txID uint32, hashes int) []byte {
	b := binary.BigEndian.AppendUint64(nil, connID)
	b = binary.BigEndian.AppendUint32(b, actionScrape)
	b = binary.BigEndian.AppendUint32(b, txID)
	for i := range hashes {
		var ih bittorrent.InfoHash
		binary.BigEndian.PutUint32(ih[:], uint32(i))
		b = append(b, ih[:]...)
	}
	return b
}

// TestUDPScrapeRateLimit: UDP scrapes take tokens of the address's bucket
// (one per tracker.ScrapeHashesPerToken hashes); a flood from one address
// gets the error action beyond its burst, counted, while another address
// is served.
func TestUDPScrapeRateLimit(t *testing.T) { onEachStore(t, testUDPScrapeRateLimit) }

func testUDPScrapeRateLimit(t *testing.T, fake bool) {
	n := startNode(t, nodeOpts{fake: fake, tune: func(c *tracker.Config) {
		c.RateLimit, c.RateBurst, c.RateSlots, c.LimitLoopback = 1e-6, 40, 1024, true
	}})
	r4 := dialRaw(t, n.v4)
	id := r4.connect() // 74 hashes cost 19 tokens: two scrapes of a burst of 40
	for i := range 2 {
		if rep := r4.roundTrip(scrapeBytes(id, uint32(i), 74), 2*time.Second); binary.BigEndian.Uint32(rep) != actionScrape || len(rep) != 8+12*74 {
			t.Fatalf("scrape %d within the burst: %x", i, rep[:min(len(rep), 64)])
		}
	}
	for i := range 5 {
		if msg := errorText(t, r4.roundTrip(scrapeBytes(id, uint32(10+i), 74), 2*time.Second)); msg != tracker.ScrapeRateLimited {
			t.Fatalf("scrape %d over the burst: %q", i, msg)
		}
	}
	r6 := dialRaw(t, n.v6) // from ::1, another address
	id6 := r6.connect()
	if rep := r6.roundTrip(scrapeBytes(id6, 1, 74), 2*time.Second); binary.BigEndian.Uint32(rep) != actionScrape {
		t.Fatalf("another address: %x", rep[:min(len(rep), 64)])
	}
	if got := n.srv.Status().Requests["scrape"]["client_error"]; got != 5 {
		t.Fatalf("%d scrapes counted as refused, want 5", got)
	}
}

// heldStore holds the first batch it is asked until released, so that a
// test can queue datagrams in the socket behind it; it records how many
// scrapes each batch carried.
type heldStore struct {
	tracker.Store
	release chan struct{}
	batches atomic.Int64
	scrapes [8]atomic.Int64 // per batch, the first ones
}

func (s *heldStore) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	i := s.batches.Add(1) - 1
	if i < int64(len(s.scrapes)) {
		s.scrapes[i].Store(int64(len(b.Scrapes)))
	}
	if i == 0 {
		<-s.release
	}
	s.Store.Batch(ctx, b)
}

// TestUDPScrapesShareRoundTrips: the scrapes of a worker's batch of
// datagrams go to the store together, as one batch with its announces,
// and to Redis in one round trip, not one each.
func TestUDPScrapesShareRoundTrips(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	trips := &testkit.TripCounter{Command: "zcount"} // scrapes read counts
	rdb.AddHook(trips)
	held := &heldStore{release: make(chan struct{})}
	n := startNode(t, nodeOpts{rdb: rdb, workers: 1, wrap: func(s tracker.Store) tracker.Store { held.Store = s; return held }})
	r := dialRaw(t, n.v4)
	id := r.connect()
	// The worker takes the announce and is held in the store with it ...
	if _, err := r.c.Write(announceBytes(id, 1, testIH, testPID, 1, 0, -1, 1, nil)); err != nil {
		t.Fatal(err)
	}
	for held.batches.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// ... while the scrapes and an announce queue in the socket (on
	// loopback a datagram is in the receive buffer when Write returns).
	const scrapes = 20
	for i := range scrapes {
		if _, err := r.c.Write(scrapeBytes(id, uint32(100+i), 3)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.c.Write(announceBytes(id, 2, testIH, testPID, 1, 0, -1, 2, nil)); err != nil {
		t.Fatal(err)
	}
	close(held.release)
	replies := map[uint32]int{}
	buf := make([]byte, 2048)
	for range scrapes + 2 {
		r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := r.c.Read(buf)
		if err != nil {
			t.Fatalf("after %v replies: %v", replies, err)
		}
		replies[binary.BigEndian.Uint32(buf[:k])]++
	}
	if replies[actionScrape] != scrapes || replies[actionAnnounce] != 2 {
		t.Fatalf("replies by action: %v", replies)
	}
	if b, s := held.batches.Load(), held.scrapes[1].Load(); b != 2 || s != scrapes {
		t.Fatalf("%d batches, the second with %d scrapes; want 2, with %d", b, s, scrapes)
	}
	if got := trips.Count(); got != 1 {
		t.Fatalf("%d scrapes took %d round trips to Redis, want 1", scrapes, got)
	}
}
