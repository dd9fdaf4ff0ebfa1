package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestLinkOnRedisCluster: a hub and three nodes on a Redis Cluster of
// three masters and three replicas. Peers start at every node and most of
// them stop back to back, on torrents spread over every shard: every node
// converges to exactly the live peers, no stopped peer comes back (not
// after a wait, not after a resync), and the hub refuses nothing as a
// replay (the link's messages arrive in order on their shard).
func TestLinkOnRedisCluster(t *testing.T) {
	rc := testkit.StartRedisCluster(t, 3, 1, time.Second)
	names := []string{"node1", "node2", "node3"}
	c := newClusterOn(t, rc, names...)
	c.waitLinked(names...)

	busBefore := busMessages(t, rc)
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
		took := testkit.Eventually(t, 10*time.Second, what, func() bool {
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
	// The link's traffic on the cluster bus: sharded messages go to the
	// channel shard's replica only; nothing is broadcast.
	bus := busMessages(t, rc)
	t.Logf("cluster bus: %d publish messages (broadcast), %d publishshard messages, for %d announces",
		bus[0]-busBefore[0], bus[1]-busBefore[1], len(names)*(perNode+stops))
	if bus[0] != busBefore[0] {
		t.Fatalf("%d link messages broadcast over the cluster bus", bus[0]-busBefore[0])
	}
	time.Sleep(time.Second) // anything late has arrived
	exact("no stopped peer back after a wait")

	resyncs := hubCounter(t, c.hub.url, "hub_resyncs_total")
	c.resetHub()
	testkit.Eventually(t, 10*time.Second, "a resync ran", func() bool { return hubCounter(t, c.hub.url, "hub_resyncs_total") > resyncs })
	exact("no stopped peer back after a resync")

	// A paused master (SIGSTOP) that owns neither link channel does not
	// touch the link: publishes go to the channel's shard only. Announces
	// of swarms elsewhere, whose partitions' channels are elsewhere too,
	// propagate while it hangs (each partition is published on its own).
	ctx := context.Background()
	admin := rc.Client(t)
	slot, err := admin.ClusterKeySlot(ctx, "{"+c.channel+"}:up").Result()
	if err != nil {
		t.Fatal(err)
	}
	linkShard := min(int(slot)*3/16384, 2)
	paused := rc.Masters[(linkShard+1)%3]
	var elsewhere []string
	for i := 0; len(elsewhere) < 5 && i < 1000; i++ {
		ih := fmt.Sprintf("%c-paused-elsewhe-%03d", 'a'+i%26, i)
		s, err := admin.ClusterKeySlot(ctx, fmt.Sprintf("tl:{node1:%x}:m", ih)).Result()
		if err != nil {
			t.Fatal(err)
		}
		s2, _ := admin.ClusterKeySlot(ctx, fmt.Sprintf("tl:{node2:%x}:m", ih)).Result()
		var h bittorrent.InfoHash
		copy(h[:], ih)
		s3, _ := admin.ClusterKeySlot(ctx, link.Config{Channel: c.channel, Sharded: true}.PartitionChannel(link.Partition(h, link.DefaultPartitions))).Result()
		if rc.Masters[min(int(s)*3/16384, 2)] != paused && rc.Masters[min(int(s2)*3/16384, 2)] != paused && rc.Masters[min(int(s3)*3/16384, 2)] != paused {
			elsewhere = append(elsewhere, ih)
		}
	}
	if len(elsewhere) < 5 {
		t.Fatal("no torrents found away from the paused master")
	}
	publishErrs := nodeCounter(t, c.nodes["node1"].url, "tracker_link_publish_errors_total")
	if err := paused.Pause(); err != nil {
		t.Fatal(err)
	}
	pausedAt := time.Now()
	for k, ih := range elsewhere {
		if err := tryAnnounce(c.nodes["node1"].url, ih, 30000+k, 100, "started"); err != nil {
			t.Fatal(err)
		}
	}
	took := testkit.Eventually(t, 2*time.Second, "propagated while a master is paused", func() bool {
		for _, ih := range elsewhere {
			if scrapeOrZero(c.nodes["node2"].url, ih).leechers != 1 {
				return false
			}
		}
		return true
	})
	if err := paused.Resume(); err != nil {
		t.Fatal(err)
	}
	if n := nodeCounter(t, c.nodes["node1"].url, "tracker_link_publish_errors_total"); n != publishErrs {
		t.Fatalf("%v link publishes failed while a master without the link's channels was paused", n-publishErrs)
	}
	t.Logf("with a master paused: %d announces propagated %s after the last one (%s after the pause)", len(elsewhere), took, time.Since(pausedAt).Round(time.Millisecond))

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

// TestRedisClusterFailover: under announce load, the master that holds the
// link's channels (and a third of the swarms) is killed (SIGKILL). Redis
// promotes its replica; the nodes serve that master's swarms again, and
// the link is up again, within Redis's promotion time + 5 s. Afterwards
// every node converges exactly and no stopped peer comes back.
func TestRedisClusterFailover(t *testing.T) {
	rc := testkit.StartRedisCluster(t, 3, 1, time.Second)
	names := []string{"node1", "node2"}
	c := newClusterOn(t, rc, names...)
	c.waitLinked(names...)
	ctx := context.Background()
	admin := rc.Masters[1].Client(t)

	// The victim: the master of the link's channels.
	slot, err := admin.ClusterKeySlot(ctx, "{"+c.channel+"}:up").Result()
	if err != nil {
		t.Fatal(err)
	}
	victim := int(slot) * len(rc.Masters) / 16384
	if victim == len(rc.Masters) {
		victim--
	}
	const torrents = 30
	hashes := make([]string, torrents)
	onVictim := map[string]bool{}
	for i := range hashes {
		hashes[i] = fmt.Sprintf("failover-torrent-%03d", i)
		s, err := admin.ClusterKeySlot(ctx, fmt.Sprintf("tl:{node1:%x}:m", hashes[i])).Result()
		if err != nil {
			t.Fatal(err)
		}
		owner := min(int(s)*len(rc.Masters)/16384, len(rc.Masters)-1)
		onVictim[hashes[i]] = owner == victim
	}

	// Load: four clients announcing at node1 until told to stop (at most
	// a minute), each result kept with its time.
	type result struct {
		at  time.Time
		ok  bool
		err error
	}
	var mu sync.Mutex
	results := map[string][]result{} // torrent -> results
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(time.Minute)
			for k := 0; time.Now().Before(deadline); k++ {
				select {
				case <-stop:
					return
				default:
				}
				ih := hashes[(w+4*k)%torrents]
				err := tryAnnounce(c.nodes["node1"].url, ih, 20000+w*1000+k%500, 100, "started")
				mu.Lock()
				results[ih] = append(results[ih], result{time.Now(), err == nil, err})
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	killed := time.Now()
	rc.Masters[victim].Stop()

	// Redis's own promotion: the replica reports itself master. Meanwhile
	// node1's link state: when it went down, and when it came back up.
	replica := rc.Replicas[victim][0].Client(t)
	var linkDown, linkBack time.Duration
	watchLink := func() {
		switch st := linkState(c.nodes["node1"].url); {
		case st != "up" && linkDown == 0:
			linkDown = time.Since(killed)
		case st == "up" && linkDown != 0 && linkBack == 0:
			linkBack = time.Since(killed)
		}
	}
	promoted := testkit.Eventually(t, 30*time.Second, "replica promoted", func() bool {
		watchLink()
		info, err := replica.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master")
	})
	testkit.Eventually(t, promoted+10*time.Second, "link down and up again", func() bool {
		watchLink()
		return linkBack != 0
	})
	time.Sleep(promoted + 6*time.Second - time.Since(killed))
	close(stop)
	wg.Wait()

	// The service gap of the victim's swarms: from the kill to the last
	// failed announce.
	var lastFail time.Time
	fails, total := 0, 0
	for ih, rs := range results {
		for _, r := range rs {
			total++
			if !r.ok {
				fails++
				if !onVictim[ih] {
					t.Errorf("announce on %s (not on the killed master) failed at %s: %v", ih, r.at.Sub(killed), r.err)
				} else if r.at.After(lastFail) {
					lastFail = r.at
				}
			}
		}
	}
	gap := time.Duration(0)
	if !lastFail.IsZero() {
		gap = lastFail.Sub(killed)
	}
	t.Logf("promotion %s after the kill; the killed master's swarms failed until %s after it (%d of %d announces failed); node1's link down at %s, up at %s",
		promoted.Round(time.Millisecond), gap.Round(time.Millisecond), fails, total, linkDown.Round(time.Millisecond), linkBack.Round(time.Millisecond))
	if gap > promoted+5*time.Second || linkBack > promoted+5*time.Second {
		t.Fatalf("service gap %s, link back at %s: more than Redis's promotion (%s) + 5s", gap, linkBack, promoted)
	}
	for ih, rs := range results {
		if !rs[len(rs)-1].ok {
			t.Fatalf("%s still failing at the end", ih)
		}
	}
	c.waitLinked(names...)

	// Converged, and stops stay stopped, on the promoted replica too. The
	// peers are node1's clients' (the load has stopped, so node1's counts
	// are final), read before node2's own peers below come and go:
	// read after, a start relayed to node1 before its stop would count.
	want := map[string]int64{}
	for _, ih := range hashes {
		want[ih] = scrapeOrZero(c.nodes["node1"].url, ih).leechers
	}
	for k := range 20 {
		ih := hashes[k%torrents]
		if err := tryAnnounce(c.nodes["node2"].url, ih, 30000+k, 100, "started"); err != nil {
			t.Fatal(err)
		}
		if err := tryAnnounce(c.nodes["node2"].url, ih, 30000+k, 100, "stopped"); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "both nodes exact", func() bool {
		for _, ih := range hashes {
			if scrapeOrZero(c.nodes["node2"].url, ih).leechers != want[ih] || scrapeOrZero(c.nodes["node1"].url, ih).leechers != want[ih] {
				return false
			}
		}
		return true
	})
	for _, ih := range hashes {
		if want[ih] == 0 || want[ih] > 500*4 {
			t.Fatalf("%s: %d leechers", ih, want[ih])
		}
	}

	// A node whose first seed is the dead master starts from the others.
	seeds := rc.Masters[victim].URL() + "?addr=" + rc.Masters[(victim+1)%len(rc.Masters)].Addr() + "&addr=" + rc.Replicas[victim][0].Addr()
	c.nodes["node3"] = startProc(t, runNode, c.env("TRACKER_NODE_ID=node3", "TRACKER_LINK_PASSWORD="+testPassword, "TRACKER_REDIS_URL="+seeds))
	c.waitLinked("node1", "node2", "node3")
	testkit.Eventually(t, 10*time.Second, "node3 converged", func() bool {
		for _, ih := range hashes {
			if scrapeOrZero(c.nodes["node3"].url, ih).leechers != want[ih] {
				return false
			}
		}
		return true
	})
}

// linkState is a node's link state from /link/status ("" if unreadable).
func linkState(base string) string {
	resp, err := http.Get(base + "/link/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		State string `json:"state"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return st.State
}

// TestRedisClusterShardDown: a master with no replica dies for good (the
// link's channels live elsewhere). A scrape answers for the swarms that
// are reachable, leaves the others out and says so; the link keeps
// relaying; a resync repairs what it can reach, reports the rest as
// failed and is retried.
func TestRedisClusterShardDown(t *testing.T) {
	rc := testkit.StartRedisCluster(t, 3, 0, time.Second)
	names := []string{"node1", "node2"}
	c := newClusterOn(t, rc, names...)
	c.waitLinked(names...)
	ctx := context.Background()
	admin := rc.Masters[0].Client(t)
	owner := func(key string) int {
		s, err := admin.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return min(int(s)*len(rc.Masters)/16384, len(rc.Masters)-1)
	}
	victim := (owner("{"+c.channel+"}:up") + 1) % len(rc.Masters)
	admin = rc.Masters[(victim+1)%len(rc.Masters)].Client(t) // one that stays up
	const torrents = 12
	var up, down []string
	for i := 0; len(up) < torrents || len(down) < 2; i++ {
		ih := fmt.Sprintf("%c-shard-down-%07d", 'a'+i%16, i) // over 16 parts of the index
		switch {
		case owner(fmt.Sprintf("tl:{node2:%x}:m", ih)) == victim:
			down = append(down, ih)
		case owner(fmt.Sprintf("tl:{node1:%x}:m", ih)) != victim && len(up) < torrents:
			up = append(up, ih) // reachable at both nodes
		}
	}
	all := append(append([]string(nil), up...), down[:2]...)
	for k, ih := range all {
		if err := tryAnnounce(c.nodes["node1"].url, ih, 40000+k, 100, "started"); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 5*time.Second, "converged", func() bool {
		for _, ih := range all {
			if scrapeOrZero(c.nodes["node2"].url, ih).leechers != 1 {
				return false
			}
		}
		return true
	})
	rc.Masters[victim].Stop()

	// One scrape of every torrent: the reachable ones answered, the
	// others left out with a warning.
	q := ""
	for _, ih := range all {
		q += "&info_hash=" + url.QueryEscape(ih)
	}
	var m map[string]any
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("last scrape answer: %q", last)
		}
	}()
	testkit.Eventually(t, 5*time.Second, "a partial scrape", func() bool {
		resp, err := http.Get(c.nodes["node2"].url + "/scrape?" + q[1:])
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m = nil
		last = string(b)
		return bencode.Unmarshal(b, &m) == nil && m["warning message"] != nil
	})
	files, _ := m["files"].(map[string]any)
	if len(files) != len(up) {
		t.Fatalf("scrape answered %d torrents, want the %d reachable ones: %v", len(files), len(up), m)
	}
	for _, ih := range up {
		if f, _ := files[ih].(map[string]any); f == nil || f["incomplete"] != int64(1) {
			t.Fatalf("%s: %v", ih, files[ih])
		}
	}
	t.Logf("partial scrape: %d answered, warning %q", len(files), m["warning message"])

	// The link still relays the reachable swarms.
	if err := tryAnnounce(c.nodes["node1"].url, up[0], 41000, 100, "started"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "relayed with a shard down", func() bool { return scrapeOrZero(c.nodes["node2"].url, up[0]).leechers == 2 })

	// node2 loses a reachable swarm whose part of node1's index is
	// reachable too (as if relays were missed); a resync restores it
	// though other swarms and parts cannot be read, and says it failed.
	lost := ""
	for _, ih := range up[1:] {
		var h bittorrent.InfoHash
		copy(h[:], ih)
		if owner(redisstore.IndexKey("tl", "node1", h)) != victim {
			lost = ih
			break
		}
	}
	if lost == "" {
		t.Fatal("no torrent with its index part on a live shard")
	}
	rdb := rc.Client(t)
	if n, err := rdb.Del(ctx, fmt.Sprintf("tl:{node2:%x}:m", lost)).Result(); err != nil || n != 1 {
		t.Fatalf("delete node2's peers of the swarm: %d keys deleted, %v", n, err)
	}
	failures := hubCounter(t, c.hub.url, "hub_resync_failures_total")
	c.resetHub()
	testkit.Eventually(t, 10*time.Second, "the reachable swarm repaired", func() bool { return scrapeOrZero(c.nodes["node2"].url, lost).leechers == 1 })
	testkit.Eventually(t, 10*time.Second, "the resync reported incomplete", func() bool {
		return hubCounter(t, c.hub.url, "hub_resync_failures_total") > failures
	})
}

// nodeCounter reads a counter from a node's /metrics (0 if absent).
func nodeCounter(t testing.TB, nodeURL, metric string) float64 { return hubCounter(t, nodeURL, metric) }

// busMessages sums, over every process of rc, the PUBLISH and SPUBLISH
// messages it sent over the cluster bus.
func busMessages(t *testing.T, rc *testkit.RedisCluster) [2]int64 {
	t.Helper()
	var out [2]int64
	for _, srv := range rc.Servers() {
		info, err := srv.Client(t).ClusterInfo(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			for i, f := range []string{"cluster_stats_messages_publish_sent:", "cluster_stats_messages_publishshard_sent:"} {
				if v, ok := strings.CutPrefix(line, f); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					out[i] += n
				}
			}
		}
	}
	return out
}
