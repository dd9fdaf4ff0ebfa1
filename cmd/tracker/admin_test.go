package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/testkit"
)

var heldRE = regexp.MustCompile(`id="peers">(\d+)<`)

// panelPeers signs in to a node's admin panel and returns the peers its
// page says the node holds.
func panelPeers(t *testing.T, admin string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	resp, err := c.PostForm(admin+"/signin", url.Values{"token": {"test-admin-token-123"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := heldRE.FindSubmatch(b)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("node page at %s: %s", admin, resp.Status)
	}
	return string(m[1])
}

// TestPanelCountsHeldPeers: a node's page counts the peers it holds in an
// open tracker (no allowed torrents), its own clients' and those the hub
// relayed into swarms no client of it announced in; and a node without
// the link counts its own.
func TestPanelCountsHeldPeers(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.waitLinked("node1", "node2")
	// node3: on the same Redis, without the link.
	node3 := startProc(t, runNode, c.env("TRACKER_NODE_ID=node3", "TRACKER_ADMIN_CHART_STEP=100ms"))
	ih := "panel-counts-torrent"
	announceTo(t, c.nodes["node1"].url, ih, 7101, 10, "started")
	announceTo(t, c.nodes["node1"].url, ih, 7102, 0, "started")
	announceTo(t, node3.url, ih, 7103, 10, "started")
	testkit.Eventually(t, 5*time.Second, "node2 holds node1's peers", func() bool { return scrapeOf(t, c.nodes["node2"].url, ih).leechers == 1 })
	for _, n := range []struct {
		admin, want string
	}{{c.nodes["node1"].admin, "2"}, {c.nodes["node2"].admin, "2"}, {node3.admin, "1"}} {
		// A page counts at most once per chart step (5 s here, 100 ms
		// at node3).
		testkit.Eventually(t, 15*time.Second, n.admin+" counts "+n.want, func() bool { return panelPeers(t, n.admin) == n.want })
	}
}
