package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tracklink/tracklink/internal/testkit"
)

// TestPublicPageInBrowser opens the public page (/) of a linked node and
// of its hub in headless Chromium: the node's page gives its HTTP and UDP
// announce URLs on the host the browser used and counts a peer announced
// at the other node; the hub's counts both nodes live. The pages carry no
// script. Screenshots go to $TRACKLINK_SCREENSHOTS (the README's are made
// this way) or the test's temporary directory.
func TestPublicPageInBrowser(t *testing.T) {
	testkit.Browser.Require(t)
	shots := screenshotDir(t)
	c := newCluster(t)
	for _, n := range []string{"node1", "node2"} {
		c.nodes[n] = startProc(t, runNode, c.env("TRACKER_NODE_ID="+n, "TRACKER_LINK_PASSWORD="+testPassword))
	}
	c.waitLinked("node1", "node2")
	for i := range 3 {
		announceTo(t, c.nodes["node2"].url, "public-page-torrent1", 7001+i, 10*i, "started")
	}
	n1 := c.nodes["node1"].url
	testkit.Eventually(t, 5*time.Second, "peers on node1", func() bool { return scrapeOrZero(n1, "public-page-torrent1").leechers == 2 })

	// Plain HTML: no script, readable as text.
	resp, err := http.Get(n1 + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Contains(string(body), "<script") || resp.Header.Get("Cache-Control") != "public, max-age=1" {
		t.Fatalf("GET /: %s, Cache-Control %q, script: %v", resp.Status, resp.Header.Get("Cache-Control"), strings.Contains(string(body), "<script"))
	}

	ctx := newBrowser(t, 1000, 900, time.Minute)
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		return s
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browse(t, ctx, what, steps...)
	}

	// The rates span the last seconds: wait for two samples.
	time.Sleep(1500 * time.Millisecond)
	host := strings.TrimPrefix(n1, "http://")
	port := host[strings.LastIndexByte(host, ':')+1:]
	do("node1's page", chromedp.Navigate(strings.Replace(n1, "127.0.0.1", "localhost", 1)+"/"), chromedp.WaitVisible(chromedp.CSS(`#figures`)))
	if got, want := text(`#announce-http`), "http://localhost:"+port+"/announce"; got != want {
		t.Errorf("HTTP announce URL %q, want %q", got, want)
	}
	if got := text(`#announce-udp`); !strings.HasPrefix(got, "udp://localhost:") || !strings.HasSuffix(got, "/announce") {
		t.Errorf("UDP announce URL %q", got)
	}
	figs := text(`#figures`)
	for _, want := range []string{"Peers\t3", "Leechers\t2", "Seeders\t1", "Tracker link\tup", "Announces per second"} {
		if !strings.Contains(figs, want) {
			t.Errorf("node1's figures lack %q:\n%s", want, figs)
		}
	}
	// Some announces at node1, so that its rate shows: then the screenshot.
	traffic(t, n1, "public-page-torrent2", 40, 2*time.Second)
	time.Sleep(1100 * time.Millisecond)
	do("node1 screenshot", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#figures`)), screenshot(shots, "node.png"))

	do("hub's page", chromedp.Navigate(c.hub.url+"/"), chromedp.WaitVisible(chromedp.CSS(`#figures`)))
	if figs := text(`#figures`); !strings.Contains(figs, "Nodes live\t2") || !strings.Contains(figs, "Tracker link\tup") {
		t.Errorf("hub's figures:\n%s", figs)
	}
	do("hub screenshot", screenshot(shots, "hub.png"))
	t.Logf("screenshots in %s", shots)
}
