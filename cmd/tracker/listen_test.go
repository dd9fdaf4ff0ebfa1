package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/testkit"
)

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, last int
		isRange     bool
		err         string
	}{
		{in: ":6969"},
		{in: "127.0.0.1:0"},
		{in: ":6969-6971", first: 6969, last: 6971, isRange: true},
		{in: "[::1]:7000-7000", first: 7000, last: 7000, isRange: true},
		{in: ":6971-6969", err: "first-last"},
		{in: ":0-5", err: "first-last"},
		{in: ":6969-70000", err: "first-last"},
		{in: ":a-b", err: "first-last"},
		{in: ":1000-3000", err: "at most 1024"},
		{in: "6969", err: "missing port"},
	} {
		r, err := parsePortRange(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.first != tc.first || r.last != tc.last || r.isRange != tc.isRange {
			t.Errorf("%q: %+v %v, want %d-%d range=%v", tc.in, r, err, tc.first, tc.last, tc.isRange)
		}
	}
}

func TestValidateListen(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		node bool
		err  string
	}{
		{env: []string{"TRACKER_HTTP_ADDR=:6969-6971", "TRACKER_UDP_ADDR=:6969-6971", "TRACKER_NODE_ID=t-{port}"}, node: true},
		{env: []string{"TRACKER_HTTP_ADDR=:6969-6971", "TRACKER_UDP_ADDR=:7000"}, node: true},
		{env: []string{"TRACKER_HTTP_ADDR=:6969-6971", "TRACKER_UDP_ADDR=:6969-6972"}, node: true, err: "must be the one of TRACKER_HTTP_ADDR"},
		{env: []string{"TRACKER_HTTP_ADDR=:6969", "TRACKER_UDP_ADDR=:6969-6971"}, node: true, err: "must be the one of TRACKER_HTTP_ADDR"},
		{env: []string{"TRACKER_HTTP_ADDR=:6969", "TRACKER_NODE_ID=t-{port}"}, node: true, err: "{port}, which needs a port range"},
		{env: []string{"TRACKER_HTTP_ADDR=:6980-6981", "TRACKER_UDP_ADDR=off"}, node: false, err: "the hub listens on one port"},
		{env: []string{"TRACKER_HTTP_ADDR=:6971-6969"}, node: true, err: "TRACKER_HTTP_ADDR"},
		{env: []string{"TRACKER_NODE_ID=t-{bad}"}, node: true, err: "TRACKER_NODE_ID"},
	} {
		cfg, _, err := loadConfig(tc.env)
		if err == nil {
			err = cfg.validateListen(tc.node)
		}
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.err)
		}
	}
}

func TestListeningPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l6.Close()
	ports, err := listeningPorts(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{l, l6} {
		if p := ln.Addr().(*net.TCPAddr).Port; !slices.Contains(ports, p) {
			t.Errorf("listening on %d, listeningPorts says %v", p, ports)
		}
	}
	// A connected socket is not a listening one.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ports, _ = listeningPorts(os.Getpid())
	if p := c.LocalAddr().(*net.TCPAddr).Port; slices.Contains(ports, p) {
		t.Errorf("client port %d reported as listening", p)
	}
}

// TestPortRangeReplicas runs replicas as compose with host networking
// does: the same variables for each, a range of two ports. Each takes its
// own port for HTTP and UDP and its own node id from it; the link joins
// them; a third replica finds no port and says so.
func TestPortRangeReplicas(t *testing.T) {
	c := newCluster(t)
	base := testkit.PortRange(t, 2)
	rng := fmt.Sprintf("127.0.0.1:%d-%d", base, base+1)
	env := c.env("TRACKER_HTTP_ADDR="+rng, "TRACKER_UDP_ADDR="+rng, "TRACKER_NODE_ID=r-{port}", "TRACKER_LINK_PASSWORD="+testPassword)
	var ids []string
	for i := 0; i < 2; i++ {
		p := startProc(t, runNode, env)
		id := fmt.Sprintf("r-%d", base+i)
		if want := fmt.Sprintf("http://127.0.0.1:%d", base+i); p.url != want {
			t.Fatalf("replica %d listens on %s, want %s", i, p.url, want)
		}
		c.nodes[id] = p
		ids = append(ids, id)
		// UDP took the same port.
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", base+i))
		if err == nil {
			u.Close()
			t.Fatalf("UDP port %d is free: replica %d did not take it", base+i, i)
		}
	}
	c.waitLinked(ids...)
	ih := "port-range-torrent01"
	announceTo(t, c.nodes[ids[0]].url, ih, 7001, 10, "started")
	testkit.Eventually(t, 5*time.Second, "peer relayed to the other replica", func() bool { return scrapeOrZero(c.nodes[ids[1]].url, ih).leechers == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := runNode(ctx, env, logSink, nil)
	if err == nil || !strings.Contains(err.Error(), "no port of the range is free") {
		t.Fatalf("third replica: %v, want no free port", err)
	}

	// The health check finds the port of a range through /proc; here the
	// test process is the one listening, not process 1, so ask for ours.
	ports, err := listeningPorts(os.Getpid())
	if err != nil || !slices.Contains(ports, base) || !slices.Contains(ports, base+1) {
		t.Fatalf("listening ports %v (%v), want %d and %d", ports, err, base, base+1)
	}
}

// TestUDPFollowsHTTP: with only TRACKER_HTTP_ADDR set, UDP listens on its
// address (a second node on another port moves whole); TRACKER_UDP_ADDR,
// when set, wins.
func TestUDPFollowsHTTP(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, ":6969"},
		{[]string{"TRACKER_HTTP_ADDR=:6970"}, ":6970"},
		{[]string{"TRACKER_HTTP_ADDR=127.0.0.1:7000-7002"}, "127.0.0.1:7000-7002"},
		{[]string{"TRACKER_HTTP_ADDR=:6970", "TRACKER_UDP_ADDR=:7001"}, ":7001"},
		{[]string{"TRACKER_HTTP_ADDR=:6970", "TRACKER_UDP_ADDR=off"}, ""},
	} {
		c, _, err := loadConfig(tc.env)
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if c.UDP.Addr != tc.want {
			t.Errorf("%v: UDP on %q, want %q", tc.env, c.UDP.Addr, tc.want)
		}
	}
}

// TestHealthcheckKnowsTheHub: in a container whose process is the hub,
// the health check asks the hub's port, not a node's.
func TestHealthcheckKnowsTheHub(t *testing.T) {
	for in, want := range map[string]bool{
		"/tracker\x00hub\x00": true, "/tracker\x00": false, "/tracker\x00cluster\x00": false, "": false, "/tracker\x00hubby\x00": false,
	} {
		if got := isHubCmdline([]byte(in)); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}
