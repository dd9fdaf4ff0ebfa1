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

	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/redistest"
	"github.com/tracklink/tracklink/internal/tracker"
)

func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }

// TestRunSmall runs the generator briefly against a real node and Redis and
// checks that its figures are sane (not fast: that is the benchmark's job).
func TestRunSmall(t *testing.T) {
	srv := redistest.Shared(t)
	store, err := redisstore.New(srv.Client(t), redisstore.Config{Prefix: "lg", NodeID: "n", PeerLifetime: time.Hour, CompletedTTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
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
	if _, err := Run(context.Background(), Config{URL: ts.URL, Conns: 0}); err == nil {
		t.Fatal("zero connections accepted")
	}
}
