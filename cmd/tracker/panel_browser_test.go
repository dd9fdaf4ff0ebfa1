package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tracklink/tracklink/internal/testkit"
)

// traffic announces peers leechers of ih at base, and scrapes it, for
// about d (at most 20 requests in flight).
func traffic(t *testing.T, base, ih string, peers int, d time.Duration) {
	t.Helper()
	stop := time.Now().Add(d)
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for i := 0; time.Now().Before(stop); i++ {
		u := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-TT0001-%012d&port=%d&left=1", base, escape(ih), i%peers, 20000+i%peers)
		if i%7 == 0 { // 7 does not divide peers: every peer announces too
			u = base + "/scrape?info_hash=" + escape(ih)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if resp, err := http.Get(u); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
}

// TestPanelInBrowser drives the admin panels in headless Chromium (Debian's
// chromium, installed by .ci/run): a hub and two nodes on a real Redis,
// each with its admin listener. It signs in, sees both nodes live on the
// hub's page, resets node1's link from its page and sees the link dropped
// and made anew (the page says when and why) and up again, uploads a .torrent on node1's page and
// sees it listed, and sees a peer announced at node1 counted on node2's
// page. Screenshots go to $TRACKLINK_SCREENSHOTS (the README's are made
// this way) or the test's temporary directory.
func TestPanelInBrowser(t *testing.T) {
	testkit.Browser.Require(t)
	shots := screenshotDir(t)

	// Charts sampled every 250 ms, so that a few seconds of traffic draw
	// them.
	c := newCluster(t)
	c.env0 = append(c.env0, "TRACKER_ADMIN_CHART_STEP=250ms")
	c.hub.stop(t)
	c.startHub()
	dirs := map[string]string{}
	for _, n := range []string{"node1", "node2"} {
		dirs[n] = t.TempDir()
		c.nodes[n] = startProc(t, runNode, c.env("TRACKER_NODE_ID="+n, "TRACKER_LINK_PASSWORD="+testPassword,
			"TRACKER_ALLOWED_DIR="+dirs[n], "TRACKER_ALLOWED_RESCAN=200ms"))
	}
	c.waitLinked("node1", "node2")
	// node2 carries the torrent from its directory; node1 gets it by an
	// upload through its page.
	raw, ih := makeTorrent(t, "ubuntu-like.iso", dirs["node2"])
	upload := filepath.Join(t.TempDir(), "ubuntu-like.iso.torrent")
	os.WriteFile(upload, raw, 0o644)
	ihHex := fmt.Sprintf("%x", ih)

	ctx := newBrowser(t, 1280, 1000, 2*time.Minute)
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browse(t, ctx, what, steps...)
	}
	text := func(sel string) (string, error) {
		return chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel), chromedp.AtLeast(0)))
	}
	signIn := func(base string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#token`)),
			chromedp.SendKeys(chromedp.CSS(`#token`), "test-admin-token-123"),
			chromedp.Submit(chromedp.CSS(`#token`)),
			chromedp.WaitVisible(chromedp.CSS(`#live`)),
		)
	}
	shot := func(name string) chromedp.Action[chromedp.Void] { return screenshot(shots, name) }
	// waitText polls the page (the panel reloads itself every 5 s) until
	// sel's text is want.
	waitText := func(what, sel, want string) {
		t.Helper()
		deadline := time.Now().Add(40 * time.Second)
		var got string
		for time.Now().Before(deadline) {
			var err error
			if got, err = text(sel); err == nil && strings.TrimSpace(got) == want {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("%s: %s shows %q, want %q", what, sel, got, want)
	}

	// The hub's page: both nodes live.
	run("hub sign in", signIn(c.hub.admin))
	for _, n := range []string{"node1", "node2"} {
		waitText("hub page", `tr[data-node="`+n+`"] .state`, "live")
	}
	run("hub screenshot", shot("hub.png"))

	// node1's page: reset the link; a new session, and up again.
	n1 := c.nodes["node1"].admin
	run("node1 sign in", signIn(n1))
	waitText("node1 link before the reset", `#link-state`, "up")
	run("reset the link", chromedp.Click(chromedp.CSS(`#reset-link`)), chromedp.WaitVisible(chromedp.CSS(`.flash`)))
	waitText("node1 resets", `#link-resets`, "1")
	// The subscription was dropped and made anew: the page says when and
	// why, and the link is up again.
	waitText("node1 link remade", `#link-remade`, "reset by operator")
	waitText("node1 link after the reset", `#link-state`, "up")

	// Upload through the page: listed.
	run("upload", chromedp.SetUploadFiles(chromedp.CSS(`#torrent-file`), []string{upload}),
		chromedp.Click(chromedp.CSS(`#upload`)), chromedp.WaitVisible(chromedp.CSS(`tr[data-infohash="`+ihHex+`"]`)))
	if flash, _ := text(`.flash`); !strings.Contains(flash, "Torrent uploaded") {
		t.Fatalf("after the upload the page says %q", flash)
	}

	// A peer announced at node1 is counted on node2's page.
	testkit.Eventually(t, 5*time.Second, "node1 carries the upload", func() bool {
		return announceRaw(t, c.nodes["node1"].url, ih, 7001)["failure reason"] == nil
	})
	run("node2 sign in", signIn(c.nodes["node2"].admin))
	waitText("node2 counts node1's peer", `tr[data-infohash="`+ihHex+`"] td:nth-child(5)`, "1")
	waitText("node2's total", `#peers`, "1")

	// Some traffic at node1 for the charts: announces of 200 peers and
	// scrapes, for about 4 s.
	traffic(t, c.nodes["node1"].url, ih, 200, 4*time.Second)
	waitText("node2 counts node1's peers", `#peers`, "201")
	run("node2 screenshot", shot("node2.png"))
	run("node1 page", chromedp.Navigate(n1+"/"), chromedp.WaitVisible(chromedp.CSS(`#live`)))
	if d, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`figure.rate path.rate`), "d")); err != nil || !strings.Contains(d.Value, "L") {
		t.Fatalf("node1's announce chart draws no line: %q %v", d.Value, err)
	}
	run("node1 screenshots", shot("node1.png"), chromedp.EmulateViewport(390, 844), shot("node1-phone.png"), chromedp.EmulateViewport(1280, 1000))
	run("hub screenshot after", chromedp.Navigate(c.hub.admin+"/"), chromedp.WaitVisible(chromedp.CSS(`#resyncs`)), shot("hub.png"))
	t.Logf("screenshots in %s", shots)
}
