package panel

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/hub"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

const token = "panel-test-token-0123"

// fakeLink is a node's link end that records resets (the real one, with a
// hub, is in cmd/tracker's browser test).
type fakeLink struct{ resets atomic.Int32 }

func (f *fakeLink) Status() link.NodeStatus {
	return link.NodeStatus{Node: "n1", State: link.StateUp, LastHubHeartbeat: time.Now()}
}
func (f *fakeLink) Reset() { f.resets.Add(1) }

type nodeFixture struct {
	srv   *httptest.Server
	link  *fakeLink
	set   *allowed.Set
	store *redisstore.Store
	reg   *prometheus.Registry
}

// newNodePanel serves a node's panel on a real Redis, with an allowed
// directory and a link that records resets.
func newNodePanel(t *testing.T) *nodeFixture {
	t.Helper()
	rdb := testkit.StartRedis(t).Client(t)
	store, err := redisstore.New(rdb, redisstore.Config{Prefix: "tl", NodeID: "n1", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	set, err := allowed.New(redisstore.NewAllowedKeys(rdb, "tl", "n1"), t.TempDir(), time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	f := &nodeFixture{link: &fakeLink{}, set: set, store: store, reg: reg}
	p, err := NewNode(Node{ID: "n1", Version: "test", Token: token, Admin: Config{SessionTTL: time.Hour, ChartStep: time.Second}, Store: store, Link: f.link, Torrents: set,
		Gatherer: reg, Registerer: reg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(p)
	t.Cleanup(f.srv.Close)
	return f
}

// browser is a client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func form(t *testing.T, method, u string, v url.Values) *http.Request {
	req, err := http.NewRequest(method, u, strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func get(t *testing.T, u string) *http.Request {
	req, _ := http.NewRequest("GET", u, nil)
	return req
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs c in and returns the page's CSRF token.
func signIn(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	resp, _ := do(t, c, form(t, "POST", base+"/signin", url.Values{"token": {token}}))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("sign in: %s", resp.Status)
	}
	resp, body := do(t, c, get(t, base+"/"))
	m := csrfRE.FindStringSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("page after sign in: %s, csrf %v", resp.Status, m)
	}
	return m[1]
}

func TestSignInAndSessions(t *testing.T) {
	f := newNodePanel(t)
	base := f.srv.URL
	c := browser(t)

	// Without a session a page sends the browser to sign in, the API
	// says 401.
	if resp, _ := do(t, c, get(t, base+"/")); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/signin" {
		t.Fatalf("page without session: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	if resp, _ := do(t, c, get(t, base+"/admin/torrents")); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API without token: %s", resp.Status)
	}
	if resp, body := do(t, c, get(t, base+"/signin")); resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) {
		t.Fatalf("sign-in page: %s", resp.Status)
	}

	// A wrong token: 401 and counted.
	if resp, body := do(t, c, form(t, "POST", base+"/signin", url.Values{"token": {"wrong-token-0123456789"}})); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong token") {
		t.Fatalf("wrong token: %s", resp.Status)
	}
	if n := outcomes(t, f.reg, "wrong_token"); n != 1 {
		t.Fatalf("wrong_token counted %v", n)
	}

	// The right one: a session cookie, HttpOnly, SameSite=Strict, with an
	// expiry.
	resp, _ := do(t, c, form(t, "POST", base+"/signin", url.Values{"token": {token}}))
	set := resp.Header.Get("Set-Cookie")
	for _, want := range []string{cookiePrefix + "_" + mustURL(base).Port() + "=", "HttpOnly", "SameSite=Strict", "Max-Age=3600", "Path=/"} {
		if !strings.Contains(set, want) {
			t.Fatalf("cookie %q lacks %q", set, want)
		}
	}
	resp, body := do(t, c, get(t, base+"/"))
	if resp.StatusCode != 200 || !strings.Contains(body, "Reset Tracker Link") {
		t.Fatalf("node page: %s", resp.Status)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options"} {
		if resp.Header.Get(h) == "" {
			t.Fatalf("page without %s", h)
		}
	}
	csrf := csrfRE.FindStringSubmatch(body)[1]

	// Sign out ends the session on the server, not only in the browser.
	old := c.Jar.Cookies(mustURL(base))
	if resp, _ := do(t, c, form(t, "POST", base+"/signout", url.Values{"csrf": {csrf}})); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %s", resp.Status)
	}
	replay := browser(t)
	replay.Jar.SetCookies(mustURL(base), old)
	if resp, _ := do(t, replay, get(t, base+"/")); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a signed-out session still works: %s", resp.Status)
	}
}

