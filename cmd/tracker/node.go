package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/embedded"
	"github.com/tracklink/tracklink/internal/frontpage"
	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/listen"
	"github.com/tracklink/tracklink/internal/logsample"
	"github.com/tracklink/tracklink/internal/panel"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/reuseport"
	"github.com/tracklink/tracklink/internal/softstate"
	"github.com/tracklink/tracklink/internal/tracker"
	"github.com/tracklink/tracklink/internal/udpapi"
	"github.com/tracklink/tracklink/internal/wsapi"
)

// listening is where a node or hub listens, for tests: its public HTTP
// address, and its admin listener's (nil: none).
type listening struct{ HTTP, Admin net.Addr }

// runNode runs a tracker node until ctx ends. When started is not nil it
// receives the node's addresses once the node listens (for tests).
func runNode(ctx context.Context, environ []string, logOut io.Writer, started chan<- listening) error {
	n, err := listenNode(environ, logOut)
	if err != nil {
		return err
	}
	defer n.close()
	n.lifecycles(ctx)
	for _, step := range []func(context.Context) error{n.openStore, n.openLink, n.openAllowed, n.startLinkOrIndex, n.openFronts, n.openAdmin, n.joinReplicas} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	n.serve(started)
	return n.wait()
}

// node is one tracker node process being built and run: runNode's steps
// fill it in order.
type node struct {
	cfg  config.Config
	log  *slog.Logger
	reg  *prometheus.Registry
	proc string // this process's id in the node's registry (its replicas, the admin page)

	ln       net.Listener
	udpConns []*net.UDPConn
	adminLn  net.Listener
	serving  bool     // the listeners belong to the servers now
	closers  []func() // run by close, last first

	// Shutdown in order: the front ends (HTTP, UDP) run on frontCtx and,
	// when the signal comes, stop accepting and let the requests in
	// flight finish through the store; the backend (embedded store,
	// pipeliner, allowed set, link) runs on backCtx, which ends only once
	// the front ends are done, so those requests and the link's last
	// batch still reach Redis. A backend component that fails stops the
	// front ends too.
	front, back         *errgroup.Group
	frontCtx, backCtx   context.Context
	serveCtx            context.Context // frontCtx, or longer for a replica that leaves its group first
	stopFront, stopBack context.CancelFunc

	rdb      redisstore.Client
	store    *redisstore.Store
	peers    tracker.Store // the store, behind the pipeliner and the soft state
	linkNode *link.Node
	gate     *allowed.Set
	sink     tracker.ChangeSink
	routes   []httpapi.Route

	svc   *tracker.Service
	udp   *udpapi.Server
	ws    *wsapi.Server
	srv   *httpapi.Server
	page  *frontpage.Page
	admin *panel.Panel
}

// listenNode reads the configuration and opens the node's sockets first:
// a port range decides the port, and the port may be part of the node id
// that everything after uses.
func listenNode(environ []string, logOut io.Writer) (*node, error) {
	cfg, unknown, err := config.Load(environ)
	if err != nil {
		return nil, err
	}
	if err := cfg.ValidateNode(); err != nil {
		return nil, err
	}
	log := newLogger(cfg, logOut)
	redisstore.SetLogger(log)
	for _, k := range unknown {
		log.Warn("unknown variable ignored (typo?)", "name", k)
	}
	ln, udpConns, err := listen.Front(cfg.HTTP.Addr, cfg.UDPAddr(), cfg.ReusePort)
	if err != nil {
		return nil, err
	}
	cfg.NodeID = listen.ExpandNodeID(cfg.NodeID, ln)
	n := &node{cfg: cfg, log: log, reg: newRegistry(), proc: newProcID(), ln: ln, udpConns: udpConns}
	n.defer_(func() {
		if !n.serving {
			n.ln.Close()
			closeUDP(n.udpConns)
			if n.adminLn != nil {
				n.adminLn.Close()
			}
		}
	})
	return n, nil
}

// defer_ adds f to what close runs.
func (n *node) defer_(f func()) { n.closers = append(n.closers, f) }

func (n *node) close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
}

func (n *node) lifecycles(ctx context.Context) {
	var backCtx, frontCtx context.Context
	n.back, backCtx = errgroup.WithContext(context.WithoutCancel(ctx))
	n.backCtx, n.stopBack = context.WithCancel(backCtx)
	n.defer_(n.stopBack)
	n.front, frontCtx = errgroup.WithContext(ctx)
	n.frontCtx, n.stopFront = context.WithCancel(frontCtx)
	n.defer_(n.stopFront)
	n.serveCtx = n.frontCtx
	go func() { <-n.backCtx.Done(); n.stopFront() }()
}

