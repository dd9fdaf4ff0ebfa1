// Package wsapi is the tracker's WebSocket front end: the WebTorrent
// tracker protocol (that of bittorrent-tracker and aquatic_ws) on the
// node's /announce. Browsers announce with WebRTC offers; the tracker hands
// each offer to another WebRTC peer of the swarm and carries the answer
// back. It owns the sockets of this process and an index of the peers that
// announced on them; the swarms live in Redis (a Store), where each peer is
// recorded with the process that holds its socket, so that an offer
// reaches a peer whichever process of the node holds it (the store
// publishes it to that process's channel, and Run delivers what arrives on
// ours).
package wsapi

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/logsample"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// Config is the WebSocket front end's part of the configuration.
type Config struct {
	// On serves WebSocket upgrades of /announce.
	On bool `env:"WS_ENABLED" envDefault:"true"`
	// ClientInterval is the announce interval WebSocket clients are told: they
	// send fresh offers with each announce, so it is short.
	ClientInterval time.Duration `env:"WS_INTERVAL" envDefault:"2m"`
	// MaxSockets bounds this process's WebSocket connections (they also count
	// against TRACKER_HTTP_MAX_CONNS); MaxSocketsPerAddr those of one client
	// address (IPv6: one /64), loopback excepted unless LIMIT_LOOPBACK.
	MaxSockets        int `env:"WS_MAX_CONNS" envDefault:"10000"`
	MaxSocketsPerAddr int `env:"WS_MAX_CONNS_PER_ADDR" envDefault:"16"`
	// MaxMessageBytes bounds one message from a client, in bytes.
	MaxMessageBytes int `env:"WS_MAX_MESSAGE" envDefault:"65536"`
	// PingEvery: a connection is pinged this often, and closed when
	// nothing (not even a pong) came back for two of them.
	PingEvery time.Duration `env:"WS_PING_INTERVAL" envDefault:"30s"`
	// IdleAfter closes a connection that sent no message (pongs do not
	// count) for this long.
	IdleAfter time.Duration `env:"WS_IDLE_TIMEOUT" envDefault:"5m"`

	// Set by the node from other settings, not from the environment.
	MaxScrapeHashes int           `env:"-"`
	DrainTimeout    time.Duration `env:"-"`
}

// Validate checks the settings; errors name the variable.
func (c Config) Validate() error {
	switch {
	case c.ClientInterval < time.Second || c.ClientInterval > time.Hour:
		return errors.New("TRACKER_WS_INTERVAL must be from 1s to 1h")
	case c.MaxSockets < 1 || c.MaxSockets > 10_000_000:
		return errors.New("TRACKER_WS_MAX_CONNS must be from 1 to 10000000")
	case c.MaxSocketsPerAddr < 1:
		return errors.New("TRACKER_WS_MAX_CONNS_PER_ADDR must be at least 1")
	case c.MaxMessageBytes < 4096 || c.MaxMessageBytes > 1<<20:
		return errors.New("TRACKER_WS_MAX_MESSAGE must be from 4096 to 1048576 bytes")
	case c.PingEvery < 100*time.Millisecond:
		return errors.New("TRACKER_WS_PING_INTERVAL must be at least 100ms")
	case c.IdleAfter < c.PingEvery:
		return errors.New("TRACKER_WS_IDLE_TIMEOUT must be at least TRACKER_WS_PING_INTERVAL")
	}
	return nil
}

// PeerLifetime is how long a WebRTC peer counts after its last announce
// if its socket's close is never seen (its process died): two intervals.
func (c Config) PeerLifetime() time.Duration { return 2 * c.ClientInterval }

// Store is what the front end needs of the WebRTC peers' store
// (redisstore.RTC).
type Store interface {
	Announce(ctx context.Context, a *bittorrent.RTCAnnounce) (bittorrent.RTCResult, error)
	Signal(ctx context.Context, s *bittorrent.Signal) (sent, remote bool, err error)
	Leave(ctx context.Context, ih []bittorrent.InfoHash, peers []bittorrent.PeerID) error
	Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error)
}

// Listener is the store's subscription to this process's signals.
type Listener interface {
	Listen(ctx context.Context, h redisstore.SignalHandler) error
}

// Admitter applies the node's rules to a message (tracker.Service): the
// allowed torrents and the per-address rate.
type Admitter interface {
	Allow(src netip.Addr, hashes ...bittorrent.InfoHash) error
	Limited(src netip.Addr) bool
}

var (
	_ Store    = (*redisstore.RTC)(nil)
	_ Listener = (*redisstore.RTC)(nil)
)

