// Package tracker is a node's protocol-independent core: the rules that
// every front end (HTTP, UDP) applies to an announce and a scrape. It owns
// the allowed-torrents check, numwant and its cap, the limits on clients
// (announces and scrapes per address, min interval, each prefix's share of
// new swarms), the store call, the hand-off of each local change to the
// link, the announce interval, and the one place where a failure that is
// not the client's becomes what a client sees. Front ends parse and
// encode; they decide nothing else.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/logsample"
)

// Config is the protocol-independent part of the configuration.
type Config struct {
	Interval       time.Duration `env:"ANNOUNCE_INTERVAL" envDefault:"30m"`
	MinInterval    time.Duration `env:"MIN_INTERVAL" envDefault:"5m"`
	IntervalJitter time.Duration `env:"INTERVAL_JITTER" envDefault:"2m"`
	NumWantDefault int           `env:"NUMWANT_DEFAULT" envDefault:"50"`
	NumWantMax     int           `env:"NUMWANT_MAX" envDefault:"200"`
	AllowIPParam   bool          `env:"ALLOW_IP_PARAM" envDefault:"false"`
	// Announces per second per client address (IPv6: per /64), in bursts
	// of up to RateBurst; 0 turns the limit off. RateSlots bounds the
	// limiter's table (24 bytes a slot). Clients on loopback (this host:
	// benchmarks, tools, a local proxy that is not a trusted one) are not
	// limited, by this or by EnforceMinInterval, unless LimitLoopback.
	RateLimit     float64 `env:"RATE_LIMIT" envDefault:"20"`
	RateBurst     int     `env:"RATE_BURST" envDefault:"300"`
	RateSlots     int     `env:"RATE_LIMIT_SLOTS" envDefault:"262144"`
	LimitLoopback bool    `env:"LIMIT_LOOPBACK" envDefault:"false"`
	// EnforceMinInterval refuses a regular re-announce (no event, or
	// paused) of a peer sooner than 9/10 of MinInterval after its last
	// accepted announce to this process, which a table of PeerTableSlots
	// (16 bytes a slot) of this process's peers remembers.
	EnforceMinInterval bool `env:"ENFORCE_MIN_INTERVAL" envDefault:"true"`
	PeerTableSlots     int  `env:"PEER_TABLE_SLOTS" envDefault:"1048576"`
	// New swarms one prefix may start (see swarmShares): an IPv4 address
	// or IPv6 /64 NewSwarmsPrefixRate a second in bursts of up to
	// NewSwarmsPrefixBurst, its /24 or /56 four times that, its /48 eight
	// times; 0 turns the shares off. Loopback is exempt as from the rate
	// limit. The process's own budget (the store's) holds besides.
	NewSwarmsPrefixRate  float64 `env:"NEW_SWARMS_PREFIX_RATE" envDefault:"1"`
	NewSwarmsPrefixBurst int     `env:"NEW_SWARMS_PREFIX_BURST" envDefault:"1000"`
}

// Validate checks the settings; errors name the variable.
func (c Config) Validate() error {
	switch {
	case c.Interval < time.Second:
		return errors.New("TRACKER_ANNOUNCE_INTERVAL must be at least 1s")
	case c.Interval > 24*time.Hour:
		return errors.New("TRACKER_ANNOUNCE_INTERVAL must be at most 24h")
	case c.MinInterval <= 0 || c.MinInterval > c.Interval:
		return errors.New("TRACKER_MIN_INTERVAL must be positive and at most TRACKER_ANNOUNCE_INTERVAL")
	case c.IntervalJitter < 0 || c.IntervalJitter > c.Interval/2:
		return errors.New("TRACKER_INTERVAL_JITTER must be between 0 and half of TRACKER_ANNOUNCE_INTERVAL")
	case c.NumWantMax < 1 || c.NumWantMax > 1000:
		return errors.New("TRACKER_NUMWANT_MAX must be from 1 to 1000")
	case c.NumWantDefault < 0 || c.NumWantDefault > c.NumWantMax:
		return errors.New("TRACKER_NUMWANT_DEFAULT must be from 0 to TRACKER_NUMWANT_MAX")
	case c.RateLimit < 0 || c.RateLimit > 1e6:
		return errors.New("TRACKER_RATE_LIMIT must be from 0 (off) to 1000000 announces a second")
	case c.RateLimit > 0 && (c.RateBurst < 1 || c.RateBurst > 1e6):
		return errors.New("TRACKER_RATE_BURST must be from 1 to 1000000")
	case c.EnforceMinInterval && (c.PeerTableSlots < limiterShards || c.PeerTableSlots > 1<<26):
		return fmt.Errorf("TRACKER_PEER_TABLE_SLOTS must be from %d to %d", limiterShards, 1<<26)
	case c.RateLimit > 0 && (c.RateSlots < limiterShards || c.RateSlots > 1<<26):
		return fmt.Errorf("TRACKER_RATE_LIMIT_SLOTS must be from %d to %d", limiterShards, 1<<26)
	case c.NewSwarmsPrefixRate < 0 || c.NewSwarmsPrefixRate > 1e6:
		return errors.New("TRACKER_NEW_SWARMS_PREFIX_RATE must be from 0 (off) to 1000000 a second")
	case c.NewSwarmsPrefixRate > 0 && (c.NewSwarmsPrefixBurst < 1 || c.NewSwarmsPrefixBurst > 10_000_000):
		return errors.New("TRACKER_NEW_SWARMS_PREFIX_BURST must be from 1 to 10000000")
	}
	return nil
}

