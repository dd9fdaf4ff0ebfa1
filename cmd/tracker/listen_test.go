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

	"github.com/tracklink/tracklink/internal/listen"
	"github.com/tracklink/tracklink/internal/testkit"
)

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
	ports, err := listen.ListeningPorts(os.Getpid())
	if err != nil || !slices.Contains(ports, base) || !slices.Contains(ports, base+1) {
		t.Fatalf("listening ports %v (%v), want %d and %d", ports, err, base, base+1)
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
