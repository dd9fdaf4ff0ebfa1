package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/testkit"
)

// replicaEnv is the environment of one replica of node "one" on port.
func replicaEnv(redisURL string, port int, extra ...string) []string {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return append([]string{"TRACKER_NODE_ID=one", "TRACKER_REUSEPORT=true", "TRACKER_REDIS_URL=" + redisURL,
		"TRACKER_HTTP_ADDR=" + addr, "TRACKER_UDP_ADDR=" + addr, "TRACKER_UDP_SECRET=" + testUDPSecret,
		"TRACKER_LIMIT_LOOPBACK=true", "TRACKER_LOG_LEVEL=info"}, extra...)
}

// servedBy returns the process that answers src's request for /metrics
// (nsload_test.go's client helpers: the same as in the client namespace).
func servedBy(t *testing.T, base string, src netip.Addr) string {
	t.Helper()
	p, _, err := metricsFrom(base, src.String())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReplicasShareOnePort: three processes of node "one" listen on one
// port (TCP and UDP, SO_REUSEPORT). Requests from 24 client addresses,
// each over fresh connections, are each served by one replica, and every
// replica serves some; one address's announces, over 30 TCP connections
// and 30 UDP sockets, meet the per-address limit at most twice (its TCP
// owner's and its UDP owner's), not once per replica per protocol. A
// replica that stops hands its addresses to the others: no request of a
// paced load fails.
func TestReplicasShareOnePort(t *testing.T) {
	r := testkit.StartRedis(t)
	port := testkit.PortRange(t, 1)
	var reps []*proc
	for range 3 {
		reps = append(reps, startProc(t, runNode, replicaEnv(r.URL(), port, "TRACKER_RATE_LIMIT=0.01", "TRACKER_RATE_BURST=10")))
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	udpAddr := fmt.Sprintf("127.0.0.1:%d", port)
	srcs := make([]netip.Addr, 24)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{127, 0, 3, byte(10 + i)})
	}
	// Every replica has read the others from the registry.
	testkit.Eventually(t, 10*time.Second, "every replica sees three", func() bool {
		seen := map[string]bool{}
		for _, src := range srcs {
			p, text, err := metricsFrom(base, src.String())
			if err != nil || !strings.Contains(text, "tracker_replicas 3") {
				return false
			}
			seen[p] = true
		}
		return len(seen) == 3
	})
	per := map[string]int{}
	for _, src := range srcs {
		first := servedBy(t, base, src)
		for range 4 {
			if p := servedBy(t, base, src); p != first {
				t.Fatalf("%s served by %s, then by %s", src, first, p)
			}
		}
		per[first]++
	}
	if len(per) != 3 {
		t.Fatalf("client addresses served by %d replicas, want 3: %v", len(per), per)
	}

	// One address, 30 fresh TCP connections and 30 UDP sockets, burst 10
	// per replica and (almost) no refill.
	heavy := netip.MustParseAddr("127.0.0.99")
	var ih [20]byte
	copy(ih[:], "replica-rate-limit-1")
	ok := 0
	for i := range 30 {
		q := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-TT0001-%012d&port=%d&left=1", base, url.QueryEscape(string(ih[:])), i, 9000+i)
		resp, err := httpFrom(heavy.String()).Get(q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "failure") {
			ok++
		}
		var r refusal
		switch err := udpAnnounce(udpAddr, heavy.String(), string(ih[:]), uint16(9500+i)); {
		case err == nil:
			ok++
		case !errors.As(err, &r):
			t.Fatalf("UDP announce %d from %s: %v", i, heavy, err)
		}
	}
	if ok > 2*10 {
		t.Fatalf("one address got %d of 60 announces through, at most 20 (two replicas' bursts of 10) allowed", ok)
	}
	if ok < 10 {
		t.Fatalf("one address got only %d announces through: the burst is 10", ok)
	}

	// A replica leaves under paced load: no HTTP request fails; UDP
	// announces (connect and announce, each from a fresh socket) are
	// counted, and what they lose is reported.
	stop := make(chan struct{})
	failed := make(chan error, 1)
	udpDone := make(chan [2]int, 1)
	go func() {
		sent, lost := 0, 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				udpDone <- [2]int{sent, lost}
				return
			default:
			}
			sent++
			var r refusal // a refusal (the rate limit) is an answer
			if err := udpAnnounce(udpAddr, srcs[i%len(srcs)].String(), string(ih[:]), uint16(20000+i%1000)); err != nil && !errors.As(err, &r) {
				lost++
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	go func() {
		defer close(failed)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			src := srcs[i%len(srcs)]
			resp, err := httpFrom(src.String()).Get(base + "/healthz")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			if err != nil {
				failed <- fmt.Errorf("request %d from %s: %w", i, src, err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	reps[2].stop(t)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	if err := <-failed; err != nil {
		t.Fatalf("while a replica left: %v", err)
	}
	u := <-udpDone
	t.Logf("while a replica left: %d UDP announces, %d unanswered", u[0], u[1])
	if u[0] < 50 || u[1]*10 > u[0] {
		t.Fatalf("while a replica left: %d of %d UDP announces unanswered (more than a tenth)", u[1], u[0])
	}
	seen := map[string]bool{}
	for _, src := range srcs {
		seen[servedBy(t, base, src)] = true
	}
	if len(seen) != 2 {
		t.Fatalf("after one of three left, %d replicas serve", len(seen))
	}
}

// TestStoppedNodeLeavesAtOnce: a node stopped cleanly (as SIGTERM does)
// says bye; the hub shows it left and relays to it no more within a
// second, not after TRACKER_HUB_NODE_TIMEOUT. The process id the node
// logs, its registry and its metrics name is its link session, the one
// the hub lists.
func TestStoppedNodeLeavesAtOnce(t *testing.T) {
	c := newCluster(t, "stay", "go")
	c.waitLinked("stay", "go")
	st, err := hubStatus(c.hub.url)
	if err != nil {
		t.Fatal(err)
	}
	var session string
	for s := range st.Nodes["go"].Processes {
		session = s
	}
	if m := metricLines(t, c.nodes["go"].url, "tracker_process_info"); !strings.Contains(m, `process="`+session+`"`) {
		t.Fatalf("the node's process id is not the session the hub lists (%s): %s", session, m)
	}
	c.nodes["go"].stop(t)
	testkit.Eventually(t, time.Second, "the hub shows the stopped node left", func() bool {
		st, err := hubStatus(c.hub.url)
		return err == nil && st.Nodes["go"].State == "left" && !st.Nodes["go"].Live
	})
	if st, _ := hubStatus(c.hub.url); st.Nodes["stay"].State != "live" {
		t.Fatalf("the other node: %+v", st.Nodes["stay"])
	}
}