func TestSessionExpires(t *testing.T) {
	a, err := newAuth(token, time.Minute, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.now = func() time.Time { return now }
	w := httptest.NewRecorder()
	a.signIn(w, httptest.NewRequest("POST", "/signin", nil))
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(w.Result().Cookies()[0])
	if a.sessionOf(req) == nil {
		t.Fatal("a fresh session is not live")
	}
	now = now.Add(time.Minute)
	if a.sessionOf(req) != nil {
		t.Fatal("a session lives past its TTL")
	}
	// The sessions are bounded: the oldest goes.
	for range maxSessions + 10 {
		a.signIn(httptest.NewRecorder(), httptest.NewRequest("POST", "/signin", nil))
	}
	if len(a.sessions) != maxSessions {
		t.Fatalf("%d sessions kept, want %d", len(a.sessions), maxSessions)
	}
}

func TestWrongTokensAreRateLimited(t *testing.T) {
	f := newNodePanel(t)
	base := f.srv.URL
	c := browser(t)
	for i := range authBurst {
		if resp, _ := do(t, c, form(t, "POST", base+"/signin", url.Values{"token": {fmt.Sprintf("wrong-%d-0123456789", i)}})); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %s", i, resp.Status)
		}
	}
	// Out of tries: wrong tokens are refused 429, at sign-in and as a
	// Bearer token, and counted.
	bearer := func(tok string) *http.Request {
		req := get(t, base+"/admin/torrents")
		req.Header.Set("Authorization", "Bearer "+tok)
		return req
	}
	if resp, _ := do(t, c, form(t, "POST", base+"/signin", url.Values{"token": {"wrong-again-0123456789"}})); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("sign in out of tries: %s", resp.Status)
	}
	if resp, _ := do(t, c, bearer("wrong-again-0123456789")); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("bearer out of tries: %s", resp.Status)
	}
	if n := outcomes(t, f.reg, "limited"); n != 2 {
		t.Fatalf("limited counted %v, want 2", n)
	}
	// But the right token is still let in from that address: wrong
	// tokens from it (any local process, on loopback) cannot lock the
	// operator out.
	if resp, _ := do(t, c, bearer(token)); resp.StatusCode != http.StatusOK {
		t.Fatalf("right bearer token after a flood of wrong ones: %s", resp.Status)
	}
	signIn(t, c, base)
	if n := outcomes(t, f.reg, "wrong_token"); n != authBurst {
		t.Fatalf("wrong_token counted %v, want %d", n, authBurst)
	}
}

func TestBucketRefillsAndIsBounded(t *testing.T) {
	a, _ := newAuth(token, time.Hour, nil, prometheus.NewRegistry())
	now := time.Now()
	a.now = func() time.Time { return now }
	ip := clientAddr(&http.Request{RemoteAddr: "192.0.2.1:1234"})
	for i := range authBurst {
		if v := a.try(ip, "wrong"); v != tokenWrong {
			t.Fatalf("wrong token %d: verdict %d", i, v)
		}
	}
	if a.try(ip, "wrong") != tokenLimited {
		t.Fatal("not limited after a burst of wrong tokens")
	}
	if a.try(ip, token) != tokenRight {
		t.Fatal("the right token refused after a burst of wrong ones")
	}
	now = now.Add(authRefill)
	if a.try(ip, "wrong") != tokenWrong {
		t.Fatal("still limited after a refill")
	}
	// Many addresses: never more than maxBuckets buckets.
	for i := range maxBuckets + 100 {
		a.try(clientAddr(&http.Request{RemoteAddr: fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)}), "wrong")
	}
	if len(a.buckets) > maxBuckets {
		t.Fatalf("%d buckets", len(a.buckets))
	}
}

