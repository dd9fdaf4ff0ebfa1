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
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

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
	// ReadCache, WriteBehind and WriteBehindQueue are the soft state's
	// (TRACKER_READ_CACHE, TRACKER_WRITE_BEHIND,
	// TRACKER_WRITE_BEHIND_QUEUE; soft.go): ReadCache 0 turns it off.
	ReadCache        time.Duration `env:"-"`
	WriteBehind      time.Duration `env:"-"`
	WriteBehindQueue int           `env:"-"`
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
	AnnounceBatch(ctx context.Context, as []*bittorrent.RTCAnnounce, out []bittorrent.RTCResult, errs []error)
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
	// poll waits for idle connections to be readable; nil where there
	// is none (then each connection keeps a reading goroutine).
	poll *poller
	// soft is the WebRTC peers' soft state (soft.go); nil: off.
	soft *soft

	// peers indexes the peers that announced on this process's sockets,
	// for the signals that arrive for them. Sharded by peer.
	seed  maphash.Seed
	peers [peerShards]peerShard

	// conns is every open connection (for pings and shutdown); perAddr
	// counts them by client address.
	mu      sync.Mutex
	conns   map[*conn]struct{}
	perAddr map[netip.Addr]int
	closing bool
	wg      sync.WaitGroup
	open    atomic.Int64
	ready   atomic.Bool
	writers [writers]*writer
	batch   chan *pendingAnnounce
	// readable hands readable sockets to the readers (conn.go); the
	// poller waits while all are busy.
	readable chan *conn
	slots    atomic.Uint32
	// base is the context of store calls: Run's, without its end (a
	// socket's peers still leave the store at shutdown; each call has
	// the store's timeout). Not the request's: that one ends when the
	// upgrade's handler returns, and a connection would keep its chain
	// of contexts alive. Set by Run before the subscription, so before
	// ready lets a connection in.
	base context.Context
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
		conns: make(map[*conn]struct{}), perAddr: make(map[netip.Addr]int), batch: make(chan *pendingAnnounce, batchQueue), readable: make(chan *conn)}
	for i := range s.peers {
		s.peers[i].m = make(map[member]*conn)
	}
	if s.poll, err = newPoller(); err != nil {
		log.Warn("websocket: no poller; each connection keeps a reading goroutine", "err", err)
		s.poll = nil
	}
	for i := range s.writers {
		s.writers[i] = newWriter()
	}
	if st, ok := store.(SoftStore); ok {
		s.soft = newSoft(cfg, st)
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
	nc, pending, err := s.upgrade(w, r)
	if err != nil {
		s.release(key)
		s.m.refused.WithLabelValues("handshake").Inc()
		return
	}
	now := time.Now().UnixMilli()
	c := &conn{srv: s, nc: nc, addr: addr, key: key, pending: pending, reading: true, slot: s.slots.Add(1)}
	c.lastMsg.Store(now)
	c.lastSeen.Store(now)
	if s.poll != nil && s.poll.add(c) != nil {
		c.pollID = 0 // read by its own goroutine
	}
	if !s.add(c) {
		s.release(key)
		s.poll.remove(c)
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		nc.Write(appendFrame(nil, opClose, closePayload(closeGoingAway, "shutting down")))
		nc.Close()
		return
	}
	// A client may have sent its first message with the handshake: read
	// it now; otherwise wait for one in the poller.
	if c.pollID != 0 && pending == nil {
		switch more, ok := c.idle(); {
		case !ok:
			c.end(nil)
		case more:
			go c.serve()
		}
		return
	}
	go c.serve()
}

// handshakeTimeout bounds writing the handshake's answer.
const handshakeTimeout = 5 * time.Second

// upgrade answers a WebSocket opening handshake and takes the connection
// over from the HTTP server; pending is what the client sent after its
// request (nil: nothing). A refusal is answered here.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) (nc net.Conn, pending []byte, err error) {
	key, err := checkHandshake(r)
	if err != nil {
		he := err.(*handshakeError)
		if he.status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		http.Error(w, he.reason, he.status)
		return nil, nil, err
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot take the connection over", http.StatusInternalServerError)
		return nil, nil, err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		pending, _ = brw.Reader.Peek(n)
		pending = bytes.Clone(pending)
	}
	// The HTTP server's deadlines no longer apply; the front end sets its own.
	nc.SetDeadline(time.Time{})
	nc.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := nc.Write(handshakeResponse(key)); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, pending, nil
}

