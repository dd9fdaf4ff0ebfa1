package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestPublicPageInBrowser opens the public page (/) of a linked node and
// of its hub in headless Chromium: the node's page gives its HTTP and UDP
// announce URLs on the host the browser used and counts a peer announced
// at the other node; the hub's counts both nodes live. The pages carry no
// script. Screenshots go to $TRACKLINK_SCREENSHOTS (the README's are made
// this way) or the test's temporary directory.
func TestPublicPageInBrowser(t *testing.T) {
	browserPath, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("the public page's browser test needs Chromium: apt-get install chromium (.ci/run installs it)")
	}
	shots := os.Getenv("TRACKLINK_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	c := newCluster(t)
	for _, n := range []string{"node1", "node2"} {
		c.nodes[n] = startProc(t, runNode, c.env("TRACKER_NODE_ID="+n, "TRACKER_LINK_PASSWORD="+testPassword))
	}
	c.waitLinked("node1", "node2")
	for i := range 3 {
		announceTo(t, c.nodes["node2"].url, "public-page-torrent1", 7001+i, 10*i, "started")
	}
	n1 := c.nodes["node1"].url
	eventually(t, 5*time.Second, "peers on node1", func() bool { return scrapeOrZero(n1, "public-page-torrent1").leechers == 2 })

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

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browserPath), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1000, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc() // stops the browser process
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, time.Minute)
	defer cancelT()
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		return s
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name), png, 0o644)
		})
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
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
	do("node1 screenshot", shot("node.png"))

	do("hub's page", chromedp.Navigate(c.hub.url+"/"), chromedp.WaitVisible(chromedp.CSS(`#figures`)))
	if figs := text(`#figures`); !strings.Contains(figs, "Nodes live\t2") || !strings.Contains(figs, "Tracker link\tup") {
		t.Errorf("hub's figures:\n%s", figs)
	}
	do("hub screenshot", shot("hub.png"))
	t.Logf("screenshots in %s", shots)
}