// TestHostChecked: the admin listener answers to IP addresses (any port:
// compose publishes the container's port on another), localhost and the
// configured names; any other Host, such as a name rebound to 127.0.0.1 by
// someone else's DNS, is refused 421 before anything else and counted.
func TestHostChecked(t *testing.T) {
	reg := prometheus.NewRegistry()
	p, err := NewHub(Hub{Name: "hub1", Version: "test", Token: token, Hub: &fakeHub{}, Gatherer: reg, Registerer: reg, Log: slog.New(slog.DiscardHandler),
		Admin: Config{SessionTTL: time.Hour, ChartStep: time.Second, Hosts: []string{"panel.example.org"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	refused := 0
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:6990", true}, // compose: the host's published port
		{"127.0.0.1", true},
		{"127.1.2.3:6981", true},
		{"[::1]:6981", true},
		{"[::1]", true},
		{"localhost:6980", true},
		{"LocalHost", true},
		{"192.0.2.7:6980", true}, // a non-loopback listener reached by its address
		{"panel.example.org:6981", true},
		{"Panel.Example.Org", true},
		{"evil.example:6981", false}, // DNS rebinding: a name that resolves to us
		{"localhost.evil.example", false},
		{"panel.example.org.evil.example", false},
		{"127.0.0.1.nip.io:6981", false},
		{"localhost.:6981", false},
		{":6981", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			for _, path := range []string{"/signin", "/admin/torrents"} {
				req := get(t, srv.URL+path)
				req.Host = tc.host
				if path == "/admin/torrents" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, _ := do(t, http.DefaultClient, req)
				if got := resp.StatusCode != http.StatusMisdirectedRequest; got != tc.ok {
					t.Fatalf("%s with Host %q: %s, want answered %v", path, tc.host, resp.Status, tc.ok)
				}
				if !tc.ok {
					refused++
				}
			}
		})
	}
	if p.auth.hostOK("") {
		t.Error("an empty Host answered")
	}
	if n := outcomes(t, reg, "bad_host"); n != float64(refused) {
		t.Fatalf("bad_host counted %v, want %d", n, refused)
	}
}

func TestCrossSiteRequestsRefused(t *testing.T) {
	f := newNodePanel(t)
	base := f.srv.URL
	c := browser(t)
	csrf := signIn(t, c, base)

	// A session without the CSRF token: refused.
	if resp, _ := do(t, c, form(t, "POST", base+"/admin/link/reset", nil)); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("reset without csrf: %s", resp.Status)
	}
	if resp, _ := do(t, c, form(t, "POST", base+"/admin/link/reset", url.Values{"csrf": {"forged"}})); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("reset with a wrong csrf: %s", resp.Status)
	}
	// A browser's cross-site request, even with the token: refused.
	req := form(t, "POST", base+"/admin/link/reset", url.Values{"csrf": {csrf}})
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, _ := do(t, c, req); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site reset: %s", resp.Status)
	}
	req = form(t, "POST", base+"/admin/link/reset", url.Values{"csrf": {csrf}})
	req.Header.Set("Origin", "http://evil.example")
	if resp, _ := do(t, c, req); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("reset from another origin: %s", resp.Status)
	}
	if n := f.link.resets.Load(); n != 0 {
		t.Fatalf("%d resets from refused requests", n)
	}
	if n := outcomes(t, f.reg, "bad_csrf"); n != 2 {
		t.Fatalf("bad_csrf counted %v, want 2", n)
	}
	// Same-origin, with the token: done, and the page says so.
	req = form(t, "POST", base+"/admin/link/reset", url.Values{"csrf": {csrf}})
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, _ := do(t, c, req)
	if resp.StatusCode != http.StatusSeeOther || f.link.resets.Load() != 1 {
		t.Fatalf("reset: %s, %d resets", resp.Status, f.link.resets.Load())
	}
	if _, body := do(t, c, get(t, base+resp.Header.Get("Location"))); !strings.Contains(body, "Link reset") {
		t.Fatal("the page does not say the link was reset")
	}
}

