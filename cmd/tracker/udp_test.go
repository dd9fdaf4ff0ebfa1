package main

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"testing"
	"time"

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
