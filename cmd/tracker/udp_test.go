package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/tracker"
)

// udpAnnounceURL returns the udp:// announce URL of the node whose HTTP
// base URL is base, read from its /udp/status.
func udpAnnounceURL(t testing.TB, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/udp/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Addrs []string }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st.Addrs) == 0 {
		t.Fatalf("/udp/status: %v %+v", err, st)
	}
	return "udp://" + st.Addrs[0] + "/announce"
}

// TestUDPAcrossTheLink: HTTP and UDP peers are one swarm, on one node and
// across the link, and a UDP stop removes a peer everywhere.
func TestUDPAcrossTheLink(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.waitLinked("node1", "node2")
	u1, u2 := udpAnnounceURL(t, c.nodes["node1"].url), udpAnnounceURL(t, c.nodes["node2"].url)
	var ih [20]byte
	rand.Read(ih[:])
	r := clientAnnounce(t, u1, ih, 7101, 100, tracker.Started)
	if r.Leechers != 1 || len(r.Peers) != 0 {
		t.Fatalf("first UDP announce: %+v", r)
	}
	eventually(t, time.Second, "UDP peer of node 1 at node 2 (HTTP scrape)", func() bool {
		return scrapeOf(t, c.nodes["node2"].url, string(ih[:])).leechers == 1
	})
	r = clientAnnounce(t, u2, ih, 7102, 0, tracker.Started)
	if r.Leechers != 1 || r.Seeders != 1 || !ports(r.Peers)[7101] {
		t.Fatalf("UDP seeder at node 2: %+v", r)
	}
	eventually(t, time.Second, "UDP seeder of node 2 at node 1", func() bool {
		return scrapeOf(t, c.nodes["node1"].url, string(ih[:])).seeders == 1
	})
	r = clientAnnounce(t, c.nodes["node1"].url+"/announce", ih, 7103, 50, tracker.Started)
	if !ports(r.Peers)[7101] || !ports(r.Peers)[7102] {
		t.Fatalf("HTTP leecher at node 1 misses UDP peers: %+v", r)
	}
	clientAnnounce(t, u1, ih, 7101, 100, tracker.Stopped)
	eventually(t, time.Second, "UDP stop at node 1 reaches node 2", func() bool {
		return scrapeOf(t, c.nodes["node2"].url, string(ih[:])).leechers == 1 // only 7103 is left
	})
}

// TestLibtorrentDownloadsOverUDP: a seeder (anacrolix/torrent) announces
// over HTTP to node A; libtorrent (Debian's python3-libtorrent) announces
// only to node B's udp:// URL and downloads the file from the seeder that
// the link told node B about.
func TestLibtorrentDownloadsOverUDP(t *testing.T) {
	python := "/usr/bin/python3" // Debian's, which has the libtorrent module
	if out, err := exec.Command(python, "-c", "import libtorrent").CombinedOutput(); err != nil {
		t.Fatalf("python3-libtorrent is needed (apt-get install python3-libtorrent; .ci/run installs it): %v %s", err, out)
	}
	c := newCluster(t, "nodeA", "nodeB")
	c.waitLinked("nodeA", "nodeB")

	seedDir, leechDir := t.TempDir(), t.TempDir()
	data := make([]byte, 2<<20+4321)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(seedDir, "payload.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(filepath.Join(seedDir, "payload.bin")); err != nil {
		t.Fatal(err)
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	seeder := realClient(t, seedDir, true)
	st, err := seeder.AddTorrent(&metainfo.MetaInfo{InfoBytes: infoBytes, Announce: c.nodes["nodeA"].url + "/announce"})
	if err != nil {
		t.Fatal(err)
	}
	<-st.GotInfo()
	if err := st.VerifyData(); err != nil {
		t.Fatal(err)
	}
	ih := string(st.InfoHash().Bytes())
	eventually(t, 10*time.Second, "seeder known to node B", func() bool { return scrapeOf(t, c.nodes["nodeB"].url, ih).seeders == 1 })

	tf := filepath.Join(t.TempDir(), "payload.torrent")
	mi := metainfo.MetaInfo{InfoBytes: infoBytes, Announce: udpAnnounceURL(t, c.nodes["nodeB"].url)}
	f, err := os.Create(tf)
	if err != nil {
		t.Fatal(err)
	}
	if err := mi.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "testdata/lt_download.py", tf, leechDir, "60")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("libtorrent did not download over UDP: %v\n%s", err, out)
	}
	t.Logf("libtorrent downloaded in %s", time.Since(start))
	got, err := os.ReadFile(filepath.Join(leechDir, "payload.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("downloaded file differs from the seeded one")
	}
	// The leecher reached node A through the link: it announced over UDP.
	eventually(t, 5*time.Second, "libtorrent's UDP announce relayed to node A", func() bool {
		s := scrapeOf(t, c.nodes["nodeA"].url, ih)
		return s.seeders+s.leechers == 2
	})
}
