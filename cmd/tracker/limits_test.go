package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"

	trk "github.com/tracklink/tracklink/internal/tracker"
)

// TestRateLimitPerAddress: over HTTP and UDP, one address gets its burst,
// then the failure reason, counted by reason; the bucket is per address
// across both front ends.
func TestRateLimitPerAddress(t *testing.T) {
	announceURL := startNode(t, "TRACKER_RATE_LIMIT=0.1", "TRACKER_RATE_BURST=4", "TRACKER_RATE_LIMIT_LOOPBACK=true")
	base := strings.TrimSuffix(announceURL, "/announce")
	httpAnnounce := func(port int) string {
		resp, err := http.Get(fmt.Sprintf("%s?info_hash=%s&peer_id=-TT0001-%012d&port=%d&left=1", announceURL, url.QueryEscape("rate-limit-torrent01"), port, port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	udpAnnounce := func(port uint16) error {
		var ih, pid [20]byte
		rand.Read(ih[:])
		rand.Read(pid[:])
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := tracker.Announce{TrackerUrl: udpAnnounceURL(t, base), Context: ctx,
			Request: tracker.AnnounceRequest{InfoHash: ih, PeerId: pid, Port: port, Left: 1, NumWant: -1}}.Do()
		return err
	}
	for i := 0; i < 2; i++ {
		if b := httpAnnounce(7000 + i); strings.Contains(b, "failure") {
			t.Fatalf("HTTP announce %d within the burst: %s", i, b)
		}
		if err := udpAnnounce(uint16(7100 + i)); err != nil {
			t.Fatalf("UDP announce %d within the burst: %v", i, err)
		}
	}
	if b := httpAnnounce(7002); !strings.Contains(b, trk.RateLimited) {
		t.Fatalf("HTTP announce over the burst: %s", b)
	}
	if err := udpAnnounce(7102); err == nil || !strings.Contains(err.Error(), trk.RateLimited) {
		t.Fatalf("UDP announce over the burst: %v", err)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `tracker_announces_refused_total{reason="rate_limit"} 2`) {
		t.Fatalf("metrics lack 2 rate_limit refusals:\n%s", m)
	}
}
