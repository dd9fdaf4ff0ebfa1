package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// makeTorrent writes a small torrent into each of dirs and returns its raw
// bytes and 20-byte info hash.
func makeTorrent(t *testing.T, name string, dirs ...string) ([]byte, string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	os.WriteFile(src, bytes.Repeat([]byte(name), 1000), 0o644)
	b, err := torrentfile.Create(src, torrentfile.CreateOptions{Tiers: [][]string{{"http://x.example/announce"}}})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := torrentfile.Parse(b)
	h, _ := f.InfoHashV1()
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, name+".torrent"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return b, string(h[:])
}

func announceRaw(t *testing.T, base, ih string, port int) map[string]any {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-TT0001-%012d&port=%d&left=1", base, escape(ih), port, port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return decodeMap(t, b)
}

// TestAllowedTorrents: a torrent common to nodes 1 and 2 but not 3 shares
// peers between 1 and 2 and never reaches 3, which refuses it; once 3
// carries it (uploaded through the admin API), 3 converges.
func TestAllowedTorrents(t *testing.T) {
	c := newCluster(t)
	dirs := map[string]string{}
	for _, n := range []string{"node1", "node2", "node3"} {
		dirs[n] = t.TempDir()
		c.nodes[n] = startProc(t, runNode, c.env("TRACKER_NODE_ID="+n, "TRACKER_LINK_PASSWORD="+testPassword,
			"TRACKER_ALLOWED_DIR="+dirs[n], "TRACKER_ALLOWED_RESCAN=200ms"))
	}
	raw, ih := makeTorrent(t, "common", dirs["node1"], dirs["node2"])
	_, only3 := makeTorrent(t, "only3", dirs["node3"])
	c.waitLinked("node1", "node2", "node3")
	n1, n2, n3 := c.nodes["node1"].url, c.nodes["node2"].url, c.nodes["node3"].url
	testkit.Eventually(t, 3*time.Second, "dirs picked up", func() bool {
		return announceRaw(t, n1, ih, 7000)["failure reason"] == nil &&
			announceRaw(t, n2, ih, 7000)["failure reason"] == nil &&
			announceRaw(t, n3, only3, 7000)["failure reason"] == nil
	})

	announceTo(t, n1, ih, 7001, 10, "started")
	announceTo(t, n2, ih, 7002, 10, "started")
	testkit.Eventually(t, time.Second, "converged on 1 and 2", func() bool {
		return scrapeOf(t, n1, ih).leechers == 3 && scrapeOf(t, n2, ih).leechers == 3 // 7000, 7001, 7002
	})
	if r := announceRaw(t, n3, ih, 7003); r["failure reason"] != "Requested download is not authorized for use with this tracker." {
		t.Fatalf("node3 answered %v", r)
	}
	if r := announceRaw(t, n1, only3, 7004); r["failure reason"] == nil {
		t.Fatal("node1 accepted a torrent only node3 carries")
	}
	time.Sleep(300 * time.Millisecond)
	rdb := c.redis.Client(t)
	if keys := rdb.Keys(context.Background(), fmt.Sprintf("tl:{node3:%x}:*", ih)).Val(); len(keys) != 0 {
		t.Fatalf("node3's keyspace holds a torrent it does not carry: %v", keys)
	}

	// Admin API, on the admin listener only: without token refused;
	// with it node3 carries the torrent and is resynced.
	a3 := c.nodes["node3"].admin
	req, _ := http.NewRequest("POST", n3+"/admin/torrents", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer test-admin-token-123")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 && resp.StatusCode != 405 {
		t.Fatalf("upload on the public port: %v %v", resp, err)
	}
	req, _ = http.NewRequest("POST", a3+"/admin/torrents", bytes.NewReader(raw))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("upload without token: %v %v", resp, err)
	}
	req, _ = http.NewRequest("POST", a3+"/admin/torrents", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer test-admin-token-123")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	took := testkit.Eventually(t, 5*time.Second, "node3 converged", func() bool { return scrapeOrZero(n3, ih).leechers == 3 })
	t.Logf("node3 converged %s after the upload", took)
	// The carried .torrent can be downloaded.
	resp, err := http.Get(fmt.Sprintf("%s/torrents/%x.torrent", n3, ih))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download .torrent: %v %v", resp, err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, raw) {
		t.Fatal("downloaded .torrent differs")
	}
	// Bad uploads are refused with a reason.
	for _, bad := range [][]byte{raw[:len(raw)/2], []byte("li1ee"), []byte("d4:infod4:name1:xee")} {
		req, _ = http.NewRequest("POST", a3+"/admin/torrents", bytes.NewReader(bad))
		req.Header.Set("Authorization", "Bearer test-admin-token-123")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 400 {
			t.Fatalf("bad upload: %v %v", resp, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "invalid torrent") {
			t.Fatalf("bad upload answered %q", b)
		}
	}
	// Removing a file from a directory stops carrying it (live pickup).
	os.Remove(filepath.Join(dirs["node2"], "common.torrent"))
	testkit.Eventually(t, 3*time.Second, "node2 stopped carrying", func() bool {
		return announceRaw(t, n2, ih, 7005)["failure reason"] != nil
	})
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := bencode.Unmarshal(b, &m); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return m
}