// openStore opens Redis (or the embedded store) and the peer store in
// front of it: the pipeliner, then the soft state.
func (n *node) openStore(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	redisURL := cfg.RedisURL
	if redisURL == "" {
		emb, err := embedded.Open("127.0.0.1:0")
		if err != nil {
			return err
		}
		n.defer_(func() { emb.Close() })
		n.back.Go(func() error { return emb.Run(n.backCtx) })
		redisURL = "redis://" + emb.Addr()
		log.Info("embedded single-node mode: peers live in this process's memory; set TRACKER_REDIS_URL to use Redis", "store", emb.Addr())
	}
	rdb, err := newRedisClient(redisURL, cfg)
	if err != nil {
		return err
	}
	n.rdb = rdb
	n.defer_(func() { rdb.Close() })
	store, err := redisstore.New(rdb, redisstore.Config{
		Prefix:       cfg.RedisPrefix,
		NodeID:       cfg.NodeID,
		PeerLifetime: cfg.PeerLifetime,
		CompletedTTL: cfg.CompletedTTL,
		Timeout:      cfg.RedisTimeout,
		PeerIDs:      cfg.StorePeerIDs,
		// The cap on new swarms bounds the swarms of this process by
		// rate × lifetime + burst, whatever clients announce.
		NewSwarmRate:  cfg.NewSwarmsRate,
		NewSwarmBurst: cfg.NewSwarmsBurst,
		BindKeys:      cfg.BindKeys,
	})
	if err != nil {
		return err
	}
	n.store = store
	if err := prepareFunctions(ctx, store.Prepare, log, "TRACKER_REDIS_URL"); err != nil {
		return err
	}
	n.peers = store
	if cfg.RedisPipelineWorkers > 0 {
		p := redisstore.NewPipeliner(store, cfg.RedisPipelineWorkers, cfg.RedisPipelineBatch, 16*cfg.RedisPipelineWorkers*cfg.RedisPipelineBatch).
			WithLinger(cfg.RedisPipelineLinger)
		n.back.Go(func() error { return p.Run(n.backCtx) })
		n.peers = p
	}
	redisstore.CountRoundTrips(rdb, newRoundTripCounter(n.reg))
	// The soft state stands between the tracker core and the store: its
	// refreshes written behind are flushed once the front ends are done.
	soft, err := softstate.New(cfg.Soft, n.peers, store, log, n.reg)
	if err != nil {
		return err
	}
	n.back.Go(func() error { return soft.Run(n.backCtx) })
	n.peers = soft
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tracker_redis_functions_missing_total",
		Help: "Calls that found Redis without this release's function library (run tracker redis-setup).",
	}, func() float64 { return float64(store.FunctionsMissing()) }))
	return nil
}

// openLink makes the node's end of the link (not started yet).
func (n *node) openLink(context.Context) error {
	cfg := n.cfg
	if !cfg.Link.Enabled() {
		return nil
	}
	linkRDB := n.rdb
	if cfg.LinkRedisURL() != cfg.RedisURL {
		// The same kind of Redis as the store's (a Redis Cluster or not),
		// as the hub has it.
		c, err := newRedisClient(cfg.LinkRedisURL(), cfg)
		if err != nil {
			return fmt.Errorf("TRACKER_LINK_REDIS_URL: %w", err)
		}
		n.defer_(func() { c.Close() })
		linkRDB = c
	}
	ln, err := link.NewNode(cfg.Link, cfg.NodeID, redisstore.NewLinkConn(linkRDB), redisstore.NewNodeIndex(n.rdb, cfg.RedisPrefix, cfg.PeerLifetime), n.log, n.reg)
	if err != nil {
		return err
	}
	n.sink, n.linkNode = ln, ln
	// One process id everywhere: the registry's, the panel's and the
	// link's first session, which the hub lists the process by (a failed
	// publish starts a new session; the link status and the hub show the
	// session in force).
	n.proc = ln.Status().Session
	n.routes = append(n.routes, httpapi.Route{Method: "GET", Pattern: "/link/status", Handler: jsonHandler(func() any { return ln.Status() })})
	return nil
}

