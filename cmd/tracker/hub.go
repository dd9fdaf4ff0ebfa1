package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/hub"
	"github.com/tracklink/tracklink/internal/listen"
	"github.com/tracklink/tracklink/internal/members"
	"github.com/tracklink/tracklink/internal/panel"
)

// runHub is `tracker hub`: the link's hub, configured like a node (the same
// variables; TRACKER_LINK_PASSWORD is required, and either TRACKER_REDIS_URL,
// a network of one member, or TRACKER_HUB_MEMBERS, the members' file).
func runHub(ctx context.Context, environ []string, logOut io.Writer, started chan<- listening) error {
	cfg, unknown, err := config.Load(environ)
	if err != nil {
		return err
	}
	if cfg.Link.Password == "" {
		return errors.New("the hub needs TRACKER_LINK_PASSWORD, the network secret (nodes hold it too, or only their own key: tracker link key NODE_ID)")
	}
	if !slices.ContainsFunc(environ, func(kv string) bool { return strings.HasPrefix(kv, "TRACKER_HTTP_ADDR=") && kv != "TRACKER_HTTP_ADDR=" }) {
		cfg.HTTP.Addr = config.DefaultHubAddr // not a node's announce port
	}
	if err := cfg.ValidateListen(false); err != nil {
		return err
	}
	log := newLogger(cfg, logOut).With("role", "hub")
	for _, k := range unknown {
		log.Warn("unknown variable ignored (typo?)", "name", k)
	}
	reg := newRegistry()
	h, err := hub.New(hub.Config{Link: cfg.Link, Name: cfg.HubName, NodeTimeout: cfg.HubNodeTimeout, Backlog: cfg.HubBacklog, Share: true,
		MaxProcesses: cfg.HubMaxProcesses, ResyncBackoff: cfg.HubResyncBackoff, ResyncBackoffMax: cfg.HubResyncBackoffMax,
		Bounds: hub.Bounds{Swarms: cfg.HubResyncMaxSwarms, Peers: cfg.HubResyncMaxPeers}, LeaseTTL: cfg.HubLeaseTTL,
		ShareLimits: allowed.ShareLimits{MaxTorrents: cfg.HubShareMaxTorrents, MaxBytes: cfg.HubShareMaxBytes, MaxSize: cfg.HubShareMaxSize}}, log, reg)
	if err != nil {
		return err
	}
	set := &memberSet{cfg: cfg}
	defer set.closeAll()
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "hub_redis_functions_missing_total",
		Help: "Relay calls that found a member's Redis without this release's function library (its operator runs tracker redis-setup).",
	}, set.functionsMissing))
	confs := []members.Entry{{Name: "local", RedisURL: cfg.RedisURL, RedisCluster: cfg.RedisCluster,
		RedisCAFile: cfg.RedisCAFile, RedisCertFile: cfg.RedisCertFile, RedisKeyFile: cfg.RedisKeyFile}}
	if cfg.HubMembers != "" {
		if confs, err = members.Read(cfg.HubMembers); err != nil {
			return err
		}
	} else if cfg.LinkRedisURL() != cfg.RedisURL {
		confs[0].LinkURL = cfg.LinkRedisURL()
	}
	if err := applyMembers(set, h, confs); err != nil {
		return err
	}
	if err := set.prepare(ctx, log); err != nil && cfg.HubMembers == "" {
		return err
	}
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		// Ready while the hub is subscribed to any member's channel: it
		// serves those.
		if up, _ := h.MembersUp(); up == 0 {
			http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// The public status lists at most hub.PublicProcesses live processes a
	// node; the admin panel shows them all.
	r.Method("GET", "/status", jsonHandler(func() any { return h.PublicStatus() }))
	page := hubPage(cfg.HubName, h, reg)
	r.Method("GET", "/", page)
	r.Method("HEAD", "/", page)

	var admin *panel.Panel
	var adminLn net.Listener
	if addr := cfg.AdminAddr(true); addr != "" {
		if admin, err = panel.NewHub(panel.Hub{Name: cfg.HubName, Version: version, Token: cfg.AdminToken, Admin: cfg.Admin,
			Hub: h, Gatherer: reg, Registerer: reg, Log: log}); err != nil {
			return err
		}
		if adminLn, err = listen.Admin(addr); err != nil {
			return err
		}
	}
	ln, err := httpapi.Listen(cfg.HTTP.Addr)
	if err != nil {
		if adminLn != nil {
			adminLn.Close()
		}
		return err
	}
	log.Info("hub listening", "config", cfg, "addr", ln.Addr().String(), "admin", addrOf(adminLn), "version", version)
	if started != nil {
		started <- listening{HTTP: ln.Addr(), Admin: addrOrNil(adminLn)}
	}
	g, ctx := errgroup.WithContext(ctx)
	if admin != nil {
		g.Go(func() error { return httpapi.Serve(ctx, adminLn, admin, cfg.HTTP.ShutdownTimeout, log) })
		g.Go(func() error { return admin.Run(ctx) })
	}
	g.Go(func() error { return h.Run(ctx) })
	g.Go(func() error { return page.Run(ctx) })
	if cfg.HubMembers != "" {
		g.Go(func() error { watchMembers(ctx, cfg.HubMembers, set, h, log); return nil })
	}
	g.Go(func() error { return httpapi.Serve(ctx, ln, r, cfg.HTTP.ShutdownTimeout, log) })
	err = g.Wait()
	log.Info("hub stopped")
	return err
}
