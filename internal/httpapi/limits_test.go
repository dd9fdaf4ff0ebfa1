package httpapi

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

// getFrom is get for a client at addr behind the trusted proxy the test
// server trusts (127.0.0.1, the connection's address).
func getFrom(t *testing.T, addr, u string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("X-Forwarded-For", addr)
	return getReq(t, req)
}

// TestScrapeRateLimitPerAddress: scrapes take tokens of the address's
// bucket (one per tracker.ScrapeHashesPerToken hashes); a flood of
// scrapes from one address is refused beyond its burst, counted, while
// another address is served.
func TestScrapeRateLimitPerAddress(t *testing.T) { onEachStore(t, testScrapeRateLimitPerAddress) }

func testScrapeRateLimitPerAddress(t *testing.T, store storeFunc) {
	cfg := defaultTestConfig()
	cfg.http.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	cfg.svc.RateLimit, cfg.svc.RateBurst, cfg.svc.RateSlots = 1e-6, 5, 1024
	ts, reg := newTestServer(t, store, cfg, false)
	var q []string
	for i := range cfg.http.ScrapeMaxHashes { // 4 hashes: one token
		q = append(q, "info_hash="+url.QueryEscape(fmt.Sprintf("scrape-limit-%07d", i)))
	}
	u := ts.URL + "/scrape?" + strings.Join(q, "&")
	for i := range 5 {
		if r := getFrom(t, "198.51.100.1", u); r["failure reason"] != nil {
			t.Fatalf("scrape %d within the burst: %v", i, r["failure reason"])
		}
	}
	for i := range 10 {
		if r := getFrom(t, "198.51.100.1", u); r["failure reason"] != tracker.ScrapeRateLimited {
			t.Fatalf("scrape %d over the burst: %v", i, r)
		}
	}
	if r := getFrom(t, "198.51.100.2", u); r["failure reason"] != nil {
		t.Fatalf("another address: %v", r["failure reason"])
	}
	if got := counterValue(t, reg, "tracker_scrapes_refused_total", "rate_limit"); got != 10 {
		t.Fatalf("scrapes refused{rate_limit} = %v, want 10", got)
	}
}

// TestNewSwarmSharesByPrefix: the node's budget of new swarms is shared
// out by prefix. However many /64s of one /48 (or addresses of one IPv4
// /24) announce new torrents, together they start only their prefix's
// share, refused beyond it with the budget's failure reason and counted
// as swarm_cap_prefix; a client of another prefix still starts a new
// torrent, and the spent prefix still announces in live swarms.
func TestNewSwarmSharesByPrefix(t *testing.T) { onEachStore(t, testNewSwarmSharesByPrefix) }

func testNewSwarmSharesByPrefix(t *testing.T, store storeFunc) {
	cfg := defaultTestConfig()
	cfg.http.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	cfg.svc.NewSwarmsPrefixRate, cfg.svc.NewSwarmsPrefixBurst = 1e-6, 2 // a /64 or address 2, a /56 or /24 8, a /48 16
	cfg.newSwarmRate, cfg.newSwarmBurst = 1e-6, 30                      // the node's budget: more than one prefix's share
	ts, reg := newTestServer(t, store, cfg, false)
	seq := 0
	announceNew := func(from string) map[string]any {
		seq++
		return getFrom(t, from, announceURL(ts.URL, fmt.Sprintf("share-%014d", seq), fmt.Sprintf("-TT0001-%012d", seq), 6881, 1, "&event=started"))
	}
	tests := []struct {
		name  string
		addr  func(i int) string // the i-th client of the prefix
		share int
		other string // a client of another prefix
	}{
		{"/64s of one /48", func(i int) string { return fmt.Sprintf("2001:db8:1:%x::1", i<<8) }, 16, "2001:db8:2::1"},
		{"addresses of one /24", func(i int) string { return fmt.Sprintf("198.51.100.%d", i+1) }, 8, "203.0.113.1"},
	}
	refused := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			started := 0
			for i := range 100 {
				r := announceNew(tc.addr(i))
				if r["failure reason"] != nil {
					if r["failure reason"] != string(bittorrent.ErrNoNewSwarms) {
						t.Fatalf("client %d: %v", i, r["failure reason"])
					}
					refused++
					continue
				}
				started++
			}
			if started != tc.share {
				t.Fatalf("the prefix started %d new swarms, want its share (%d)", started, tc.share)
			}
			if r := announceNew(tc.other); r["failure reason"] != nil {
				t.Fatalf("a new torrent from another prefix: %v", r["failure reason"])
			}
			// A live swarm takes any prefix's peers.
			live := getFrom(t, tc.addr(0), announceURL(ts.URL, fmt.Sprintf("share-%014d", seq), "-TT0001-999999999999", 6882, 1, "&event=started"))
			if live["failure reason"] != nil {
				t.Fatalf("the spent prefix in a live swarm: %v", live["failure reason"])
			}
		})
	}
	if got := counterValue(t, reg, "tracker_announces_refused_total", "swarm_cap_prefix"); got != float64(refused) {
		t.Fatalf("refused{swarm_cap_prefix} = %v, want %d", got, refused)
	}
}
