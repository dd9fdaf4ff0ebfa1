package loadgen

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/tracker"
	"github.com/tracklink/tracklink/internal/udpapi"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// TestRunSmall runs the generator briefly against a real node and Redis and
// checks that its figures are sane (not fast: that is the benchmark's job).
func TestRunSmall(t *testing.T) {
	srv := testkit.SharedRedis(t)
	store, err := redisstore.New(srv.Client(t), redisstore.Config{Prefix: "lg", NodeID: "n", PeerLifetime: time.Hour, CompletedTTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rt := prometheus.NewCounter(prometheus.CounterOpts{Name: "tracker_redis_roundtrips_total"})
	reg.MustRegister(rt)
	rt.Add(0)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := tracker.New(tracker.Config{Interval: time.Hour, MinInterval: time.Minute, NumWantDefault: 50, NumWantMax: 200}, store, tracker.Options{}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{ScrapeMaxHashes: 10, ShutdownTimeout: time.Second}, svc, log, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	res, err := Run(context.Background(), Config{URL: ts.URL + "/announce", Conns: 4, Duration: 300 * time.Millisecond, Torrents: 20, Peers: 5, NumWant: 10, Redis: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Announces == 0 || res.Failures != 0 || res.FilledPeers != 100 || res.P99 < res.P50 || res.BytesPerPeer <= 0 || res.RoundTrips != 0 {
		t.Fatalf("implausible result: %+v", res)
	}
	// Paced: 200 announces a second for 1 s, whatever the node could do.
	res, err = Run(context.Background(), Config{URL: ts.URL + "/announce", Conns: 4, Duration: time.Second, Torrents: 20, Peers: 5, NumWant: 10, Rate: 200})
	if err != nil || res.Failures != 0 || res.Announces < 170 || res.Announces > 210 {
		t.Fatalf("paced at 200/s for 1 s: %d announces (%v)", res.Announces, err)
	}
	if _, err := Run(context.Background(), Config{URL: ts.URL, Conns: 0}); err == nil {
		t.Fatal("zero connections accepted")
	}

	// The UDP mode, against the same service: each client connects once,
	// then announces; the node's metrics count UDP announces.
	us, err := udpapi.New(udpapi.Config{Addr: "127.0.0.1:0", Workers: 4, ReadBuffer: 1 << 20, ScrapeMaxHashes: 10}, []byte("loadgen-udp-secret"), svc, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	conns, err := udpapi.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- us.Serve(ctx, conns) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	res, err = Run(context.Background(), Config{URL: "udp://" + conns[0].LocalAddr().String(), MetricsURL: ts.URL + "/metrics",
		Conns: 4, Duration: 300 * time.Millisecond, Torrents: 20, Peers: 5, NumWant: 10, Redis: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Announces == 0 || res.Failures != 0 || res.FilledPeers != 100 || res.P99 < res.P50 || res.RoundTrips != 0 || res.NodeCPU <= 0 {
		t.Fatalf("implausible UDP result: %+v\nnode: %+v", res, us.Status())
	}
	if st := us.Status(); st.Requests["announce"]["ok"] < uint64(res.Announces) || st.Requests["connect"]["ok"] != 4 {
		t.Fatalf("node saw %+v, the generator %d announces from 4 clients", st.Requests, res.Announces)
	}

	// Multiplexed: 6 clients on 2 sockets, each connecting once more for
	// the measured phase; every announce the generator counts, the node
	// answered.
	before := us.Status()
	res, err = Run(context.Background(), Config{URL: "udp://" + conns[0].LocalAddr().String(), Conns: 6, Mux: 2, Duration: 300 * time.Millisecond, Torrents: 20, Peers: 5, NumWant: 10})
	if err != nil {
		t.Fatal(err)
	}
	after := us.Status()
	if res.Announces == 0 || res.Failures != 0 || res.P99 < res.P50 {
		t.Fatalf("implausible multiplexed result: %+v", res)
	}
	if got := after.Requests["announce"]["ok"] - before.Requests["announce"]["ok"]; got < uint64(res.Announces)+100 {
		t.Fatalf("node answered %d announces, the generator counted %d and filled 100", got, res.Announces)
	}
	if got := after.Requests["connect"]["ok"] - before.Requests["connect"]["ok"]; got != 6+2 {
		t.Fatalf("%d connects, want 6 (fill) + 2 (the multiplexed sockets)", got)
	}
	if _, err := Run(context.Background(), Config{URL: ts.URL, Conns: 4, Mux: 2, Duration: time.Second, Torrents: 1, Peers: 1}); err == nil {
		t.Fatal("mux accepted for HTTP")
	}
}