func TestBearerAPI(t *testing.T) {
	f := newNodePanel(t)
	base := f.srv.URL
	c := http.DefaultClient
	req := form(t, "POST", base+"/admin/link/reset", nil)
	req.Header.Set("Authorization", "Bearer wrong-token-0123456789")
	if resp, _ := do(t, c, req); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong bearer: %s", resp.Status)
	}
	req = form(t, "POST", base+"/admin/link/reset", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, body := do(t, c, req); resp.StatusCode != 200 || body != "link reset requested\n" || f.link.resets.Load() != 1 {
		t.Fatalf("bearer reset: %s %q", resp.Status, body)
	}

	raw, ih := testTorrent(t, "api")
	req, _ = http.NewRequest("POST", base+"/admin/torrents", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, body := do(t, c, req); resp.StatusCode != http.StatusCreated || strings.TrimSpace(body) != ih {
		t.Fatalf("upload: %s %q", resp.Status, body)
	}
	req = get(t, base+"/admin/torrents")
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, body := do(t, c, req); resp.StatusCode != 200 || !strings.Contains(body, `"info_hash":"`+ih+`"`) || !strings.Contains(body, `"name":"api"`) {
		t.Fatalf("list: %s %s", resp.Status, body)
	}
	req, _ = http.NewRequest("POST", base+"/admin/torrents", strings.NewReader("d4:infod4:name1:xee"))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, body := do(t, c, req); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid torrent") {
		t.Fatalf("bad upload: %s %q", resp.Status, body)
	}
	req, _ = http.NewRequest("DELETE", base+"/admin/torrents/"+ih, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, _ := do(t, c, req); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %s", resp.Status)
	}
	req, _ = http.NewRequest("DELETE", base+"/admin/torrents/"+ih, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, _ := do(t, c, req); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("delete again: %s", resp.Status)
	}
}

func TestPageUploadListDelete(t *testing.T) {
	f := newNodePanel(t)
	base := f.srv.URL
	c := browser(t)
	csrf := signIn(t, c, base)

	raw, ih := testTorrent(t, "from-the-page")
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("csrf", csrf)
	fw, _ := mw.CreateFormFile("torrent", "from-the-page.torrent")
	fw.Write(raw)
	mw.Close()
	req, _ := http.NewRequest("POST", base+"/admin/torrents", &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, _ := do(t, c, req)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("upload form: %s", resp.Status)
	}
	// A peer in the torrent's swarm: listed with the torrent and counted.
	var h bittorrent.InfoHash
	h, _ = bittorrent.ParseInfoHash(ih)
	if _, err := f.store.Announce(context.Background(), &bittorrent.AnnounceRequest{InfoHash: h,
		Peer: bittorrent.Peer{ID: bittorrent.PeerID{1}, Addr: netip.MustParseAddrPort("192.0.2.7:6881")}, Left: 10, Event: bittorrent.Started}, 10); err != nil {
		t.Fatal(err)
	}
	_, body := do(t, c, get(t, base+resp.Header.Get("Location")))
	for _, want := range []string{"Torrent uploaded", "from-the-page", ih, `id="peers">1<`, `id="leechers">1<`, `id="swarms">1<`} {
		if !strings.Contains(body, want) {
			t.Fatalf("page after upload lacks %q", want)
		}
	}
	// A bad file: the page says why.
	b.Reset()
	mw = multipart.NewWriter(&b)
	mw.WriteField("csrf", csrf)
	fw, _ = mw.CreateFormFile("torrent", "bad.torrent")
	fw.Write([]byte("not a torrent"))
	mw.Close()
	req, _ = http.NewRequest("POST", base+"/admin/torrents", &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if resp, body := do(t, c, req); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid torrent") {
		t.Fatalf("bad upload form: %s", resp.Status)
	}
	// Delete from the page.
	resp, _ = do(t, c, form(t, "POST", base+"/admin/torrents/"+ih+"/delete", url.Values{"csrf": {csrf}}))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete form: %s", resp.Status)
	}
	if _, body := do(t, c, get(t, base+"/")); strings.Contains(body, "from-the-page") || !strings.Contains(body, "No torrents") {
		t.Fatal("deleted torrent still listed")
	}
}

