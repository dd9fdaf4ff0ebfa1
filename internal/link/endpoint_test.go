package link

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

func testEndpoint(t *testing.T, rdb redis.UniversalClient) *Endpoint {
	cfg := Config{Channel: "eptest", Heartbeat: 50 * time.Millisecond, MaxSkew: time.Second}
	sign := func(m *Message) ([]byte, error) { return []byte(m.Node), nil }
	return NewEndpoint(cfg, "n1", redisstore.NewLinkConn(rdb), sign)
}

// TestEndpointListen: a subscription without a sign of life for three
// heartbeats is dropped and made anew (soft split), as it is on Reset;
// messages reach the handler in between.
func TestEndpointListen(t *testing.T) {
	srv := testkit.SharedRedis(t)
	rdb := srv.Client(t)
	e := testEndpoint(t, rdb)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var lost []string
	var got []string
	subscribed := make(chan bool, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Listen(ctx, Listener{
			Handle: func(ch string, b []byte) {
				mu.Lock()
				got = append(got, ch+"="+string(b))
				mu.Unlock()
			},
			Down:       func(error) {},
			Subscribed: func(first bool) { subscribed <- first },
			Lost: func(reason string) {
				mu.Lock()
				lost = append(lost, reason)
				mu.Unlock()
			},
		}, "eptest:down")
	}()
	if first := <-subscribed; !first {
		t.Fatal("first subscription not reported as first")
	}
	if err := e.Publish(ctx, "eptest:down", 0, KindHeartbeat, nil); err != nil {
		t.Fatal(err)
	}
	// Nobody calls Alive: within three heartbeats (150 ms) a soft split.
	select {
	case first := <-subscribed:
		if first {
			t.Fatal("resubscription reported as first")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no soft split without signs of life")
	}
	e.Alive()
	e.Reset()
	select {
	case <-subscribed:
	case <-time.After(2 * time.Second):
		t.Fatal("Reset did not make a new subscription")
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "eptest:down=n1" {
		t.Fatalf("handled %v", got)
	}
	if len(lost) < 2 || !strings.HasPrefix(lost[0], "soft split") || !containsPrefix(lost, "reset by operator") {
		t.Fatalf("lost subscriptions: %v", lost)
	}
}

func containsPrefix(ss []string, p string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// TestEndpointPublishFailureStartsASession: what a failed publish carried
// is lost, so the endpoint starts a new session (the receiver resyncs it)
// and numbers it from 1 again.
func TestEndpointPublishFailureStartsASession(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	e := testEndpoint(t, rdb)
	ctx := context.Background()
	s1 := e.Session()
	if err := e.Publish(ctx, "eptest:up", 0, KindHeartbeat, nil); err != nil || e.lastSeq(0) != 1 {
		t.Fatalf("publish: %v, seq %d", err, e.lastSeq(0))
	}
	srv.Stop()
	if err := e.Publish(ctx, "eptest:up", 0, KindHeartbeat, nil); err == nil {
		t.Fatal("publish to a stopped Redis succeeded")
	}
	if e.Session() == s1 || e.lastSeq(0) != 0 {
		t.Fatalf("after a failed publish: session %x (was %x), seq %d", e.Session(), s1, e.lastSeq(0))
	}
}

// TestNodeDropsChangesTooOldToSend: a batch held up past half the allowed
// skew loses its old changes (the hub would refuse the whole message for
// them), keeps the fresh ones, counts the drop and asks for a hello, so
// the hub resyncs the node.
func TestNodeDropsChangesTooOldToSend(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	cfg := Config{Password: "a link password of the tests", Channel: "freshtest", Heartbeat: time.Second, Flush: time.Millisecond, Queue: 16, MaxSkew: 4 * time.Second}
	reg := prometheus.NewRegistry()
	n, err := NewNode(cfg, "node1", redisstore.NewLinkConn(rdb), redisstore.NewNodeIndex(rdb, "tl", 0), slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	at := func(d time.Duration) bittorrent.PeerChange {
		return bittorrent.PeerChange{Op: bittorrent.OpLeecher, Seen: now.Add(-d).UnixMilli()}
	}
	kept := n.fresh([]bittorrent.PeerChange{at(0), at(3 * time.Second), at(time.Second), at(10 * time.Second)})
	if len(kept) != 2 || kept[0].Seen != at(0).Seen || kept[1].Seen != at(time.Second).Seen {
		t.Fatalf("kept %+v, want the changes of now and 1 s ago", kept)
	}
	if got := testutil.ToFloat64(n.m.stale); got != 2 {
		t.Fatalf("%v stale changes counted, want 2", got)
	}
	select {
	case <-n.helloReq:
	default:
		t.Fatal("no hello asked for")
	}
	if kept := n.fresh([]bittorrent.PeerChange{at(0)}); len(kept) != 1 || len(n.helloReq) != 0 {
		t.Fatal("a fresh batch changed, or asked for a hello")
	}
}

// TestNodeStatusSaysWhenRemade: after a reset the node's subscription is
// dropped and made anew, and its status says when and why.
func TestNodeStatusSaysWhenRemade(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	cfg := Config{Password: "a link password of the tests", Channel: "remadetest", Heartbeat: 100 * time.Millisecond, Flush: time.Millisecond, Queue: 16, MaxSkew: 4 * time.Second}
	n, err := NewNode(cfg, "node1", redisstore.NewLinkConn(rdb), redisstore.NewNodeIndex(rdb, "tl", 0), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if st := n.Status(); !st.Remade.IsZero() || st.RemadeReason != "" {
		t.Fatalf("a new node's status: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.listen(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	before := time.Now()
	n.Reset()
	deadline := time.Now().Add(5 * time.Second)
	for n.Status().RemadeReason != "reset by operator" {
		if time.Now().After(deadline) {
			t.Fatalf("status after a reset: %+v", n.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := n.Status(); st.Remade.Before(before) {
		t.Fatalf("remade at %s, before the reset at %s", st.Remade, before)
	}
}

// TestNodePublishesByPartition: a node's batch goes up one message per
// partition, each on its partition's channel and numbered in its own
// stream; hellos go on the control channel; the hub's heartbeats with
// another partition count are refused, so the link does not come up.
func TestNodePublishesByPartition(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	cfg := Config{Password: "a link password of the tests", Channel: "parttest", Heartbeat: time.Second, Flush: time.Millisecond, Queue: 16,
		MaxSkew: 4 * time.Second, Partitions: 4}
	n, err := NewNode(cfg, "node1", redisstore.NewLinkConn(rdb), redisstore.NewNodeIndex(rdb, "tl", 0), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sub := rdb.PSubscribe(ctx, "parttest:up*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	change := func(first byte, port byte) bittorrent.PeerChange {
		return bittorrent.PeerChange{InfoHash: bittorrent.InfoHash{first}, Op: bittorrent.OpLeecher, Seen: time.Now().UnixMilli(), Peer: string([]byte{10, 0, 0, 1, 0x1a, port})}
	}
	got := map[string][]*Message{}
	key := func(string) (Key, error) { return n.creds.Node, nil }
	read := func(k int) {
		t.Helper()
		for k > 0 {
			m, err := sub.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lm, err := DecodeUp([]byte(m.Payload), key)
			if err != nil {
				t.Fatal(err)
			}
			if lm.Kind != KindHeartbeat {
				got[m.Channel] = append(got[m.Channel], lm)
				k--
			}
		}
	}
	read(1) // the hello
	n.LocalChange(change(1, 1))
	n.LocalChange(change(7, 2))
	n.LocalChange(change(5, 3))
	read(2)
	n.LocalChange(change(9, 4))
	read(1)
	if h := got["parttest:up"]; len(h) != 1 || h[0].Kind != KindHello || h[0].Stream != 0 || h[0].Partitions != 4 {
		t.Fatalf("control channel: %+v", h)
	}
	p1, p3 := got["parttest:up:1"], got["parttest:up:3"]
	if len(p1) != 2 || p1[0].Stream != 2 || p1[0].Seq != 1 || p1[1].Seq != 2 || len(p1[0].Changes) != 2 || len(p1[1].Changes) != 1 {
		t.Fatalf("partition 1: %+v", p1)
	}
	if len(p3) != 1 || p3[0].Stream != 4 || p3[0].Seq != 1 || p3[0].Changes[0].InfoHash[0] != 7 {
		t.Fatalf("partition 3: %+v", p3)
	}
	// A hub with 8 partitions: its heartbeat is refused.
	priv, _ := NewMaster("a link password of the tests").HubKeys()
	b, _ := EncodeDown(priv, &Message{Kind: KindHubHeartbeat, Partitions: 8, Node: "hub", Session: 1, Seq: 1, Time: time.Now().UnixMilli()})
	n.handle(b)
	if testutil.ToFloat64(n.m.rejected.WithLabelValues("partitions")) != 1 || !n.ep.LastAlive().Before(time.Now().Add(-time.Minute)) {
		t.Fatal("a heartbeat of another partition count was taken")
	}
}

// TestNodeSaysByeAtAStop: a node that stops says bye on the control
// channel, after what it still had to send.
func TestNodeSaysByeAtAStop(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	cfg := Config{Password: "a link password of the tests", Channel: "byetest", Heartbeat: time.Second, Flush: time.Millisecond, Queue: 16,
		MaxSkew: 4 * time.Second, Partitions: 4}
	n, err := NewNode(cfg, "node1", redisstore.NewLinkConn(rdb), redisstore.NewNodeIndex(rdb, "tl", 0), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	sub := rdb.Subscribe(sctx, "byetest:up")
	defer sub.Close()
	if _, err := sub.Receive(sctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	key := func(string) (Key, error) { return n.creds.Node, nil }
	var kinds []Kind
	for len(kinds) == 0 || kinds[len(kinds)-1] != KindBye {
		if len(kinds) == 1 {
			cancel() // after the hello
		}
		rctx, rcancel := context.WithTimeout(sctx, 5*time.Second)
		m, err := sub.ReceiveMessage(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("after %v: %v", kinds, err)
		}
		lm, err := DecodeUp([]byte(m.Payload), key)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, lm.Kind)
	}
	<-done
	if kinds[0] != KindHello {
		t.Fatalf("messages on the control channel: %v", kinds)
	}
}
