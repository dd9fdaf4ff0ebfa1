package tracker

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

func TestAddrLimiter(t *testing.T) {
	l := newAddrLimiter(2, 5, 1<<12)
	now := time.Unix(1000, 0)
	a := netip.MustParseAddr("198.51.100.7")
	for i := 0; i < 5; i++ {
		if !l.allow(a, now) {
			t.Fatalf("announce %d of a burst of 5 refused", i+1)
		}
	}
	if l.allow(a, now) {
		t.Fatal("6th announce of a burst of 5 allowed")
	}
	// Other addresses have buckets of their own; mapped IPv4 is IPv4.
	if !l.allow(netip.MustParseAddr("198.51.100.8"), now) {
		t.Fatal("another address refused")
	}
	if l.allow(netip.MustParseAddr("::ffff:198.51.100.7"), now) {
		t.Fatal("the IPv4-mapped form of an empty bucket's address allowed")
	}
	// 2 a second: after 1 s, two more, not three.
	now = now.Add(time.Second)
	allowed := 0
	for i := 0; i < 3; i++ {
		if l.allow(a, now) {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("%d announces allowed a second later; the refill is 2 tokens a second", allowed)
	}
	// A long pause refills to the burst, not beyond.
	now = now.Add(time.Hour)
	n := 0
	for l.allow(a, now) {
		n++
	}
	if n != 5 {
		t.Fatalf("after an hour %d announces allowed, want the burst (5)", n)
	}
	// IPv6 is limited per /64.
	p1, p2 := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	for i := 0; i < 5; i++ {
		l.allow(p1, now)
	}
	if l.allow(p2, now) {
		t.Fatal("another address of the same /64 has a bucket of its own")
	}
	if !l.allow(netip.MustParseAddr("2001:db8:1:3::1"), now) {
		t.Fatal("another /64 refused")
	}
}

// TestAddrLimiterBounded: a million distinct addresses leave the table at
// its size, and an address that was evicted gets a full bucket (lenient,
// never a wrong refusal).
func TestAddrLimiterBounded(t *testing.T) {
	l := newAddrLimiter(1, 3, 1<<10)
	now := time.Unix(1000, 0)
	a := netip.MustParseAddr("203.0.113.1")
	for i := 0; i < 3; i++ {
		l.allow(a, now)
	}
	for i := 0; i < 1_000_000; i++ {
		b := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !l.allow(b, now) {
			t.Fatalf("first announce of fresh address %s refused", b)
		}
	}
	size := 0
	for i := range l.shards {
		size += len(l.shards[i].slots)
	}
	if size != 1<<10 {
		t.Fatalf("table has %d slots after a million addresses, want %d", size, 1<<10)
	}
	if !l.allow(a, now) {
		t.Fatal("an evicted address was refused")
	}
}

func TestServiceRateLimit(t *testing.T) {
	cfg := testCfg
	cfg.RateLimit, cfg.RateBurst, cfg.RateSlots = 1, 3, 1024
	svc := serviceWith(t, cfg)
	req := func(src string) *bittorrent.AnnounceRequest {
		return &bittorrent.AnnounceRequest{Source: netip.MustParseAddr(src), NumWant: -1}
	}
	for i := 0; i < 3; i++ {
		if _, err := svc.Announce(context.Background(), req("192.0.2.1")); err != nil {
			t.Fatalf("announce %d: %v", i, err)
		}
	}
	_, err := svc.Announce(context.Background(), req("192.0.2.1"))
	if ce, ok := bittorrent.IsClientError(err); !ok || string(ce) != RateLimited {
		t.Fatalf("4th announce: %v, want %q", err, RateLimited)
	}
	// The batch path applies the same limit, request by request.
	var b Batch
	b.Add(req("192.0.2.1"))
	b.Add(req("192.0.2.2"))
	svc.AnswerBatch(context.Background(), &b)
	if _, ok := bittorrent.IsClientError(b.Errs[0]); !ok || b.Errs[1] != nil {
		t.Fatalf("batch: %v", b.Errs)
	}
	if got := testutil.ToFloat64(svc.refused.WithLabelValues("rate_limit")); got != 2 {
		t.Fatalf("refused{rate_limit} = %v, want 2", got)
	}
	// Loopback is not limited by default ...
	for i := 0; i < 10; i++ {
		if _, err := svc.Announce(context.Background(), req("127.0.0.1")); err != nil {
			t.Fatalf("loopback announce %d: %v", i, err)
		}
	}
	// ... unless asked.
	cfg.LimitLoopback = true
	svc = serviceWith(t, cfg)
	for i := 0; i < 3; i++ {
		svc.Announce(context.Background(), req("::1"))
	}
	if _, err := svc.Announce(context.Background(), req("::1")); err == nil {
		t.Fatal("loopback not limited with LimitLoopback")
	}
}

func serviceWith(t *testing.T, cfg Config) *Service {
	t.Helper()
	s, err := New(cfg, &fakeStore{}, Options{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// BenchmarkAddrLimiter is the limiter's cost per announce, from many
// goroutines over many addresses.
func BenchmarkAddrLimiter(b *testing.B) {
	l := newAddrLimiter(20, 300, 1<<18)
	b.RunParallel(func(pb *testing.PB) {
		i := uint32(0)
		now := time.Now()
		for pb.Next() {
			i++
			l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
		}
	})
}

func TestMinIntervalEnforced(t *testing.T) {
	cfg := testCfg // min interval 5m
	cfg.EnforceMinInterval, cfg.PeerTableSlots = true, 1024
	svc := serviceWith(t, cfg)
	now := time.Unix(1_000_000, 0)
	peerAt := func(src string, port uint16, ev bittorrent.Event) *bittorrent.AnnounceRequest {
		a := netip.MustParseAddr(src)
		return &bittorrent.AnnounceRequest{InfoHash: bittorrent.InfoHash{7}, Peer: bittorrent.Peer{Addr: netip.AddrPortFrom(a, port)}, Source: a, Event: ev, NumWant: -1}
	}
	admit := func(r *bittorrent.AnnounceRequest, after time.Duration) error {
		now = now.Add(after)
		err := svc.admit(r, now)
		if err == nil {
			svc.accepted(r, bittorrent.AnnounceResult{}, now) // as if the store carried it out
		}
		return err
	}
	if err := admit(peerAt("192.0.2.9", 6881, bittorrent.Started), 0); err != nil {
		t.Fatal(err)
	}
	// A regular re-announce a minute later is too soon ...
	err := admit(peerAt("192.0.2.9", 6881, bittorrent.None), time.Minute)
	if ce, ok := bittorrent.IsClientError(err); !ok || !strings.Contains(string(ce), "min interval is 5m0s") {
		t.Fatalf("re-announce after 1m: %v", err)
	}
	// ... events are not, nor another port or another torrent.
	for _, r := range []*bittorrent.AnnounceRequest{peerAt("192.0.2.9", 6881, bittorrent.Completed), peerAt("192.0.2.9", 6882, bittorrent.None)} {
		if err := admit(r, time.Second); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
	}
	// After min interval (9/10 of it counts) a regular one is fine.
	if err := admit(peerAt("192.0.2.9", 6881, bittorrent.None), 4*time.Minute+31*time.Second); err != nil {
		t.Fatalf("re-announce after 4m31s: %v", err)
	}
	// A stop forgets the peer: its next start and announce are new.
	admit(peerAt("192.0.2.9", 6881, bittorrent.Stopped), time.Second)
	if err := admit(peerAt("192.0.2.9", 6881, bittorrent.None), time.Second); err != nil {
		t.Fatalf("announce after a stop: %v", err)
	}
	// Loopback clients are not judged unless LimitLoopback.
	for i := 0; i < 3; i++ {
		if err := admit(peerAt("127.0.0.1", 6881, bittorrent.None), time.Second); err != nil {
			t.Fatalf("loopback re-announce: %v", err)
		}
	}
	if got := testutil.ToFloat64(svc.refused.WithLabelValues("min_interval")); got != 1 {
		t.Fatalf("refused{min_interval} = %v, want 1", got)
	}
}

// TestStoreRefusalsNotRemembered: a change the store refused (a peer
// bound to another key) is counted as such and does not count as the
// peer's announce, so a neighbour cannot hold the real peer back with its
// min interval.
func TestStoreRefusalsNotRemembered(t *testing.T) {
	cfg := testCfg // min interval 5m
	cfg.EnforceMinInterval, cfg.PeerTableSlots = true, 1024
	st := &fakeStore{}
	svc, err := New(cfg, st, Options{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("198.51.100.20")
	req := func(key string) *bittorrent.AnnounceRequest {
		return &bittorrent.AnnounceRequest{InfoHash: bittorrent.InfoHash{9}, Peer: bittorrent.Peer{Addr: netip.AddrPortFrom(a, 6881)}, Source: a, Key: key, NumWant: -1}
	}
	// The neighbour's announce for the peer: refused by the store.
	st.err = bittorrent.ErrKeyMismatch
	if _, err := svc.Announce(context.Background(), req("other")); err != bittorrent.ErrKeyMismatch {
		t.Fatalf("got %v, want the store's %v", err, bittorrent.ErrKeyMismatch)
	}
	if got := testutil.ToFloat64(svc.refused.WithLabelValues("key_mismatch")); got != 1 {
		t.Fatalf("refused{key_mismatch} = %v, want 1", got)
	}
	// The real peer's regular announce right after is not too soon ...
	st.err = nil
	if _, err := svc.Announce(context.Background(), req("mine")); err != nil {
		t.Fatalf("the peer's own announce after a refused one: %v", err)
	}
	// ... but its next one is: accepted announces are remembered.
	if _, err := svc.Announce(context.Background(), req("mine")); err == nil || !strings.Contains(err.Error(), "min interval") {
		t.Fatalf("second announce at once: %v, want the min interval", err)
	}
}

// TestSlotSizes keeps the memory the documentation states per slot true:
// 24 bytes a rate-limit bucket, 16 a peer-table slot.
func TestSlotSizes(t *testing.T) {
	if s := unsafe.Sizeof(bucket{}); s != bucketSize {
		t.Fatalf("a bucket is %d bytes, documented %d", s, bucketSize)
	}
	if s := unsafe.Sizeof(peerSlot{}); s != peerSlotSize {
		t.Fatalf("a peer slot is %d bytes, documented %d", s, peerSlotSize)
	}
}

// TestServiceScrapeRateLimit: a scrape takes one token of its address's
// bucket per ScrapeHashesPerToken hashes (at least one), from the bucket
// announces take from; beyond it, the failure reason, counted; another
// address is served.
func TestServiceScrapeRateLimit(t *testing.T) {
	hashes := func(n int) []bittorrent.InfoHash { return make([]bittorrent.InfoHash, n) }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		name   string
		burst  int
		hashes int
		served int // scrapes served from a before the first refusal
	}{
		{name: "one hash costs a token", burst: 3, hashes: 1, served: 3},
		{name: "a partial token rounds up", burst: 3, hashes: ScrapeHashesPerToken + 1, served: 1},
		{name: "a full scrape", burst: 64, hashes: 64, served: 64 / (64 / ScrapeHashesPerToken)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testCfg
			cfg.RateLimit, cfg.RateBurst, cfg.RateSlots = 1e-6, tc.burst, 1024
			svc := serviceWith(t, cfg)
			served := 0
			for {
				_, err := svc.Scrape(context.Background(), a, hashes(tc.hashes))
				if err != nil {
					if ce, ok := bittorrent.IsClientError(err); !ok || string(ce) != ScrapeRateLimited {
						t.Fatalf("scrape %d: %v, want %q", served+1, err, ScrapeRateLimited)
					}
					break
				}
				served++
			}
			if served != tc.served {
				t.Fatalf("%d scrapes of %d hashes served, want %d", served, tc.hashes, tc.served)
			}
			if _, err := svc.Scrape(context.Background(), b, hashes(tc.hashes)); err != nil {
				t.Fatalf("another address: %v", err)
			}
			// The bucket is the announces' too.
			if _, err := svc.Announce(context.Background(), &bittorrent.AnnounceRequest{Source: a, NumWant: -1}); err == nil && tc.hashes == 1 {
				t.Fatal("an announce served from an address whose scrapes took its bucket")
			}
			if got := testutil.ToFloat64(svc.scrapesRefused.WithLabelValues("rate_limit")); got != 1 {
				t.Fatalf("scrapes refused{rate_limit} = %v, want 1", got)
			}
		})
	}
}

// TestAllowSharesTheRate: another protocol's messages (WebSocket) draw
// from the same per-address buckets as announces, and loopback is spared.
func TestAllowSharesTheRate(t *testing.T) {
	cfg := testCfg
	cfg.RateLimit, cfg.RateBurst, cfg.RateSlots = 1, 3, 1024
	svc := serviceWith(t, cfg)
	src := netip.MustParseAddr("192.0.2.9")
	if _, err := svc.Announce(context.Background(), &bittorrent.AnnounceRequest{Source: src, NumWant: -1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := svc.Allow(src); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if ce, ok := bittorrent.IsClientError(svc.Allow(src)); !ok || string(ce) != RateLimited {
		t.Fatalf("4th message: %v, want %q", ce, RateLimited)
	}
	for i := 0; i < 10; i++ {
		if err := svc.Allow(netip.MustParseAddr("127.0.0.1")); err != nil {
			t.Fatalf("loopback: %v", err)
		}
	}
}
