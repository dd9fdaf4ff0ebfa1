package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestAdversarialLink drives a hub and two nodes on a real Redis, and
// publishes on the link what an attacker could: each case is refused and
// counted, and afterwards the nodes still converge: nothing lost, no node's
// service disturbed.
func TestAdversarialLink(t *testing.T) {
	c := newCluster(t, "node1", "node2")
	c.waitLinked("node1", "node2")
	rdb := c.redis.Client(t)
	ctx := context.Background()
	up, down := c.channel+":up", c.channel+":down"
	publish := func(ch string, b []byte) {
		t.Helper()
		if err := rdb.Publish(ctx, ch, b).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rejected := func(reason string) float64 {
		return hubCounter(t, c.hub.url, `hub_rejected_total{reason="`+reason+`"}`)
	}
	master := link.NewMaster(testPassword)
	node1Key, node2Key := master.NodeKey("node1"), master.NodeKey("node2")
	st, err := hubStatus(c.hub.url)
	if err != nil {
		t.Fatal(err)
	}
	var node1Session uint64
	for s := range st.Nodes["node1"].Processes {
		b, _ := hex.DecodeString(s)
		for _, x := range b {
			node1Session = node1Session<<8 | uint64(x)
		}
	}
	msg := func(node string, session, seq uint64, tm time.Time, changes ...bittorrent.PeerChange) *link.Message {
		return &link.Message{Kind: link.KindUpdates, Node: node, Session: session, Seq: seq, Time: tm.UnixMilli(), Changes: changes}
	}
	change := func(ih string, port int, seen time.Time) bittorrent.PeerChange {
		return bittorrent.PeerChange{InfoHash: hash20(ih), Op: bittorrent.OpLeecher, Seen: seen.UnixMilli(), Peer: peerBytes(port)}
	}
	encode := func(key link.Key, m *link.Message) []byte {
		b, err := link.EncodeUp(key, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("forging as another node with a different node's key", func(t *testing.T) {
		before := rejected("bad_mac")
		publish(up, encode(node2Key, msg("node1", node1Session, 1<<40, time.Now(), change("forged-as-node1-0001", 9001, time.Now()))))
		testkit.Eventually(t, 2*time.Second, "refused as bad_mac", func() bool { return rejected("bad_mac") > before })
	})
	t.Run("a sequence number of 2^64-1 under a node's own session", func(t *testing.T) {
		// Only node1's key can sign as node1: this is node1 gone wrong.
		before := rejected("seq_jump")
		publish(up, encode(node1Key, &link.Message{Kind: link.KindHeartbeat, Node: "node1", Session: node1Session, Seq: math.MaxUint64, Time: time.Now().UnixMilli()}))
		testkit.Eventually(t, 2*time.Second, "refused as seq_jump", func() bool { return rejected("seq_jump") > before })
	})
	t.Run("a change seen ten years ahead or behind", func(t *testing.T) {
		before := rejected("bad_seen")
		for _, d := range []time.Duration{10 * 365 * 24 * time.Hour, -10 * 365 * 24 * time.Hour} {
			publish(up, encode(node2Key, msg("node2", 77, 1, time.Now(), change("planted-peer-0000001", 9002, time.Now().Add(d)))))
		}
		testkit.Eventually(t, 2*time.Second, "refused as bad_seen", func() bool { return rejected("bad_seen") >= before+2 })
	})
	t.Run("replay of a captured message after a hub restart", func(t *testing.T) {
		// An update, on its partition's channel: the hub that takes the
		// partition after the restart reads its stream's state from the
		// registry before it listens.
		sub := rdb.PSubscribe(ctx, up+":*")
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		announceTo(t, c.nodes["node1"].url, "captured-torrent-001", 7401, 5, "started")
		var captured []byte
		var channel string
		for captured == nil {
			m, err := sub.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if lm, err := link.DecodeUp([]byte(m.Payload), func(string) (link.Key, error) { return node1Key, nil }); err == nil && lm.Kind == link.KindUpdates {
				captured, channel = []byte(m.Payload), m.Channel
			}
		}
		time.Sleep(300 * time.Millisecond) // the hub persists its state every heartbeat
		c.hub.stop(t)
		c.startHub()
		// The restarted hub knows node1 from its registry at once; wait
		// until it hears node1 itself, so its subscription is up.
		testkit.Eventually(t, 5*time.Second, "restarted hub hears node1", func() bool {
			st, err := hubStatus(c.hub.url)
			return err == nil && st.Nodes["node1"].Messages > 0
		})
		// and holds every partition again (the stopped hub gave them up).
		testkit.Eventually(t, 10*time.Second, "restarted hub holds every partition", func() bool {
			st, err := hubStatus(c.hub.url)
			return err == nil && len(st.Partitions) == link.DefaultPartitions
		})
		// Its subscription to the partition's channel may come a moment
		// after it holds the partition: send the replay again until the
		// hub has heard it (each is the same replay, to be refused).
		before := rejected("replay")
		if !testkit.Within(5*time.Second, func() bool {
			publish(channel, captured)
			time.Sleep(100 * time.Millisecond)
			return rejected("replay") > before
		}) {
			st, _ := hubStatus(c.hub.url)
			t.Fatalf("replay not refused; hub status %+v\n%s", st.Nodes["node1"], metricLines(t, c.hub.url, "hub_"))
		}
	})
	t.Run("a garbage flood and oversized publishes on both channels", func(t *testing.T) {
		junk := make([]byte, 300)
		for i := 0; i < 5000; i++ {
			rand.Read(junk)
			junk[0] = link.Version
			publish(up, junk)
		}
		if !testkit.Within(10*time.Second, func() bool {
			return rejected("malformed")+rejected("bad_mac")+rejected("unknown_node") >= 5000
		}) {
			t.Fatalf("garbage not counted: %v", metricLines(t, c.hub.url, "hub_rejected"))
		}
		for _, ch := range []string{up, down} {
			publish(ch, make([]byte, 40<<20)) // over Redis's 32 MiB pub/sub output buffer limit
		}
		// The oversized messages cost every subscriber its connection;
		// each re-subscribes, and the link comes back by itself.
		c.waitLinked("node1", "node2")
	})

	// Nothing of the forged changes reached a keyspace, and the nodes
	// still converge on real announces at both.
	for _, ih := range []string{"forged-as-node1-0001", "planted-peer-0000001"} {
		for _, n := range []string{"node1", "node2"} {
			if got := scrapeOf(t, c.nodes[n].url, ih); got != (counts{}) {
				t.Fatalf("%s holds a forged peer of %s: %+v", n, ih, got)
			}
		}
	}
	ih := "after-the-attacks-01"
	announceTo(t, c.nodes["node1"].url, ih, 7501, 1, "started")
	announceTo(t, c.nodes["node2"].url, ih, 7502, 0, "started")
	for _, n := range []string{"node1", "node2"} {
		testkit.Eventually(t, 5*time.Second, "convergence on "+n, func() bool { return scrapeOf(t, c.nodes[n].url, ih) == counts{1, 1, 0} })
	}
}

// metricLines returns the metric lines of a node or hub that start with prefix.
func metricLines(t *testing.T, base, prefix string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func hash20(s string) bittorrent.InfoHash {
	var h bittorrent.InfoHash
	copy(h[:], s)
	return h
}

func peerBytes(port int) string {
	return string([]byte{10, 9, 8, 7, byte(port >> 8), byte(port)})
}