// TestTorrentSharing: a torrent node1 carries (and offers: offering is
// off by default) reaches node2, which accepts shared torrents, but not
// node3, which does not; node2, down during a release, catches up when it
// rejoins; invalid offers are refused. The nodes are one member (one
// Redis), so no consent is needed.
func TestTorrentSharing(t *testing.T) {
	c := newCluster(t)
	dirs := map[string]string{"node1": t.TempDir(), "node2": t.TempDir(), "node3": t.TempDir()}
	start := func(n string, accept bool) {
		c.nodes[n] = startProc(t, runNode, c.env("TRACKER_NODE_ID="+n, "TRACKER_LINK_PASSWORD="+testPassword,
			"TRACKER_ALLOWED_DIR="+dirs[n], "TRACKER_ALLOWED_RESCAN=200ms", "TRACKER_SHARE_OFFER=true", fmt.Sprintf("TRACKER_SHARE_ACCEPT=%v", accept)))
	}
	_, ih := makeTorrent(t, "release1", dirs["node1"])
	start("node1", false)
	start("node2", true)
	start("node3", false)
	c.waitLinked("node1", "node2", "node3")
	shared := func(dir, ih string) bool {
		_, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%x.torrent", ih)))
		return err == nil
	}
	took := testkit.Eventually(t, 5*time.Second, "node2 carries the shared torrent", func() bool {
		return shared(dirs["node2"], ih) && announceRaw(t, c.nodes["node2"].url, ih, 7000)["failure reason"] == nil
	})
	t.Logf("shared torrent carried by node2 after %s", took)
	announceTo(t, c.nodes["node1"].url, ih, 7001, 10, "started")
	testkit.Eventually(t, 2*time.Second, "peers converge on node2", func() bool { return scrapeOrZero(c.nodes["node2"].url, ih).leechers == 2 })
	time.Sleep(500 * time.Millisecond)
	if shared(dirs["node3"], ih) || announceRaw(t, c.nodes["node3"].url, ih, 7002)["failure reason"] == nil {
		t.Fatal("node3, which does not accept shared torrents, carries it")
	}

	// Sharing turned on for node3: it carries the torrent and converges.
	c.nodes["node3"].stop(t)
	start("node3", true)
	testkit.Eventually(t, 5*time.Second, "node3 converged after accepting", func() bool {
		return shared(dirs["node3"], ih) && scrapeOrZero(c.nodes["node3"].url, ih).leechers == 2
	})

	// node2 is down while node1 releases another torrent.
	c.nodes["node2"].stop(t)
	_, ih2 := makeTorrent(t, "release2", dirs["node1"])
	time.Sleep(500 * time.Millisecond)
	start("node2", true)
	testkit.Eventually(t, 5*time.Second, "node2 caught up after rejoining", func() bool { return shared(dirs["node2"], ih2) })

	// An invalid offer (written straight into node1's catalog) is refused.
	// node1's rescan rewrites its catalog every 200ms and drops the entry,
	// so it is written again before each resync the test asks for, as a
	// node that keeps offering it would.
	rdb := c.redis.Client(t)
	var last time.Time
	testkit.Eventually(t, 5*time.Second, "invalid offer refused", func() bool {
		if time.Since(last) > 250*time.Millisecond {
			last = time.Now()
			rdb.HSet(context.Background(), "tl:{node1:catalog}", strings.Repeat("ab", 20), "not a torrent")
			c.resetHub()
		}
		return hubCounter(t, c.hub.url, `hub_shared_refused_total{reason="invalid"}`) > 0
	})
	if shared(dirs["node2"], strings.Repeat("\xab", 20)) {
		t.Fatal("invalid torrent stored")
	}
}
