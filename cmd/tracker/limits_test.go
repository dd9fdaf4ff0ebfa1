package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
	trk "github.com/tracklink/tracklink/internal/tracker"
)

// TestRateLimitPerAddress: over HTTP and UDP, one address gets its burst,
// then the failure reason, counted by reason; the bucket is per address
// across both front ends.
func TestRateLimitPerAddress(t *testing.T) {
	announceURL := startNode(t, "TRACKER_RATE_LIMIT=0.1", "TRACKER_RATE_BURST=4", "TRACKER_LIMIT_LOOPBACK=true")
	base := strings.TrimSuffix(announceURL, "/announce")
	httpAnnounce := func(port int) string {
		return body(t, fmt.Sprintf("%s?info_hash=%s&peer_id=-TT0001-%012d&port=%d&left=1", announceURL, url.QueryEscape("rate-limit-torrent01"), port, port))
	}
	udpAnnounce := func(port uint16) error {
		var ih, pid [20]byte
		rand.Read(ih[:])
		rand.Read(pid[:])
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := tracker.Announce{TrackerUrl: testkit.UDPAnnounceURL(t, base), Context: ctx,
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
	if m := metricLines(t, base, "tracker_announces_refused_total"); !strings.Contains(m, `tracker_announces_refused_total{reason="rate_limit"} 2`) {
		t.Fatalf("metrics lack 2 rate_limit refusals:\n%s", m)
	}
}

// TestConnectionCap: with TRACKER_HTTP_MAX_CONNS open (idle keep-alive
// ones included), a new connection is closed at once and counted; when
// one closes, a new one is served.
func TestConnectionCap(t *testing.T) {
	announceURL := startNode(t, "TRACKER_HTTP_MAX_CONNS=3")
	addr := strings.TrimSuffix(strings.TrimPrefix(announceURL, "http://"), "/announce")
	health := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	var idle []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := health(c); err != nil {
			t.Fatalf("connection %d under the cap: %v", i, err)
		}
		idle = append(idle, c)
	}
	// The 4th is reset: while it is read, or already while it is dialled.
	if c, err := net.Dial("tcp", addr); err == nil {
		defer c.Close()
		if err := health(c); err == nil {
			t.Fatal("a 4th connection was served with a cap of 3")
		}
	}
	idle[0].Close()
	var m []byte
	refused := 1 // the 4th, and each attempt before the node saw the close
	testkit.Eventually(t, 5*time.Second, "a connection served once one closed", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			refused++
			return false
		}
		defer resp.Body.Close()
		m, _ = io.ReadAll(resp.Body)
		return true
	})
	for _, want := range []string{fmt.Sprintf("tracker_http_connections_refused_total{reason=\"max_conns\"} %d\n", refused), "tracker_http_connections 3\n"} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestNewSwarmsCap: a node takes TRACKER_NEW_SWARMS_BURST new torrents at
// once, then refuses new ones with a failure reason, counted, while its
// live swarms go on.
func TestNewSwarmsCap(t *testing.T) {
	announceURL := startNode(t, "TRACKER_NEW_SWARMS_RATE=0.001", "TRACKER_NEW_SWARMS_BURST=2")
	base := strings.TrimSuffix(announceURL, "/announce")
	get := func(ih string, port int) string {
		return body(t, fmt.Sprintf("%s?info_hash=%s&peer_id=-TT0001-%012d&port=%d&left=1", announceURL, url.QueryEscape(ih), port, port))
	}
	for i, ih := range []string{"new-swarm-cap-000001", "new-swarm-cap-000002"} {
		if b := get(ih, 7000+i); strings.Contains(b, "failure") {
			t.Fatalf("new torrent %d within the burst: %s", i, b)
		}
	}
	if b := get("new-swarm-cap-000003", 7002); !strings.Contains(b, string(bittorrent.ErrNoNewSwarms)) {
		t.Fatalf("third new torrent: %s", b)
	}
	if b := get("new-swarm-cap-000001", 7003); strings.Contains(b, "failure") {
		t.Fatalf("a new peer of a live torrent at the cap: %s", b)
	}
	if m := metricLines(t, base, "tracker_announces_refused_total"); !strings.Contains(m, `tracker_announces_refused_total{reason="swarm_cap"} 1`) {
		t.Fatalf("metrics lack the swarm_cap refusal:\n%s", m)
	}
}

// TestMinIntervalOverHTTP: a regular re-announce sooner than min interval
// gets a failure reason, counted; events pass.
func TestMinIntervalOverHTTP(t *testing.T) {
	announceURL := startNode(t, "TRACKER_LIMIT_LOOPBACK=true", "TRACKER_RATE_LIMIT=0")
	base := strings.TrimSuffix(announceURL, "/announce")
	get := func(event string) string {
		return body(t, fmt.Sprintf("%s?info_hash=%s&peer_id=-TT0001-000000007001&port=7001&left=1&event=%s", announceURL, url.QueryEscape("min-interval-torrent"), event))
	}
	if b := get("started"); strings.Contains(b, "failure") {
		t.Fatalf("started: %s", b)
	}
	if b := get(""); !strings.Contains(b, "min interval is 5m0s") {
		t.Fatalf("regular re-announce at once: %s", b)
	}
	if b := get("completed"); strings.Contains(b, "failure") {
		t.Fatalf("completed: %s", b)
	}
	if m := metricLines(t, base, "tracker_announces_refused_total"); !strings.Contains(m, `tracker_announces_refused_total{reason="min_interval"} 1`) {
		t.Fatalf("metrics lack the min_interval refusal")
	}
}

// TestKeyBindsPeerAcrossReplicas: two replicas of one node (one node id,
// one Redis). A peer announces with its key to one; a stop or an update
// for it sent with another key or none (a neighbour behind the same
// address) is refused by either replica and the peer stays; its own stop,
// through the other replica, removes it.
func TestKeyBindsPeerAcrossReplicas(t *testing.T) {
	env := []string{"TRACKER_REDIS_URL=" + testkit.SharedRedis(t).URL(), "TRACKER_NODE_ID=keys-replicated"}
	replicas := []string{startNode(t, env...), startNode(t, env...)}
	base := strings.TrimSuffix(replicas[1], "/announce")
	ih := "key-binding-torrent1"
	get := func(announceURL, key, event string) string {
		return body(t, fmt.Sprintf("%s?info_hash=%s&peer_id=-TT0001-000000007001&port=7001&left=1&key=%s&event=%s", announceURL, url.QueryEscape(ih), key, event))
	}
	if b := get(replicas[0], "0A1B2C3D", "started"); strings.Contains(b, "failure") {
		t.Fatalf("started: %s", b)
	}
	for _, r := range replicas {
		for _, tc := range [][2]string{{"intruder", "stopped"}, {"", "stopped"}, {"intruder", "completed"}} {
			if b := get(r, tc[0], tc[1]); !strings.Contains(b, string(bittorrent.ErrKeyMismatch)) {
				t.Fatalf("%s with key %q: %s", tc[1], tc[0], b)
			}
		}
	}
	if got := scrapeOf(t, base, ih); got.leechers != 1 {
		t.Fatalf("after the refused changes: %+v", got)
	}
	if b := get(replicas[1], "0a1b2c3d", "stopped"); strings.Contains(b, "failure") {
		t.Fatalf("own stop: %s", b)
	}
	if got := scrapeOf(t, base, ih); got.leechers != 0 {
		t.Fatalf("after its own stop: %+v", got)
	}
}

// body returns the body of a GET (an announce's bencoded answer).
func body(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
