package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// serveDebug serves pprof on a loopback address (TRACKER_DEBUG_ADDR) until ctx ends.
func serveDebug(ctx context.Context, g *errgroup.Group, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("pprof listening", "addr", ln.Addr().String())
	g.Go(func() error {
		go func() { <-ctx.Done(); hs.Close() }()
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}

// jsonHandler serves what get returns as JSON (status endpoints).
func jsonHandler(get func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(get())
	})
}

// newRoundTripCounter returns the count of the node's round trips to
// Redis (redisstore.CountRoundTrips calls it).
func newRoundTripCounter(reg prometheus.Registerer) func() {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tracker_redis_roundtrips_total",
		Help: "Round trips to Redis (a command or a pipeline each).",
	})
	reg.MustRegister(c)
	return c.Inc
}