// Store is what the service needs of the peer store.
type Store interface {
	Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error)
	// Batch is Announce and Scrape for many requests at once, in one
	// round trip for the announces and one for all the scrapes (see
	// bittorrent.StoreBatch).
	Batch(ctx context.Context, b *bittorrent.StoreBatch)
	Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error)
	Ping(ctx context.Context) error
}

// ChangeSink receives every local peer change the store wrote, as the store
// described it (the link publishes them). It must not block.
type ChangeSink interface {
	LocalChange(c bittorrent.PeerChange)
}

// Gate says whether the node carries a torrent (allowed-torrents mode).
// It must answer from memory: it is asked on every announce.
type Gate interface {
	Carries(ih bittorrent.InfoHash) bool
}

// Options are the service's optional collaborators; the zero value is a
// node without a link and without allowed-torrents mode.
type Options struct {
	Sink ChangeSink
	Gate Gate
	// PeerLifetime is how long a silent peer counts (its key binds it that
	// long); 0: 1.5 × (interval + jitter), the node's default.
	PeerLifetime time.Duration
}

// NotAuthorized is the failure reason for a torrent the node does not carry,
// in the wording clients and users know.
const NotAuthorized = "Requested download is not authorized for use with this tracker."

// Unavailable is what a client sees when the fault is ours, not its own.
const Unavailable = "tracker temporarily unavailable, try again later"

// RateLimited is the failure reason of an announce over the per-address
// limit.
const RateLimited = "too many announces from your address; try again later"

// ScrapeRateLimited is the failure reason of a scrape over the
// per-address limit.
const ScrapeRateLimited = "too many scrapes from your address; try again later"

// ScrapeHashesPerToken is how many info hashes of a scrape cost one token
// of the address's bucket (rounded up: a scrape of one hash costs what an
// announce costs). Each hash costs Redis five commands in a pipeline
// (three counts, the bucket header, the completed counter), an announce
// one script call of about as many commands and a write; a hash is
// charged as a quarter of an announce, so the default bucket (20 a
// second) gives an address 80 hashes a second, a burst of 1,200.
const ScrapeHashesPerToken = 4

// Service answers announces and scrapes for every front end. It is safe for
// concurrent use.
type Service struct {
	cfg    Config
	store  Store
	opts   Options
	failed *prometheus.CounterVec
	// refused counts announces refused by a limit, by reason;
	// scrapesRefused the same of scrapes.
	refused, scrapesRefused *prometheus.CounterVec
	limiter                 *addrLimiter // nil: no per-address limit
	shares                  *swarmShares // nil: no shares of new swarms by prefix
	peers                   *peerTable   // nil: neither min interval nor keys
	errLog                  *logsample.Logger
}

// New returns a service on store. Its metric (store failures by operation)
// is registered on reg.
func New(cfg Config, store Store, opts Options, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	failed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tracker_redis_errors_total", Help: "Failed store (Redis) operations by operation.",
	}, []string{"op"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tracker_announces_refused_total", Help: "Announces refused by a limit, by reason.",
	}, []string{"reason"})
	scrapesRefused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tracker_scrapes_refused_total", Help: "Scrapes refused by a limit, by reason.",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{failed, refused, scrapesRefused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	s := &Service{cfg: cfg, store: store, opts: opts, failed: failed, refused: refused, scrapesRefused: scrapesRefused, errLog: logsample.New(log, 10*time.Second)}
	if cfg.RateLimit > 0 {
		s.limiter = newAddrLimiter(cfg.RateLimit, cfg.RateBurst, cfg.RateSlots)
	}
	if cfg.NewSwarmsPrefixRate > 0 {
		s.shares = newSwarmShares(cfg.NewSwarmsPrefixRate, cfg.NewSwarmsPrefixBurst)
	}
	if cfg.EnforceMinInterval {
		lifetime := opts.PeerLifetime
		if lifetime <= 0 {
			lifetime = cfg.DefaultPeerLifetime()
		}
		s.peers = newPeerTable(cfg.PeerTableSlots, lifetime)
	}
	return s, nil
}