// maxSwarmsPerConn bounds the swarms one socket may join (a WebTorrent
// client shares one socket per tracker between all its torrents).
const maxSwarmsPerConn = 64

// writeTimeout bounds one write to a socket; a client that does not read
// loses its connection.
const writeTimeout = 5 * time.Second

// Server serves the WebTorrent protocol. Its zero value is not usable:
// make it with New.
type Server struct {
	cfg      Config
	store    Store
	listener Listener
	admit    Admitter
	// ClientAddr reads a request's client address (the node sets the HTTP
	// server's, trusted proxies applied); nil: the direct peer's. Set it
	// before serving.
	ClientAddr func(*http.Request) netip.Addr
	log        *slog.Logger
	errLog     *logsample.Logger
	m          *metrics
	upgrader   websocket.Upgrader

	// peers indexes the peers that announced on this process's sockets,
	// for the signals that arrive for them. Sharded by peer.
	seed  maphash.Seed
	peers [peerShards]peerShard

	// conns is every open connection (for pings and shutdown); perAddr
	// counts them by client address.
	mu       sync.Mutex
	conns    map[*conn]struct{}
	perAddr  map[netip.Addr]int
	closing  bool
	wg       sync.WaitGroup
	open     atomic.Int64
	ready    atomic.Bool
	delivery [deliveryWorkers]chan delivery
	work     chan job
	// base is the context of store calls: Run's, without its end (a
	// socket's peers still leave the store at shutdown; each call has
	// the store's timeout). Not the request's: that one ends when the
	// upgrade's handler returns, and a connection would keep its chain
	// of contexts alive. Set by Run before the subscription, so before
	// ready lets a connection in.
	base context.Context
}

// handlers is how many messages are handled at once (each mostly waits
// for its store round trip); a connection's reader waits for its own
// message's turn, so a flood from one connection holds one handler.
const handlers = 128

// job is one message for a handler; the verdict goes to c.done.
type job struct {
	c    *conn
	data []byte
}

const peerShards = 64

type peerShard struct {
	mu sync.Mutex
	m  map[member]*conn
}

// member is one peer of one swarm.
type member struct {
	ih   bittorrent.InfoHash
	peer bittorrent.PeerID
}

// deliveryWorkers write the signals that arrive from the store to their
// sockets, each from a bounded queue (full: dropped and counted), so that
// one slow socket holds up only its worker, never the subscription.
const (
	deliveryWorkers = 4
	deliveryQueue   = 1024
)

type delivery struct {
	c   *conn
	msg []byte
}

// New returns a WebSocket server. Metrics are registered on reg. It starts
// nothing: Run does.
func New(cfg Config, store Store, listener Listener, admit Admitter, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxScrapeHashes <= 0 {
		cfg.MaxScrapeHashes = 64
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: store, listener: listener, admit: admit, ClientAddr: directAddr, log: log,
		errLog: logsample.New(log, 10*time.Second), m: m, seed: maphash.MakeSeed(),
		conns: make(map[*conn]struct{}), perAddr: make(map[netip.Addr]int), work: make(chan job)}
	for i := range s.peers {
		s.peers[i].m = make(map[member]*conn)
	}
	s.upgrader = websocket.Upgrader{
		// Small buffers that an idle connection keeps (reads), or none
		// (writes take one from the pool for each message): memory per
		// idle connection is what bounds how many a process holds.
		ReadBufferSize:  512,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		// Browsers send the page's Origin; a tracker serves every page.
		CheckOrigin:      func(*http.Request) bool { return true },
		HandshakeTimeout: 5 * time.Second,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			m.refused.WithLabelValues("handshake").Inc()
			http.Error(w, http.StatusText(status), status)
		},
	}
	for i := range s.delivery {
		s.delivery[i] = make(chan delivery, deliveryQueue)
	}
	return s, nil
}

// ServeHTTP upgrades a WebSocket request of /announce and serves the
// connection. The request's own goroutine returns at once: the connection
// is served by a new one, whose stack stays small while it waits.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	addr := s.ClientAddr(r)
	if !addr.IsValid() {
		s.m.refused.WithLabelValues("no_address").Inc()
		http.Error(w, "no client address", http.StatusBadRequest)
		return
	}
	if !s.ready.Load() {
		// Until this process hears its signalling channel, its peers
		// could be sent offers that reach no one.
		s.m.refused.WithLabelValues("not_ready").Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "WebSocket tracker starting", http.StatusServiceUnavailable)
		return
	}
	key := addrKey(addr)
	if reason := s.reserve(key, s.admit.Limited(addr)); reason != "" {
		s.m.refused.WithLabelValues(reason).Inc()
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many WebSocket connections", http.StatusServiceUnavailable)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.release(key)
		return // the upgrader answered and counted it
	}
	c := &conn{srv: s, ws: ws, addr: addr, key: key, done: make(chan bool, 1)}
	c.lastMsg.Store(time.Now().Unix())
	if !s.add(c) {
		s.release(key)
		c.closeWith(websocket.CloseGoingAway, "shutting down")
		ws.Close()
		return
	}
	go c.serve()
}