func TestHubPage(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := &fakeHub{}
	p, err := NewHub(Hub{Name: "hub1", Version: "test", Token: token, Admin: Config{SessionTTL: time.Hour, ChartStep: time.Second}, Hub: src, Gatherer: reg, Registerer: reg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	c := browser(t)
	csrf := signIn(t, c, srv.URL)
	_, body := do(t, c, get(t, srv.URL+"/"))
	for _, want := range []string{"hub1", `data-node="alpha"`, "live", "silent", "0123456789abcdef", "hello, gap", "complete", "Relays 2 of 16 partitions (3, 7), with 2 live hubs"} {
		if !strings.Contains(body, want) {
			t.Fatalf("hub page lacks %q", want)
		}
	}
	if resp, _ := do(t, c, form(t, "POST", srv.URL+"/admin/link/reset", url.Values{"csrf": {csrf}})); resp.StatusCode != http.StatusSeeOther || src.resets.Load() != 1 {
		t.Fatalf("hub reset: %s", resp.Status)
	}
}

func TestNoTokenNoPanel(t *testing.T) {
	if _, err := NewHub(Hub{Name: "h", Admin: Config{SessionTTL: time.Hour, ChartStep: time.Second}, Hub: &fakeHub{}, Gatherer: prometheus.NewRegistry(), Registerer: prometheus.NewRegistry()}); err == nil {
		t.Fatal("a panel without a token")
	}
}

type fakeHub struct{ resets atomic.Int32 }

func (f *fakeHub) Reset() { f.resets.Add(1) }
func (f *fakeHub) Status() hub.Status {
	var st hub.Status
	st.Hub = "hub1"
	st.Partitions, st.PartitionCount, st.Hubs = []int{3, 7}, 16, 2
	now := time.Now()
	st.Members = map[string]hub.MemberStatus{"local": {Link: "up", Channel: "tl:link"}}
	st.Nodes = map[string]hub.NodeStatus{
		"alpha": {Member: "local", Live: true, LastHeartbeat: now, Messages: 10, Processes: map[string]hub.ProcessStatus{
			"0123456789abcdef": {ProcessCounts: hub.ProcessCounts{LastHeartbeat: now, Started: now.Add(-time.Hour), Messages: 10}, Live: true}}},
		"beta": {Member: "local", LastHeartbeat: now.Add(-time.Hour), Processes: map[string]hub.ProcessStatus{
			"fedcba9876543210": {ProcessCounts: hub.ProcessCounts{LastHeartbeat: now.Add(-time.Hour)}}}},
	}
	st.Recent = []hub.ResyncRecord{{Started: time.Now(), Reasons: []string{"hello", "gap"}, Took: time.Second, Applied: 12}}
	return st
}

func TestQuantiles(t *testing.T) {
	bounds := []float64{.001, .01, .1}
	// 100 events: 50 under 1 ms, 49 in (1 ms, 10 ms], 1 in (10, 100 ms].
	a := cumulative{bounds: bounds, counts: []uint64{10, 10, 10}, total: 10}
	b := cumulative{bounds: bounds, counts: []uint64{60, 109, 110}, total: 110}
	p := delta(a, b, 10)
	if p.Rate != 10 {
		t.Fatalf("rate %v", p.Rate)
	}
	if math.Abs(p.P50-0.001) > 1e-9 {
		t.Fatalf("p50 %v", p.P50)
	}
	if p.P99 <= 0.001 || p.P99 > 0.01+1e-9 {
		t.Fatalf("p99 %v", p.P99)
	}
	if p := delta(b, a, 10); !math.IsNaN(p.P50) || p.Rate != 0 {
		t.Fatalf("a counter going down gave %+v", p)
	}
	svg := string(chart("x", line{"rate", []float64{0, 1, math.NaN(), 2}}))
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "M") != 2 || strings.Contains(svg, "NaN") {
		t.Fatalf("chart %s", svg)
	}
}

// outcomes reads admin_auth_total{outcome=o} from reg.
func outcomes(t *testing.T, reg *prometheus.Registry, o string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return counters(fams, "admin_auth_total", "outcome")[o]
}

func testTorrent(t *testing.T, name string) ([]byte, string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	os.WriteFile(src, bytes.Repeat([]byte(name), 100), 0o644)
	b, err := torrentfile.Create(src, torrentfile.CreateOptions{Tiers: [][]string{{"http://x.example/announce"}}})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := torrentfile.Parse(b)
	h, _ := f.InfoHashV1()
	return b, fmt.Sprintf("%x", h)
}

func mustURL(s string) *url.URL { u, _ := url.Parse(s); return u }

// BenchmarkNodePage: one render of a node's page (signed in) whose swarm
// index holds 1,000 swarms of 10 peers, counting them every time (the
// count is cached for a chart step otherwise).
func BenchmarkNodePage(b *testing.B) {
	rdb := testkit.StartRedis(b).Client(b)
	store, err := redisstore.New(rdb, redisstore.Config{Prefix: "tl", NodeID: "n1", PeerLifetime: time.Hour, CompletedTTL: time.Hour, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range 1000 {
		ih := bittorrent.InfoHash{byte(i), byte(i >> 8), 7}
		for j := range 10 {
			store.Announce(ctx, &bittorrent.AnnounceRequest{InfoHash: ih, Peer: bittorrent.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), byte(j)}), 6881)},
				Left: uint64(j % 2), Event: bittorrent.Started}, 1)
		}
		rdb.ZAdd(ctx, redisstore.IndexKey("tl", "n1", ih), redis.Z{Score: float64(time.Now().UnixMilli()), Member: string(ih[:])})
	}
	reg := prometheus.NewRegistry()
	p, err := buildNode(Node{ID: "n1", Version: "bench", Token: token, Admin: Config{SessionTTL: time.Hour, ChartStep: time.Second}, Store: store,
		Link: &fakeLink{}, Gatherer: reg, Registerer: reg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	w := httptest.NewRecorder()
	p.auth.signIn(w, httptest.NewRequest("POST", "/signin", nil))
	cookie := w.Result().Cookies()[0]
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest("GET", "/", nil)
		req.AddCookie(cookie)
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `id="peers">10000<`) {
			b.Fatalf("page: %d", rec.Code)
		}
		b.StopTimer()
		p.recount()
		b.StartTimer()
	}
}

// BenchmarkHistorySample: one chart step of a node (reading its registry:
// Go and process collectors and the four request histograms).
func BenchmarkHistorySample(b *testing.B) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, name := range []string{"tracker_announce_duration_seconds", "tracker_scrape_duration_seconds"} {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: "x", Buckets: prometheus.ExponentialBuckets(.0005, 2, 12)}, []string{"outcome"})
		reg.MustRegister(h)
		for _, o := range []string{"ok", "client_error", "error"} {
			h.WithLabelValues(o).Observe(0.001)
		}
	}
	h := newHistory(reg, []Series{{Name: "a", Family: "tracker_announce_duration_seconds"}, {Name: "s", Family: "tracker_scrape_duration_seconds"}}, time.Second)
	now := time.Now()
	for b.Loop() {
		now = now.Add(time.Second)
		h.sample(now)
	}
}
