// Package httpapi is the tracker's HTTP frontend: BEP 3 announce (with BEP 23
// compact and BEP 7 IPv6 peers), BEP 48 scrape, health and readiness probes,
// and Prometheus metrics. It parses and validates everything a client sends,
// asks the tracker service (internal/tracker), and bencodes the answer. It
// owns no state beyond the count of open connections (in all and per
// address, connlimit.go).
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

// Config is the HTTP front end's part of the configuration (the rules it
// shares with UDP are tracker.Config).
type Config struct {
	Addr            string         `env:"HTTP_ADDR" envDefault:":6969"`
	ScrapeMaxHashes int            `env:"SCRAPE_MAX_HASHES" envDefault:"64"`
	TrustedProxies  []netip.Prefix `env:"TRUSTED_PROXIES"`
	// ProxyHeader is the one header a trusted proxy's client address is
	// read from.
	ProxyHeader string `env:"PROXY_HEADER" envDefault:"X-Forwarded-For"`
	// MaxConns bounds the HTTP connections open at once; 0: no bound.
	MaxConns int `env:"HTTP_MAX_CONNS" envDefault:"10000"`
	// MaxConnsPerAddr bounds those of one address (an IPv6 /64); 0: no
	// bound. Trusted proxies are not bound by it, nor is loopback unless
	// TRACKER_LIMIT_LOOPBACK.
	MaxConnsPerAddr int           `env:"HTTP_MAX_CONNS_PER_ADDR" envDefault:"128"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
}

// Validate checks the frontend settings; errors name the variable.
func (c Config) Validate() error {
	switch {
	case c.ScrapeMaxHashes < 1 || c.ScrapeMaxHashes > 1000:
		return errors.New("TRACKER_SCRAPE_MAX_HASHES must be from 1 to 1000")
	case c.ShutdownTimeout <= 0:
		return errors.New("TRACKER_SHUTDOWN_TIMEOUT must be positive")
	case c.MaxConns < 0 || c.MaxConns > 10_000_000:
		return errors.New("TRACKER_HTTP_MAX_CONNS must be from 0 (no bound) to 10000000")
	case c.MaxConnsPerAddr < 0 || c.MaxConnsPerAddr > 1_000_000:
		return errors.New("TRACKER_HTTP_MAX_CONNS_PER_ADDR must be from 0 (no bound) to 1000000")
	case strings.ContainsAny(c.ProxyHeader, " :\t\r\n"):
		return errors.New("TRACKER_PROXY_HEADER must be a header name (X-Forwarded-For, Forwarded, X-Real-IP, ...)")
	}
	return nil
}

// Server serves the tracker protocol over HTTP.
type Server struct {
	cfg     Config
	svc     *tracker.Service
	log     *slog.Logger
	m       *metrics
	handler http.Handler
	extra   []Route
	upgrade http.Handler
}

// Route is an extra endpoint mounted next to the tracker's own (the link's
// status and admin endpoints).
type Route struct {
	Method, Pattern string
	Handler         http.Handler
}

// New returns a server of svc. Metrics are registered on reg; /metrics
// serves gatherer.
func New(cfg Config, svc *tracker.Service, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, extra ...Route) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProxyHeader == "" {
		cfg.ProxyHeader = headerXFF
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, svc: svc, log: log, m: m, extra: extra}
	r := chi.NewRouter()
	r.Get("/announce", s.announce)
	r.Get("/scrape", s.scrape)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	r.Get("/readyz", s.ready)
	r.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	for _, e := range extra {
		r.Method(e.Method, e.Pattern, e.Handler)
	}
	s.handler = r
	return s, nil
}

// ServeHTTP makes the server an http.Handler (for tests and embedding).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.upgrade != nil && r.URL.Path == "/announce" && isWebSocket(r) {
		s.upgrade.ServeHTTP(w, r)
		return
	}
	s.handler.ServeHTTP(w, r)
}

// UpgradeAnnounce hands the WebSocket upgrade requests of /announce (the
// WebTorrent tracker protocol) to h, so that one announce URL serves
// http:// and ws:// clients. Call it before Serve.
func (s *Server) UpgradeAnnounce(h http.Handler) { s.upgrade = h }

// isWebSocket reports whether r asks for a WebSocket upgrade (RFC 6455:
// Connection contains "upgrade", Upgrade is "websocket").
func isWebSocket(r *http.Request) bool {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return true
			}
		}
	}
	return false
}

// ClientAddr is the address of the client of r, as announces see it
// (trusted proxies and the configured forwarding header applied).
func (s *Server) ClientAddr(r *http.Request) netip.Addr { return s.clientAddr(r) }

// Listen opens the listener synchronously, so that a taken port fails at
// once, before anything else starts.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves on ln until ctx ends, then stops accepting, lets requests in
// flight finish for at most the configured shutdown timeout, and closes
// idle keep-alive connections.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.MaxConns > 0 || s.cfg.MaxConnsPerAddr > 0 {
		cl := &capListener{Listener: ln, max: int64(s.cfg.MaxConns), exempt: s.connExempt, opened: s.m.conns, refused: s.m.connsRefused}
		if s.cfg.MaxConnsPerAddr > 0 {
			cl.perAddr = newAddrConns(s.cfg.MaxConnsPerAddr)
		}
		ln = cl
	}
	return Serve(ctx, ln, s, s.cfg.ShutdownTimeout, s.log)
}

// connExempt reports whether connections from a are not capped per
// address: a trusted proxy's carry many clients, and loopback is this
// host's (tools, benchmarks, a local proxy) unless TRACKER_LIMIT_LOOPBACK.
func (s *Server) connExempt(a netip.Addr) bool {
	return s.trusted(a) || (a.IsLoopback() && !s.svc.Config().LimitLoopback)
}

// Serve serves h on ln with the tracker's server limits until ctx ends,
// then shuts down within shutdownTimeout (see Server.Serve).
func Serve(ctx context.Context, ln net.Listener, h http.Handler, shutdownTimeout time.Duration, log *slog.Logger) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

func (s *Server) announce(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var err error
	defer func() {
		outcome := tracker.Outcome(err)
		s.m.announces.WithLabelValues(outcome).Inc()
		s.m.announceDur.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	}()
	var req *bittorrent.AnnounceRequest
	req, err = parseAnnounce(r.URL.RawQuery, announceParams{from: s.clientAddr(r), allowIP: s.svc.Config().AllowIPParam})
	if err != nil {
		writeFailure(w, err)
		return
	}
	var ans tracker.Answer
	if ans, err = s.svc.Announce(r.Context(), req); err != nil {
		s.fail(w, r, err)
		return
	}
	writeAnnounce(w, req, &ans)
}

func (s *Server) scrape(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var err error
	defer func() {
		outcome := tracker.Outcome(err)
		s.m.scrapes.WithLabelValues(outcome).Inc()
		s.m.scrapeDur.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	}()
	var hashes []bittorrent.InfoHash
	if hashes, err = parseScrape(r.URL.RawQuery, s.cfg.ScrapeMaxHashes); err != nil {
		writeFailure(w, err)
		return
	}
	var res []bittorrent.Scrape
	if res, err = s.svc.Scrape(r.Context(), s.clientAddr(r), hashes); err != nil {
		s.fail(w, r, err)
		return
	}
	writeScrape(w, res)
}

// fail answers a request the service refused, unless the client has gone.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	writeFailure(w, errors.New(tracker.ClientMessage(err)))
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.Ping(r.Context()); err != nil {
		http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}
