// Package httpapi is the tracker's HTTP frontend: BEP 3 announce (with BEP 23
// compact and BEP 7 IPv6 peers), BEP 48 scrape, health and readiness probes,
// and Prometheus metrics. It parses and validates everything a client sends,
// asks the store, and bencodes the answer. It owns no state.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Config is the frontend's part of the configuration.
type Config struct {
	Addr            string         `env:"HTTP_ADDR" envDefault:":6969"`
	Interval        time.Duration  `env:"ANNOUNCE_INTERVAL" envDefault:"30m"`
	MinInterval     time.Duration  `env:"MIN_INTERVAL" envDefault:"5m"`
	IntervalJitter  time.Duration  `env:"INTERVAL_JITTER" envDefault:"2m"`
	NumWantDefault  int            `env:"NUMWANT_DEFAULT" envDefault:"50"`
	NumWantMax      int            `env:"NUMWANT_MAX" envDefault:"200"`
	ScrapeMaxHashes int            `env:"SCRAPE_MAX_HASHES" envDefault:"64"`
	TrustedProxies  []netip.Prefix `env:"TRUSTED_PROXIES"`
	AllowIPParam    bool           `env:"ALLOW_IP_PARAM" envDefault:"false"`
	ShutdownTimeout time.Duration  `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
}

// Validate checks the frontend settings; errors name the variable.
func (c Config) Validate() error {
	switch {
	case c.Interval < time.Second:
		return errors.New("TRACKER_ANNOUNCE_INTERVAL must be at least 1s")
	case c.MinInterval <= 0 || c.MinInterval > c.Interval:
		return errors.New("TRACKER_MIN_INTERVAL must be positive and at most TRACKER_ANNOUNCE_INTERVAL")
	case c.IntervalJitter < 0 || c.IntervalJitter > c.Interval/2:
		return errors.New("TRACKER_INTERVAL_JITTER must be between 0 and half of TRACKER_ANNOUNCE_INTERVAL")
	case c.NumWantMax < 1 || c.NumWantMax > 1000:
		return errors.New("TRACKER_NUMWANT_MAX must be from 1 to 1000")
	case c.NumWantDefault < 0 || c.NumWantDefault > c.NumWantMax:
		return errors.New("TRACKER_NUMWANT_DEFAULT must be from 0 to TRACKER_NUMWANT_MAX")
	case c.ScrapeMaxHashes < 1 || c.ScrapeMaxHashes > 1000:
		return errors.New("TRACKER_SCRAPE_MAX_HASHES must be from 1 to 1000")
	case c.ShutdownTimeout <= 0:
		return errors.New("TRACKER_SHUTDOWN_TIMEOUT must be positive")
	}
	return nil
}

// Store is what the frontend needs of the peer store.
type Store interface {
	Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error)
	Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error)
	Ping(ctx context.Context) error
}

// ChangeSink receives every local peer change after the store accepted it
// (the link publishes them). It must not block.
type ChangeSink interface {
	LocalChange(req *bittorrent.AnnounceRequest, res *bittorrent.AnnounceResult)
}

// Gate says whether the node carries a torrent (allowed-torrents mode).
// It must answer from memory: it is asked on every announce.
type Gate interface {
	Carries(ih bittorrent.InfoHash) bool
}

// NotAuthorized is the failure reason for a torrent the node does not carry,
// in the wording clients and users know.
const NotAuthorized = "Requested download is not authorized for use with this tracker."

// Server serves the tracker protocol over HTTP.
type Server struct {
	cfg     Config
	store   Store
	sink    ChangeSink
	gate    Gate
	log     *slog.Logger
	m       *metrics
	handler http.Handler
	extra   []Route
}

// Route is an extra endpoint mounted next to the tracker's own (the link's
// status and admin endpoints).
type Route struct {
	Method, Pattern string
	Handler         http.Handler
}

// New returns a server. sink may be nil (no link). Metrics are registered
// on reg.
func New(cfg Config, store Store, sink ChangeSink, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, extra ...Route) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: store, sink: sink, log: log, m: m, extra: extra}
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

// SetGate restricts the server to the torrents g carries. Call it before
// serving.
func (s *Server) SetGate(g Gate) { s.gate = g }

// ServeHTTP makes the server an http.Handler (for tests and embedding).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

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
	return Serve(ctx, ln, s, s.cfg.ShutdownTimeout, s.log)
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

// genericFailure is what a client sees when the fault is ours, not its own.
const genericFailure = "tracker temporarily unavailable, try again later"

func (s *Server) announce(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome := "ok"
	defer func() {
		s.m.announces.WithLabelValues(outcome).Inc()
		s.m.announceDur.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	}()
	req, err := parseAnnounce(r.URL.RawQuery, announceParams{from: s.clientAddr(r), allowIP: s.cfg.AllowIPParam})
	if err != nil {
		outcome = "client_error"
		writeFailure(w, err)
		return
	}
	if s.gate != nil && !s.gate.Carries(req.InfoHash) {
		outcome = "client_error"
		writeFailure(w, bittorrent.ClientError(NotAuthorized))
		return
	}
	numWant := req.NumWant
	if numWant < 0 {
		numWant = s.cfg.NumWantDefault
	}
	numWant = min(numWant, s.cfg.NumWantMax)
	res, err := s.store.Announce(r.Context(), req, numWant)
	if err != nil {
		outcome = s.storeFailed(w, r, "announce", err, "info_hash", req.InfoHash)
		return
	}
	if s.sink != nil {
		s.sink.LocalChange(req, &res)
	}
	interval := s.cfg.Interval
	if s.cfg.IntervalJitter > 0 {
		interval += rand.N(s.cfg.IntervalJitter)
	}
	writeAnnounce(w, req, &res, interval, s.cfg.MinInterval)
}

func (s *Server) scrape(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome := "ok"
	defer func() {
		s.m.scrapes.WithLabelValues(outcome).Inc()
		s.m.scrapeDur.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	}()
	hashes, err := parseScrape(r.URL.RawQuery, s.cfg.ScrapeMaxHashes)
	if err != nil {
		outcome = "client_error"
		writeFailure(w, err)
		return
	}
	if s.gate != nil {
		for _, ih := range hashes {
			if !s.gate.Carries(ih) {
				outcome = "client_error"
				writeFailure(w, bittorrent.ClientError(NotAuthorized))
				return
			}
		}
	}
	res, err := s.store.Scrape(r.Context(), hashes)
	if err != nil {
		outcome = s.storeFailed(w, r, "scrape", err, "hashes", len(hashes))
		return
	}
	writeScrape(w, res)
}

// storeFailed answers a request whose store call failed and returns the
// outcome to count: a client error is the client's to see; a client that
// went away is not Redis's fault; anything else is logged and counted, and
// the client gets the generic failure reason.
func (s *Server) storeFailed(w http.ResponseWriter, r *http.Request, op string, err error, attrs ...any) string {
	if _, ok := bittorrent.IsClientError(err); ok {
		writeFailure(w, err)
		return "client_error"
	}
	if r.Context().Err() != nil {
		return "canceled"
	}
	s.m.storeErrors.WithLabelValues(op).Inc()
	s.log.Error(op+" failed", append(attrs, "err", err)...)
	writeFailure(w, errors.New(genericFailure))
	return "error"
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if err := s.store.Ping(r.Context()); err != nil {
		s.m.storeErrors.WithLabelValues("ping").Inc()
		http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}