// DefaultPeerLifetime is how long a silent peer counts unless configured
// (TRACKER_PEER_LIFETIME): 1.5 × (interval + jitter), so that a peer that
// misses one announce is still given out.
func (c Config) DefaultPeerLifetime() time.Duration { return (c.Interval + c.IntervalJitter) * 3 / 2 }

// Config returns the service's settings (front ends read the intervals and
// whether the ip parameter counts).
func (s *Service) Config() Config { return s.cfg }

// Answer is what an announce gets back.
type Answer struct {
	bittorrent.AnnounceResult
	// Interval is the announce interval with its random jitter.
	Interval    time.Duration
	MinInterval time.Duration
}

// Announce records req and returns the swarm's counts and a random sample
// of its peers. The error is a bittorrent.ClientError (the client's fault,
// its text for the client to see), ErrUnavailable (ours: logged, counted),
// or the caller's context error.
func (s *Service) Announce(ctx context.Context, req *bittorrent.AnnounceRequest) (Answer, error) {
	now := time.Now()
	if err := s.admit(req, now); err != nil {
		return Answer{}, err
	}
	res, err := s.store.Announce(ctx, req, s.numWant(req))
	if err != nil {
		return Answer{}, s.announceFailed(ctx, req, err)
	}
	s.accepted(req, res, now)
	return s.answer(req, res), nil
}

// admit applies what the node decides before the store: the torrent is
// carried, the client's address is within its rate, and a regular
// re-announce respects min interval.
func (s *Service) admit(req *bittorrent.AnnounceRequest, now time.Time) error {
	if err := s.allow(req.Source, now, req.InfoHash); err != nil {
		return err
	}
	limited := s.Limited(req.Source)
	// Only a regular announce is judged for its interval (a partial
	// seed's paused is its regular announce, BEP 21).
	if s.peers != nil && limited && (req.Event == bittorrent.None || req.Event == bittorrent.Paused) {
		if since := s.peers.since(req, now); since > 0 && since < s.cfg.MinInterval*9/10 {
			s.refused.WithLabelValues("min_interval").Inc()
			return bittorrent.ClientError(fmt.Sprintf("announced again %s after the last announce; min interval is %s", since.Round(time.Second), s.cfg.MinInterval))
		}
	}
	// Whether the swarm is new only the store knows: it is told whether
	// this one may start one.
	req.NoNewSwarm = s.shares != nil && limited && req.Event != bittorrent.Stopped && !s.shares.may(req.Source, now)
	return nil
}

// Allow applies to a message of another protocol (a WebSocket announce,
// answer or scrape) what admit applies to an announce before the store:
// the torrents are carried, and the sender's address is within its rate
// (the same per-address buckets as HTTP and UDP announces). The error is a
// bittorrent.ClientError.
func (s *Service) Allow(src netip.Addr, hashes ...bittorrent.InfoHash) error {
	return s.allow(src, time.Now(), hashes...)
}

func (s *Service) allow(src netip.Addr, now time.Time, hashes ...bittorrent.InfoHash) error {
	if s.opts.Gate != nil {
		for _, ih := range hashes {
			if !s.opts.Gate.Carries(ih) {
				return bittorrent.ClientError(NotAuthorized)
			}
		}
	}
	if s.limiter != nil && s.Limited(src) && !s.limiter.allow(src, now) {
		s.refused.WithLabelValues("rate_limit").Inc()
		return bittorrent.ClientError(RateLimited)
	}
	return nil
}

// Limited reports whether the per-address limits apply to src (they spare
// loopback unless TRACKER_LIMIT_LOOPBACK).
func (s *Service) Limited(src netip.Addr) bool {
	return src.IsValid() && (s.cfg.LimitLoopback || !src.IsLoopback())
}

// accepted notes an announce the store carried out, for the min interval,
// and a swarm it started, for its prefix's share.
func (s *Service) accepted(req *bittorrent.AnnounceRequest, res bittorrent.AnnounceResult, now time.Time) {
	if s.peers != nil {
		s.peers.record(req, now)
	}
	if res.NewSwarm && s.shares != nil && s.Limited(req.Source) {
		s.shares.charge(req.Source, now)
	}
}

// announceFailed is storeFailed for an announce: a new swarm refused
// because the prefix's share was spent is counted as such.
func (s *Service) announceFailed(ctx context.Context, req *bittorrent.AnnounceRequest, err error) error {
	if req.NoNewSwarm && errors.Is(err, bittorrent.ErrNoNewSwarms) {
		s.refused.WithLabelValues("swarm_cap_prefix").Inc()
		return err
	}
	return s.storeFailed(ctx, "announce", err)
}

