package clients

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tracklink/tracklink/internal/testkit"
)

// TestWebTorrentInChromium: two pages of headless Chromium run webtorrent's
// browser bundle (the npm package's dist/webtorrent.min.js); one seeds
// generated data through one process of a node, the other downloads it
// through the other process, over the browser's own WebSocket and WebRTC;
// the SHA-256 matches. Runs with TRACKLINK_WEBTORRENT_TEST=1 and fails if
// Chromium is missing then.
func TestWebTorrentInChromium(t *testing.T) {
	npmHarness(t)
	browser := testkit.WebTorrent.Tool(t, "chromium", "apt-get install chromium")
	urls := startWSProcesses(t, 2)
	mux := http.NewServeMux()
	mux.HandleFunc("/browser.html", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(webtorrentDir, "browser.html"))
	})
	mux.HandleFunc("/webtorrent.min.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		http.ServeFile(w, r, filepath.Join(webtorrentDir, "node_modules", "webtorrent", "dist", "webtorrent.min.js"))
	})
	pages := httptest.NewServer(mux)
	defer pages.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		// Host candidates as addresses, not mDNS names nobody answers
		// for here, and loopback allowed: the pages talk on this host.
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("allow-loopback-in-peer-connection", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc() // stops the browser process
	seedCtx, cancel := chromedp.NewContext(actx)
	defer cancel()
	seedCtx, cancelT := context.WithTimeout(seedCtx, 2*time.Minute)
	defer cancelT()

	page := func(q url.Values) string { return pages.URL + "/browser.html?" + q.Encode() }
	result := func(ctx context.Context, what string, ok func(map[string]any) bool) map[string]any {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			r, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any]("window.result || null"))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if r["error"] != nil {
				t.Fatalf("%s: %v", what, r["error"])
			}
			if ok(r) {
				return r
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("%s: no result within 90s", what)
		return nil
	}
	if err := chromedp.Do(seedCtx, chromedp.Navigate(page(url.Values{"role": {"seed"}, "tracker": {urls[0]}}))); err != nil {
		t.Fatal(err)
	}
	seed := result(seedCtx, "seeding", func(r map[string]any) bool { return r["infoHash"] != nil })

	leechCtx, cancelLeech := chromedp.NewContext(seedCtx) // another tab
	defer cancelLeech()
	if err := chromedp.Do(leechCtx, chromedp.Navigate(page(url.Values{"role": {"leech"}, "tracker": {urls[1]}, "ih": {seed["infoHash"].(string)}}))); err != nil {
		t.Fatal(err)
	}
	got := result(leechCtx, "downloading", func(r map[string]any) bool { return r["done"] == true })
	if got["sha256"] != seed["sha256"] {
		t.Fatalf("downloaded SHA-256 %v, seeded %v", got["sha256"], seed["sha256"])
	}
	t.Logf("downloaded %v bytes in Chromium, SHA-256 %v", got["bytes"], got["sha256"])
}
