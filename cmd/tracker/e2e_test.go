package main

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"
	trHttp "github.com/anacrolix/torrent/tracker/http"
	"github.com/anacrolix/torrent/types/infohash"

	"github.com/tracklink/tracklink/internal/testkit"
)

func TestMain(m *testing.M) {
	if os.Getenv(netnsClientVar) != "" {
		os.Exit(netnsClientMain()) // a client inside a test's network namespace
	}
	if os.Getenv(netnsLoadVar) != "" {
		os.Exit(netnsLoadMain()) // a client of many addresses inside one
	}
	os.Exit(testkit.Main(m))
}

// startNode runs a whole node (as main does) with the given environment and
// returns its announce URL; the node stops at the end of the test.
func startNode(t *testing.T, environ ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan listening, 1)
	done := make(chan error, 1)
	environ = append([]string{"TRACKER_HTTP_ADDR=127.0.0.1:0", "TRACKER_UDP_ADDR=127.0.0.1:0", "TRACKER_UDP_SECRET=" + testUDPSecret}, environ...)
	go func() { done <- runNode(ctx, environ, io.Discard, started) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	select {
	case a := <-started:
		return "http://" + a.HTTP.String() + "/announce"
	case err := <-done:
		t.Fatalf("node did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("node did not start within 10s")
	}
	return ""
}

// clientAnnounce announces with anacrolix/torrent's tracker client, a
// client this project did not write.
func clientAnnounce(t *testing.T, announceURL string, ih [20]byte, port uint16, left int64, ev tracker.AnnounceEvent) tracker.AnnounceResponse {
	t.Helper()
	var pid [20]byte
	rand.Read(pid[:])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := tracker.Announce{
		TrackerUrl: announceURL,
		Context:    ctx,
		Request:    tracker.AnnounceRequest{InfoHash: ih, PeerId: pid, Port: port, Left: left, Event: ev, NumWant: -1},
	}.Do()
	if err != nil {
		t.Fatalf("announce: %v", err)
	}
	return res
}

func ports(ps []tracker.Peer) map[int]bool {
	m := map[int]bool{}
	for _, p := range ps {
		m[p.Port] = true
	}
	return m
}

func TestEndToEndWithRealClient(t *testing.T) {
	modes := map[string][]string{
		"redis":    {"TRACKER_REDIS_URL=" + testkit.SharedRedis(t).URL(), "TRACKER_NODE_ID=e2e"},
		"embedded": nil,
		"cluster":  {"TRACKER_REDIS_URL=" + testkit.StartOneNodeCluster(t).URL(), "TRACKER_REDIS_CLUSTER=true", "TRACKER_NODE_ID=e2e"},
	}
	for name, environ := range modes {
		t.Run(name, func(t *testing.T) {
			u := startNode(t, environ...)
			var ih [20]byte
			rand.Read(ih[:])
			r := clientAnnounce(t, u, ih, 7001, 100, tracker.Started)
			if r.Leechers != 1 || r.Seeders != 0 || len(r.Peers) != 0 {
				t.Fatalf("first: %+v", r)
			}
			if r.Interval < 1800 {
				t.Fatalf("interval %d", r.Interval)
			}
			r = clientAnnounce(t, u, ih, 7002, 0, tracker.Started)
			if r.Leechers != 1 || r.Seeders != 1 || !ports(r.Peers)[7001] || len(r.Peers) != 1 {
				t.Fatalf("seeder: %+v", r)
			}
			r = clientAnnounce(t, u, ih, 7003, 50, tracker.Started)
			if r.Leechers != 2 || r.Seeders != 1 || len(r.Peers) != 2 || !ports(r.Peers)[7001] || !ports(r.Peers)[7002] {
				t.Fatalf("second leecher: %+v", r)
			}
			clientAnnounce(t, u, ih, 7003, 0, tracker.Completed)
			clientAnnounce(t, u, ih, 7001, 100, tracker.Stopped)
			// Over UDP, the same swarm.
			uu := testkit.UDPAnnounceURL(t, strings.TrimSuffix(u, "/announce"))
			r = clientAnnounce(t, uu, ih, 7004, 10, tracker.Started)
			if r.Leechers != 1 || r.Seeders != 2 || len(r.Peers) != 2 || !ports(r.Peers)[7002] || !ports(r.Peers)[7003] {
				t.Fatalf("UDP leecher: %+v", r)
			}
			clientAnnounce(t, uu, ih, 7004, 10, tracker.Stopped)

			// An info hash with a space and a plus: clients encode them
			// differently ('+' or %20, %2B), the tracker must read both.
			var odd [20]byte
			copy(odd[:], "odd hash + spaces!!!")
			clientAnnounce(t, u, odd, 7005, 0, tracker.Started)

			pu, _ := url.Parse(u)
			cl := trHttp.NewClient(pu, trHttp.NewClientOpts{})
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			sc, err := cl.Scrape(ctx, []infohash.T{ih, odd})
			if err != nil {
				t.Fatal(err)
			}
			if len(sc) != 2 || sc[0].Seeders != 2 || sc[0].Leechers != 0 || sc[0].Completed != 1 || sc[1].Seeders != 1 {
				t.Fatalf("scrape: %+v", sc)
			}
		})
	}
}

func TestTakenPortFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = runNode(context.Background(), []string{"TRACKER_HTTP_ADDR=" + ln.Addr().String(), "TRACKER_UDP_ADDR=off"}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("err = %v", err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	err = runNode(context.Background(), []string{"TRACKER_HTTP_ADDR=127.0.0.1:0", "TRACKER_UDP_ADDR=" + pc.LocalAddr().String()}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "udp listen on") {
		t.Fatalf("UDP port taken: err = %v", err)
	}
}

// testUDPSecret keys UDP connection IDs of the nodes the tests start.
const testUDPSecret = "udp-secret-of-the-tests"