// openAllowed loads allowed-torrents mode's set, when it is on.
func (n *node) openAllowed(ctx context.Context) error {
	cfg := n.cfg
	if cfg.AllowedDir == "" {
		return nil
	}
	gate, err := allowed.New(redisstore.NewAllowedKeys(n.rdb, cfg.RedisPrefix, cfg.NodeID), cfg.AllowedDir, cfg.AllowedRescan, n.log)
	if err != nil {
		return err
	}
	n.gate = gate
	if n.linkNode != nil {
		gate.OnChange = n.linkNode.Hello
		refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_shared_torrents_refused_total",
			Help: "Shared torrents refused from the inbox, by reason: invalid, wrong_name (not filed under its info hash), declined (deleted here before)."}, []string{"reason"})
		n.reg.MustRegister(refused)
		gate.Share(allowed.ShareOptions{Offer: cfg.ShareOffer, Accept: cfg.ShareAccept, Refused: func(reason string) { refused.WithLabelValues(reason).Inc() }})
	}
	if err := gate.Sync(ctx); err != nil {
		n.log.Warn("allowed torrents not loaded at start; retrying", "err", err)
	}
	n.back.Go(func() error { return gate.Run(n.backCtx) })
	n.routes = append(n.routes, torrentRoutes(gate))
	n.log.Info("allowed-torrents mode", "dir", cfg.AllowedDir, "torrents", len(gate.List()))
	return nil
}

// startLinkOrIndex starts the link, after the allowed set's first sync so
// that the hub's resync on our hello already sees what we carry and
// accept; without the link the node still keeps its swarm index, which
// its admin page counts what it holds in.
func (n *node) startLinkOrIndex(context.Context) error {
	if n.linkNode != nil {
		n.back.Go(func() error { return n.linkNode.Run(n.backCtx) })
		return nil
	}
	idx := redisstore.NewNodeIndex(n.rdb, n.cfg.RedisPrefix, n.cfg.PeerLifetime)
	n.sink = redisstore.IndexSink{X: idx, Node: n.cfg.NodeID}
	errLog := logsample.New(n.log, 10*time.Second)
	n.back.Go(func() error {
		idx.Run(n.backCtx, n.backCtx.Done(), func(err error) { errLog.Log(slog.LevelWarn, "swarm index write failed", "err", err) })
		return nil
	})
	return nil
}

// openFronts makes the tracker core and its front ends: HTTP (with the
// public page and the status routes), UDP, WebSocket.
func (n *node) openFronts(context.Context) error {
	cfg, log, reg := n.cfg, n.log, n.reg
	opts := tracker.Options{Sink: n.sink, PeerLifetime: cfg.PeerLifetime}
	if n.gate != nil {
		opts.Gate = n.gate
	}
	svc, err := tracker.New(cfg.Tracker, n.peers, opts, log, reg)
	if err != nil {
		return err
	}
	n.svc = svc
	if cfg.UDP.Enabled() {
		if n.udp, err = udpapi.New(cfg.UDP, udpSecret(cfg), svc, log, reg); err != nil {
			return err
		}
		addrs := n.udpAddrs()
		n.routes = append(n.routes, httpapi.Route{Method: "GET", Pattern: "/udp/status", Handler: jsonHandler(func() any {
			return udpStatus{Addrs: addrs, Status: n.udp.Status()}
		})})
	}
	if cfg.WS.On {
		if n.ws, err = newWS(cfg, n.rdb, svc, log, reg); err != nil {
			return err
		}
		n.routes = append(n.routes, httpapi.Route{Method: "GET", Pattern: "/ws/status", Handler: jsonHandler(func() any { return n.ws.Status() })})
	}
	udpPort := 0
	if len(n.udpConns) > 0 {
		udpPort = n.udpConns[0].LocalAddr().(*net.UDPAddr).Port
	}
	n.page = nodePage(cfg.NodeID, n.store, n.linkNode, udpPort, n.ws != nil, reg)
	n.routes = append(n.routes, httpapi.Route{Method: "GET", Pattern: "/", Handler: n.page}, httpapi.Route{Method: "HEAD", Pattern: "/", Handler: n.page})
	if n.srv, err = httpapi.New(cfg.HTTP, svc, log, reg, reg, n.routes...); err != nil {
		return err
	}
	if n.ws != nil {
		n.ws.ClientAddr = n.srv.ClientAddr
		n.srv.UpgradeAnnounce(n.ws)
	}
	return nil
}