// Run listens for the signals addressed to this process's sockets, pings
// connections and closes idle ones, until ctx ends. Then it closes every
// connection with a close frame (1001, going away), lets each remove its
// peers from the store, and returns when all are done or the shutdown
// timeout has passed.
func (s *Server) Run(ctx context.Context) error {
	var handling, delivering sync.WaitGroup
	for range handlers {
		handling.Add(1)
		go func() {
			defer handling.Done()
			for j := range s.work {
				j.c.done <- j.c.handle(j.data)
			}
		}()
	}
	for i := range s.delivery {
		delivering.Add(1)
		go func() {
			defer delivering.Done()
			s.deliverLoop(s.delivery[i])
		}()
	}
	s.base = context.WithoutCancel(ctx)
	listenDone := make(chan error, 1)
	go func() { listenDone <- s.listener.Listen(ctx, (*handler)(s)) }()
	tick := time.NewTicker(s.cfg.PingEvery)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-listenDone:
			break loop
		case <-tick.C:
			s.ping()
		}
	}
	s.shutdown()
	if err == nil {
		err = <-listenDone
	}
	// Handlers stop once every connection is gone (shutdown closed them
	// all; a reader may still hand over the message it holds). Then, with
	// the subscription ended too, nothing delivers any more: handlers
	// deliver offers for this process's own peers themselves.
	s.wg.Wait()
	close(s.work)
	handling.Wait()
	for i := range s.delivery {
		close(s.delivery[i])
	}
	delivering.Wait()
	return err
}

// ping pings every connection and closes those idle for too long. It
// walks this process's connections (memory, bounded by MaxConns), never
// the store.
func (s *Server) ping() {
	s.mu.Lock()
	all := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	idle := time.Now().Add(-s.cfg.IdleAfter).Unix()
	deadline := time.Now().Add(writeTimeout)
	for _, c := range all {
		if c.lastMsg.Load() < idle {
			s.m.closed.WithLabelValues("idle").Inc()
			c.closeWith(websocket.ClosePolicyViolation, "idle")
			c.ws.NetConn().Close()
			continue
		}
		if err := c.ws.WriteControl(websocket.PingMessage, nil, deadline); err != nil {
			c.ws.NetConn().Close()
		}
	}
}

// shutdown closes every connection and waits for their goroutines.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.closing = true
	all := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		s.m.closed.WithLabelValues("shutdown").Inc()
		c.closeWith(websocket.CloseGoingAway, "tracker shutting down")
	}
	// The close frames are out; a client answers with its own and the
	// read loops end. Those that do not are closed after a short drain.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(min(time.Second, s.cfg.DrainTimeout)):
	}
	for _, c := range all {
		c.ws.NetConn().Close()
	}
	select {
	case <-done:
	case <-time.After(s.cfg.DrainTimeout):
		s.log.Warn("websocket connections still closing at the shutdown timeout")
	}
}

// handler is the server as the store's SignalHandler.
type handler Server

func (h *handler) Ready() { (*Server)(h).ready.Store(true) }

func (h *handler) Lost(err error) {
	s := (*Server)(h)
	s.ready.Store(false)
	s.errLog.Log(slog.LevelWarn, "websocket signal subscription lost; resubscribing", "err", err)
}

func (h *handler) Bad() { (*Server)(h).m.dropped.WithLabelValues("bad_signal").Inc() }

// Deliver queues a signal for the socket of its peer, if this process
// holds it.
func (h *handler) Deliver(sig bittorrent.Signal) {
	s := (*Server)(h)
	c := s.lookup(member{sig.InfoHash, sig.To})
	if c == nil {
		s.m.dropped.WithLabelValues("not_here").Inc()
		return
	}
	msg, err := signalMessage(nil, &sig)
	if err != nil {
		s.m.dropped.WithLabelValues("bad_signal").Inc()
		return
	}
	q := s.delivery[maphash.Comparable(s.seed, c)%deliveryWorkers]
	select {
	case q <- delivery{c, msg}:
	default:
		s.m.dropped.WithLabelValues("queue_full").Inc()
	}
}

func (s *Server) deliverLoop(q <-chan delivery) {
	for d := range q {
		if d.c.write(d.msg) {
			s.m.delivered.Inc()
		}
	}
}
