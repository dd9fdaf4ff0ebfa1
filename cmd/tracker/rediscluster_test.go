package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/redistest"
)

// TestLinkOnRedisCluster: a hub and three nodes on a Redis Cluster of
// three masters and three replicas. Peers start at every node and most of
// them stop back to back, on torrents spread over every shard: every node
// converges to exactly the live peers, no stopped peer comes back (not
// after a wait, not after a resync), and the hub refuses nothing as a
// replay (the link's messages arrive in order on their shard).
func TestLinkOnRedisCluster(t *testing.T) {
	rc := redistest.StartClusterN(t, 3, 1, time.Second)
	names := []string{"node1", "node2", "node3"}
	c := newClusterOn(t, rc, names...)
	c.waitLinked(names...)

	const torrents, perNode, stops = 24, 100, 67
	hashes := make([]string, torrents)
	for i := range hashes {
		hashes[i] = fmt.Sprintf("cluster-torrent-%04d", i)
	}
	live := make([]int64, torrents)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := c.nodes[n].url
			for k := range perNode + stops {
				// Stops back to back, right after the starts they undo.
				ev := "started"
				if k >= perNode {
					k, ev = k-perNode, "stopped"
				}
				if err := tryAnnounce(base, hashes[k%torrents], 10000+1000*i+k, 100, ev); err != nil {
					t.Error(err)
					return
				}
			}
			mu.Lock()
			for k := stops; k < perNode; k++ {
				live[k%torrents]++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	exact := func(what string) {
		t.Helper()
		took := eventually(t, 10*time.Second, what, func() bool {
			for _, n := range names {
				for j, ih := range hashes {
					if scrapeOrZero(c.nodes[n].url, ih).leechers != live[j] {
						return false
					}
				}
			}
			return true
		})
		t.Logf("%s: every node exact after %s", what, took)
	}
	var sum int64
	for _, n := range live {
		sum += n
	}
	if sum != int64(len(names)*(perNode-stops)) {
		t.Fatalf("test arithmetic: %d live peers", sum)
	}
	exact("converged")
	time.Sleep(time.Second) // anything late has arrived
	exact("no stopped peer back after a wait")

	resyncs := hubCounter(t, c.hub.url, "hub_resyncs_total")
	req, _ := http.NewRequest("POST", c.hub.url+"/admin/link/reset", nil)
	req.Header.Set("Authorization", "Bearer test-admin-token-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("hub reset: %v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, 10*time.Second, "a resync ran", func() bool { return hubCounter(t, c.hub.url, "hub_resyncs_total") > resyncs })
	exact("no stopped peer back after a resync")

	replays := hubCounter(t, c.hub.url, `hub_rejected_total{reason="replay"}`)
	t.Logf("hub: %v replays refused, %v late messages applied, %v gap resyncs, %v relayed",
		replays, hubCounter(t, c.hub.url, "hub_late_messages_total"),
		hubCounter(t, c.hub.url, `hub_resync_requests_total{reason="gap"}`), hubCounter(t, c.hub.url, "hub_relayed_updates_total"))
	if replays != 0 {
		t.Fatalf("the hub refused %v messages as replays", replays)
	}
}

// tryAnnounce is announceTo for other goroutines than the test's: it
// returns what went wrong.
func tryAnnounce(base, ih string, port, left int, event string) error {
	u := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&event=%s",
		base, url.QueryEscape(ih), url.QueryEscape(fmt.Sprintf("-TT0001-%012d", port)), port, left, event)
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := bencode.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("%s: %q: %w", u, body, err)
	}
	if fr, ok := m["failure reason"]; ok {
		return fmt.Errorf("%s: failure %v", u, fr)
	}
	return nil
}
