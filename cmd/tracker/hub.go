package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/hub"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// runHub is `tracker hub`: the link's hub, configured like a node (the same
// variables; TRACKER_LINK_PASSWORD and TRACKER_REDIS_URL are required).
func runHub(ctx context.Context, environ []string, logOut io.Writer, started chan<- net.Addr) error {
	cfg, unknown, err := loadConfig(environ)
	if err != nil {
		return err
	}
	if cfg.Link.Password == "" {
		return errors.New("the hub needs TRACKER_LINK_PASSWORD, the network secret (nodes hold it too, or only their own key: tracker link key NODE_ID)")
	}
	if err := cfg.validateListen(false); err != nil {
		return err
	}
	log := newLogger(cfg, logOut).With("role", "hub")
	for _, k := range unknown {
		log.Warn("unknown variable ignored (typo?)", "name", k)
	}
	rdb, err := newRedisClient(cfg.RedisURL, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	linkRDB := rdb
	if cfg.linkRedisURL() != cfg.RedisURL {
		if linkRDB, err = newRedisClient(cfg.linkRedisURL(), cfg); err != nil {
			return err
		}
		defer linkRDB.Close()
	}
	relay, err := redisstore.NewRelayer(rdb, redisstore.Config{
		Prefix: cfg.RedisPrefix, PeerLifetime: cfg.PeerLifetime, CompletedTTL: cfg.CompletedTTL, Timeout: cfg.RedisTimeout,
	})
	if err != nil {
		return err
	}
	reg := newRegistry()
	h, err := hub.New(hub.Config{Link: cfg.Link, Name: cfg.HubName, NodeTimeout: cfg.HubNodeTimeout, Sharer: allowed.NewSharer(rdb, cfg.RedisPrefix)}, linkRDB, relay,
		allowed.NewCarrier(rdb, cfg.RedisPrefix, 2*time.Second), log, reg)
	if err != nil {
		return err
	}
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := linkRDB.Ping(r.Context()).Err(); err != nil {
			http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	r.Method("GET", "/status", jsonHandler(func() any { return h.Status() }))
	r.Method("POST", "/admin/link/reset", httpapi.RequireToken(cfg.AdminToken, actionHandler(h.Reset, "hub link reset requested")))

	ln, err := httpapi.Listen(cfg.HTTP.Addr)
	if err != nil {
		return err
	}
	log.Info("hub listening", "config", cfg, "addr", ln.Addr().String(), "version", version)
	if started != nil {
		started <- ln.Addr()
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return h.Run(ctx) })
	g.Go(func() error { return httpapi.Serve(ctx, ln, r, cfg.HTTP.ShutdownTimeout, log) })
	err = g.Wait()
	log.Info("hub stopped")
	return err
}
