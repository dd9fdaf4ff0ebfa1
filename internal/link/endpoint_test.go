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
	"github.com/tracklink/tracklink/internal/redistest"
)

func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }

func testEndpoint(t *testing.T, rdb redis.UniversalClient) *Endpoint {
	cfg := Config{Channel: "eptest", Heartbeat: 50 * time.Millisecond, MaxSkew: time.Second}
	sign := func(m *Message) ([]byte, error) { return []byte(m.Node), nil }
	return NewEndpoint(cfg, "n1", rdb, sign)
}

// TestEndpointListen: a subscription without a sign of life for three
// heartbeats is dropped and made anew (soft split), as it is on Reset;
// messages reach the handler in between.
func TestEndpointListen(t *testing.T) {
	srv := redistest.Shared(t)
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
	srv := redistest.Start(t)
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
	rdb := redistest.Shared(t).Client(t)
	cfg := Config{Password: "a link password of the tests", Channel: "freshtest", Heartbeat: time.Second, Flush: time.Millisecond, Queue: 16, MaxSkew: 4 * time.Second}
	reg := prometheus.NewRegistry()
	n, err := NewNode(cfg, "node1", "tl", rdb, rdb, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
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
	rdb := redistest.Shared(t).Client(t)
	cfg := Config{Password: "a link password of the tests", Channel: "remadetest", Heartbeat: 100 * time.Millisecond, Flush: time.Millisecond, Queue: 16, MaxSkew: 4 * time.Second}
	n, err := NewNode(cfg, "node1", "tl", rdb, rdb, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
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
