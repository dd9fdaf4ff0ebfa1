package loadgen

import (
	"context"
	"io"
	"log/slog"
	"net/http"
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

// TestNodeCounters: the node's counters are read from its metrics text,
// refreshes as the sum of those queued and written at once; metrics
// without the announce or round-trip counter are an error.
func TestNodeCounters(t *testing.T) {
	const ok = `tracker_udp_requests_total{action="announce",outcome="ok"}`
	for _, tc := range []struct {
		name, body string
		want       counters
		err        bool
	}{
		{"all", "# HELP x\ntracker_redis_roundtrips_total 12\n" + ok + " 1000\nprocess_cpu_seconds_total 3.5\n" +
			"tracker_write_behind_total{result=\"queued\"} 900\ntracker_write_behind_total{result=\"now\"} 50\ntracker_write_behind_total{result=\"written\"} 870\n",
			counters{roundTrips: 12, announces: 1000, cpu: 3.5, refreshes: 950}, false},
		{"no soft state", "tracker_redis_roundtrips_total 3\n" + ok + " 10\n", counters{roundTrips: 3, announces: 10}, false},
		{"no announces", "tracker_redis_roundtrips_total 3\n", counters{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, tc.body) }))
			defer ts.Close()
			got, err := nodeCounters(context.Background(), ts.Client(), ts.URL, ok)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}