// numWant is how many peers the store is asked for: the client's number,
// or the default, and never more than the cap.
func (s *Service) numWant(req *bittorrent.AnnounceRequest) int {
	n := req.NumWant
	if n < 0 {
		n = s.cfg.NumWantDefault
	}
	return min(n, s.cfg.NumWantMax)
}

// answer hands an accepted change to the link and picks the interval.
func (s *Service) answer(req *bittorrent.AnnounceRequest, res bittorrent.AnnounceResult) Answer {
	if s.opts.Sink != nil {
		s.opts.Sink.LocalChange(res.Change)
	}
	interval := s.cfg.Interval
	if s.cfg.IntervalJitter > 0 {
		interval += rand.N(s.cfg.IntervalJitter)
	}
	return Answer{AnnounceResult: res, Interval: interval, MinInterval: s.cfg.MinInterval}
}

// Scrape returns the counts of each swarm, in the order asked, to a
// client at from (the address rate limits count, as for announces).
// Errors are as Announce's. Swarms the store could not read now are
// marked Unavailable (the failure is counted and logged as the store's);
// only when none could be read is the scrape an error.
func (s *Service) Scrape(ctx context.Context, from netip.Addr, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	if err := s.admitScrape(from, hashes, time.Now()); err != nil {
		return nil, err
	}
	res, err := s.store.Scrape(ctx, hashes)
	return s.scraped(ctx, res, err)
}

// scraped sorts what the store answered to a scrape: counts, some maybe
// Unavailable, with the store's error counted and logged; only the error
// when nothing could be read or it was not the store's fault.
func (s *Service) scraped(ctx context.Context, res []bittorrent.Scrape, err error) ([]bittorrent.Scrape, error) {
	if err != nil {
		err = s.storeFailed(ctx, "scrape", err)
		if res == nil || !errors.Is(err, ErrUnavailable) {
			return nil, err
		}
	}
	return res, nil
}

// admitScrape applies what the node decides before the store: every
// torrent is carried, and the address's bucket holds the scrape's tokens
// (one per ScrapeHashesPerToken hashes), which it then gives.
func (s *Service) admitScrape(from netip.Addr, hashes []bittorrent.InfoHash, now time.Time) error {
	if s.opts.Gate != nil {
		for _, ih := range hashes {
			if !s.opts.Gate.Carries(ih) {
				return bittorrent.ClientError(NotAuthorized)
			}
		}
	}
	if s.limiter != nil && s.Limited(from) {
		cost := float64((len(hashes) + ScrapeHashesPerToken - 1) / ScrapeHashesPerToken)
		if !s.limiter.allowN(from, now, max(cost, 1)) {
			s.scrapesRefused.WithLabelValues("rate_limit").Inc()
			return bittorrent.ClientError(ScrapeRateLimited)
		}
	}
	return nil
}

// Ping reports whether the store answers (readiness).
func (s *Service) Ping(ctx context.Context) error {
	if err := s.store.Ping(ctx); err != nil {
		return s.storeFailed(ctx, "ping", err)
	}
	return nil
}

// ErrUnavailable is returned when the store failed for a reason that is not
// the client's. Its text is what the client sees (Unavailable).
var ErrUnavailable = errors.New(Unavailable)

// storeFailed sorts a store error: a client error is the client's to see; a
// caller that went away is not the store's fault; anything else is counted,
// logged (sampled, never a line per request) and becomes ErrUnavailable.
func (s *Service) storeFailed(ctx context.Context, op string, err error) error {
	if ce, ok := bittorrent.IsClientError(err); ok {
		switch ce {
		case bittorrent.ErrNoNewSwarms:
			s.refused.WithLabelValues("swarm_cap").Inc()
		case bittorrent.ErrKeyMismatch:
			s.refused.WithLabelValues("key_mismatch").Inc()
		}
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	s.failed.WithLabelValues(op).Inc()
	s.errLog.Log(slog.LevelError, op+" failed", "err", err)
	return fmt.Errorf("%w (%s: %v)", ErrUnavailable, op, err)
}

// Outcome names how a request ended, for the front ends' metrics: ok,
// client_error, canceled (the client left first) or error (ours).
func Outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrUnavailable):
		return "error"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	if _, ok := bittorrent.IsClientError(err); ok {
		return "client_error"
	}
	return "error"
}

// ClientMessage is the text a client may see for err: a client error's own
// text, else the generic Unavailable.
func ClientMessage(err error) string {
	if ce, ok := bittorrent.IsClientError(err); ok {
		return string(ce)
	}
	return Unavailable
}
