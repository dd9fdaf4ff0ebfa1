package httpapi

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/tracklink/tracklink/internal/redistest"
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
func TestScrapeRateLimitPerAddress(t *testing.T) {
	cfg := defaultTestConfig()
	cfg.http.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	cfg.svc.RateLimit, cfg.svc.RateBurst, cfg.svc.RateSlots = 1e-6, 5, 1024
	ts, reg := newTestServer(t, redistest.Shared(t).Client(t), cfg, false)
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
