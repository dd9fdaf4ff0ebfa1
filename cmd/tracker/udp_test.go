package main

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"

	"github.com/tracklink/tracklink/internal/testkit"
)

// TestUDPAcrossTheLink: HTTP and UDP peers are one swarm, on one node and
// across the link, and a UDP stop removes a peer everywhere.
func TestUDPAcrossTheLink(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.waitLinked("node1", "node2")
	u1, u2 := testkit.UDPAnnounceURL(t, c.nodes["node1"].url), testkit.UDPAnnounceURL(t, c.nodes["node2"].url)
	var ih [20]byte
	rand.Read(ih[:])
	r := clientAnnounce(t, u1, ih, 7101, 100, tracker.Started)
	if r.Leechers != 1 || len(r.Peers) != 0 {
		t.Fatalf("first UDP announce: %+v", r)
	}
	testkit.Eventually(t, time.Second, "UDP peer of node 1 at node 2 (HTTP scrape)", func() bool {
		return scrapeOf(t, c.nodes["node2"].url, string(ih[:])).leechers == 1
	})
	r = clientAnnounce(t, u2, ih, 7102, 0, tracker.Started)
	if r.Leechers != 1 || r.Seeders != 1 || !ports(r.Peers)[7101] {
		t.Fatalf("UDP seeder at node 2: %+v", r)
	}
	testkit.Eventually(t, time.Second, "UDP seeder of node 2 at node 1", func() bool {
		return scrapeOf(t, c.nodes["node1"].url, string(ih[:])).seeders == 1
	})
	r = clientAnnounce(t, c.nodes["node1"].url+"/announce", ih, 7103, 50, tracker.Started)
	if !ports(r.Peers)[7101] || !ports(r.Peers)[7102] {
		t.Fatalf("HTTP leecher at node 1 misses UDP peers: %+v", r)
	}
	clientAnnounce(t, u1, ih, 7101, 100, tracker.Stopped)
	testkit.Eventually(t, time.Second, "UDP stop at node 1 reaches node 2", func() bool {
		return scrapeOf(t, c.nodes["node2"].url, string(ih[:])).leechers == 1 // only 7103 is left
	})
}