// Run listens for the signals addressed to this process's sockets, pings
// connections and closes idle ones, until ctx ends. Then it closes every
// connection with a close frame (1001, going away), lets each remove its
// peers from the store, and returns when all are done or the shutdown
// timeout has passed.
func (s *Server) Run(ctx context.Context) error {
	var delivering, reading sync.WaitGroup
	polling := make(chan struct{})
	if s.poll != nil {
		for range readers {
			reading.Add(1)
			go func() {
				defer reading.Done()
				for c := range s.readable {
					c.serve()
				}
			}()
		}
		go func() {
			defer close(polling)
			s.poll.run((*conn).wake)
		}()
	} else {
		close(polling)
	}
	stopWriters := make(chan struct{})
	for _, w := range s.writers {
		delivering.Add(1)
		go func() {
			defer delivering.Done()
			w.run(stopWriters)
		}()
	}
	s.base = context.WithoutCancel(ctx)
	var softening sync.WaitGroup
	stopSoft := make(chan struct{})
	if s.soft != nil {
		s.runSoft(stopSoft, &softening)
	}
	var batching sync.WaitGroup
	for range batchers {
		batching.Add(1)
		go func() {
			defer batching.Done()
			s.runBatcher(s.base)
		}()
	}
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
	// The poller stops once every connection is gone (shutdown closed
	// them all; a reader may still handle the message it holds). Then,
	// with the subscription ended too, nothing delivers any more: readers
	// deliver offers for this process's own peers themselves.
	s.wg.Wait()
	close(s.batch)
	batching.Wait()
	if s.soft != nil {
		close(stopSoft)
		close(s.soft.pub)
		softening.Wait()
	}
	if s.poll != nil {
		s.poll.stop()
	}
	<-polling
	close(s.readable)
	reading.Wait()
	close(stopWriters)
	delivering.Wait()
	return err
}

// ping pings every connection, and closes those idle for too long and
// those from which nothing (not even a pong) came for two pings. It walks
// this process's connections (memory, bounded by MaxConns), never the
// store.
func (s *Server) ping() {
	s.mu.Lock()
	all := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	now := time.Now()
	idle := now.Add(-s.cfg.IdleAfter).UnixMilli()
	deaf := now.Add(-2 * s.cfg.PingEvery).UnixMilli()
	for _, c := range all {
		switch {
		case c.lastMsg.Load() < idle:
			c.closeWith(closePolicyViolation, "idle", "idle")
			c.kill("idle")
		case c.lastSeen.Load() < deaf:
			c.kill("ping_timeout")
		default:
			c.send(opPing, nil)
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
		c.closeWith(closeGoingAway, "tracker shutting down", "shutdown")
	}
	// The close frames are out; a client answers with its own and its
	// connection ends. Those that do not are closed after a short drain.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(min(time.Second, s.cfg.DrainTimeout)):
	}
	for _, c := range all {
		c.kill("shutdown")
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

// Deliver queues a signal from the subscription for the socket of its
// peer, if this process holds it (out.go: it never waits for the socket).
func (h *handler) Deliver(sig bittorrent.Signal) { (*Server)(h).deliver(&sig, false) }

// deliver queues sig for its peer's socket; parsed: its payload is from a
// message this process parsed (valid JSON), not from the store.
func (s *Server) deliver(sig *bittorrent.Signal, parsed bool) {
	c := s.lookup(member{sig.InfoHash, sig.To})
	if c == nil {
		s.m.dropped.WithLabelValues("not_here").Inc()
		return
	}
	b := getBuf()
	defer putBuf(b)
	msg, err := signalMessage((*b)[:0], sig, parsed)
	*b = msg
	if err != nil {
		s.m.dropped.WithLabelValues("bad_signal").Inc()
		return
	}
	if c.write(msg) {
		s.m.delivered.Inc()
	}
}