func (n *node) udpAddrs() []string {
	addrs := make([]string, len(n.udpConns))
	for i, c := range n.udpConns {
		addrs[i] = c.LocalAddr().String()
	}
	return addrs
}

// openAdmin makes the admin panel and opens its listener, when there is
// one (TRACKER_ADMIN_TOKEN).
func (n *node) openAdmin(context.Context) error {
	cfg := n.cfg
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracker_process_info",
		Help:        "1, labelled with this process's node id and its id in the node's registry of processes (the admin page's, the replicas')",
		ConstLabels: prometheus.Labels{"node": cfg.NodeID, "process": n.proc}}, func() float64 { return 1 }))
	addr := cfg.AdminAddr(false)
	if addr == "" {
		return nil
	}
	pn := panel.Node{ID: cfg.NodeID, Proc: n.proc, Version: version, Token: cfg.AdminToken, Admin: cfg.Admin,
		Store: n.store, UDP: n.udp != nil, WS: n.ws != nil, Gatherer: n.reg, Registerer: n.reg, Log: n.log}
	if n.linkNode != nil {
		pn.Link = n.linkNode
	}
	if n.gate != nil {
		pn.Torrents = n.gate
	}
	var err error
	if n.admin, err = panel.NewNode(pn); err != nil {
		return err
	}
	n.adminLn, err = listen.Admin(addr)
	return err
}

// joinReplicas makes this process one replica of a node that several
// serve on one address (TRACKER_REUSEPORT): the front ends then serve
// until the replica has left its group (it hands new connections to the
// others first), not at once.
func (n *node) joinReplicas(context.Context) error {
	if !n.cfg.ReusePort {
		return nil
	}
	aff, err := reuseport.NewAffinity(n.ln, n.cfg.RedisPrefix+"/"+n.cfg.NodeID, n.proc)
	if err != nil {
		return fmt.Errorf("TRACKER_REUSEPORT: %w", err)
	}
	n.ln = aff
	replicas := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tracker_replicas", Help: "Live processes of this node (replicas sharing its address), as this one last read them."})
	n.reg.MustRegister(replicas, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracker_replica_connections_handed_total",
		Help: "TCP connections this replica handed to the replica that serves their client address."}, func() float64 { h, _, _ := aff.Counts(); return float64(h) }))
	group := &reuseport.Group{Registry: n.store, Self: n.proc, TCP: aff, UDP: n.udpConns, Log: n.log, Changed: func(c int) { replicas.Set(float64(c)) }}
	var stopServe context.CancelFunc
	n.serveCtx, stopServe = context.WithCancel(context.WithoutCancel(n.frontCtx))
	n.defer_(stopServe)
	n.front.Go(func() error { defer stopServe(); return group.Run(n.frontCtx) })
	if ok, err := reuseport.MigratesRequests(); !ok {
		n.log.Warn("TRACKER_REUSEPORT: connections queued at this replica when it stops are reset unless the host sets net.ipv4.tcp_migrate_req=1", "err", err)
	}
	return nil
}

// serve starts the front ends on the listeners.
func (n *node) serve(started chan<- listening) {
	cfg, log := n.cfg, n.log
	udpAddrs := n.udpAddrs()
	if cfg.UDPFollowsHTTP() && len(udpAddrs) > 0 {
		log.Info("UDP listens on the port of TRACKER_HTTP_ADDR (TRACKER_UDP_ADDR is not set)", "udp", udpAddrs)
	}
	log.Info("tracker node listening", "config", cfg, "addr", n.ln.Addr().String(), "udp", udpAddrs, "admin", addrOf(n.adminLn), "process", n.proc, "version", version)
	if started != nil {
		started <- listening{HTTP: n.ln.Addr(), Admin: addrOrNil(n.adminLn)}
	}
	n.serving = true
	n.front.Go(func() error { return n.srv.Serve(n.serveCtx, n.ln) })
	n.front.Go(func() error { return n.page.Run(n.frontCtx) })
	if n.admin != nil {
		n.front.Go(func() error { return httpapi.Serve(n.frontCtx, n.adminLn, n.admin, cfg.HTTP.ShutdownTimeout, log) })
		n.front.Go(func() error { return n.admin.Run(n.frontCtx) })
	}
	if n.udp != nil {
		n.front.Go(func() error { return n.udp.Serve(n.serveCtx, n.udpConns) })
	}
	if n.ws != nil {
		n.front.Go(func() error { return n.ws.Run(n.frontCtx) })
	}
	if cfg.DebugAddr != "" {
		if err := serveDebug(n.frontCtx, n.front, cfg.DebugAddr, log); err != nil {
			n.front.Go(func() error { return err })
		}
	}
}

// wait waits for the front ends to stop, then stops the backend.
func (n *node) wait() error {
	errFront := n.front.Wait()
	n.stopBack()
	errBack := n.back.Wait()
	n.log.Info("tracker node stopped")
	if errFront != nil {
		return errFront
	}
	return errBack
}

// newWS makes the WebSocket front end: WebRTC peers in the node's
// keyspace, signalling through this process's channel on the same Redis.
func newWS(cfg config.Config, rdb redisstore.Client, svc *tracker.Service, log *slog.Logger, reg prometheus.Registerer) (*wsapi.Server, error) {
	wcfg := cfg.WS
	wcfg.MaxScrapeHashes, wcfg.DrainTimeout = cfg.HTTP.ScrapeMaxHashes, cfg.HTTP.ShutdownTimeout
	wcfg.ReadCache, wcfg.WriteBehind, wcfg.WriteBehindQueue = cfg.Soft.ReadCache, cfg.Soft.WriteBehind, cfg.Soft.WriteBehindQueue
	rtc, err := redisstore.NewRTC(rdb, redisstore.RTCConfig{Prefix: cfg.RedisPrefix, NodeID: cfg.NodeID,
		PeerLifetime: wcfg.PeerLifetime(), CompletedTTL: max(cfg.CompletedTTL, wcfg.PeerLifetime()), Timeout: cfg.RedisTimeout})
	if err != nil {
		return nil, err
	}
	return wsapi.New(wcfg, rtc, rtc, svc, log, reg)
}

// addrOf is a listener's address for the log ("" for none).
func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func addrOrNil(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// udpStatus is what /udp/status shows: where UDP listens and its counts.
type udpStatus struct {
	Addrs []string `json:"addrs"`
	udpapi.Status
}

func closeUDP(conns []*net.UDPConn) {
	for _, c := range conns {
		c.Close()
	}
}

// udpSecret is the key of UDP connection IDs: TRACKER_UDP_SECRET, or, for
// the embedded store only (one process by construction, validateNode
// requires the setting otherwise), a random key of this process.
func udpSecret(cfg config.Config) []byte {
	if cfg.UDP.Secret != "" {
		return []byte(cfg.UDP.Secret)
	}
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// newRedisClient connects to a Redis (or a Redis Cluster) with every
// timeout bounded by TRACKER_REDIS_TIMEOUT, so that a dead Redis costs a
// client one timeout, never a hang.
func newRedisClient(url string, cfg config.Config) (redisstore.Client, error) {
	c, err := redisstore.Dial(url, redisstore.ClientOptions{Cluster: cfg.RedisCluster, Timeout: cfg.RedisTimeout, PoolSize: cfg.RedisPoolSize,
		ClusterRefresh: cfg.RedisClusterRefresh, TLS: func(t *tls.Config) error { return redisTLS(cfg, t) }})
	if ue := (*redisstore.URLError)(nil); errors.As(err, &ue) {
		return nil, fmt.Errorf("TRACKER_REDIS_URL: %w", ue.Err)
	}
	return c, err
}

// redisTLS applies TRACKER_REDIS_CA_FILE and the client certificate to the
// TLS settings of a rediss:// URL (nil for redis://: nothing to do). The
// files are read once, at start, and a bad one stops the start with its
// variable's name.
func redisTLS(cfg config.Config, t *tls.Config) error {
	if t == nil {
		return nil
	}
	t.MinVersion = tls.VersionTLS12
	if cfg.RedisCAFile != "" {
		pem, err := os.ReadFile(cfg.RedisCAFile)
		if err != nil {
			return fmt.Errorf("TRACKER_REDIS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("TRACKER_REDIS_CA_FILE: %s holds no PEM certificate", cfg.RedisCAFile)
		}
		t.RootCAs = pool
	}
	if cfg.RedisCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.RedisCertFile, cfg.RedisKeyFile)
		if err != nil {
			return fmt.Errorf("TRACKER_REDIS_CERT_FILE / TRACKER_REDIS_KEY_FILE: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// newProcID returns a random process id.
func newProcID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}
