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
	cfg, unknown, err := config.Load(environ)
	if err != nil {
		return err
	}
	if err := cfg.ValidateNode(); err != nil {
		return err
	}
	log := newLogger(cfg, logOut)
	redisstore.SetLogger(log)
	for _, k := range unknown {
		log.Warn("unknown variable ignored (typo?)", "name", k)
	}
	// Listen first: a port range decides the port, and the port may be
	// part of the node id that everything below uses.
	ln, udpConns, err := listen.Front(cfg.HTTP.Addr, cfg.UDPAddr(), cfg.ReusePort)
	if err != nil {
		return err
	}
	serving := false
	defer func() {
		if !serving {
			ln.Close()
			closeUDP(udpConns)
		}
	}()
	cfg.NodeID = listen.ExpandNodeID(cfg.NodeID, ln)
	// This process's id in the node's registry of processes (its
	// replicas, the admin page).
	proc := newProcID()

	// Shutdown in order: the front ends (HTTP, UDP) run on frontCtx and,
	// when the signal comes, stop accepting and let the requests in
	// flight finish through the store; the backend (embedded store,
	// pipeliner, allowed set, link) runs on backCtx, which ends only once
	// the front ends are done, so those requests and the link's last
	// batch still reach Redis. A backend component that fails stops the
	// front ends too.
	back, backCtx := errgroup.WithContext(context.WithoutCancel(ctx))
	backCtx, stopBack := context.WithCancel(backCtx)
	defer stopBack()
	front, frontCtx := errgroup.WithContext(ctx)
	frontCtx, stopFront := context.WithCancel(frontCtx)
	defer stopFront()
	go func() { <-backCtx.Done(); stopFront() }()

	redisURL := cfg.RedisURL
	if redisURL == "" {
		emb, err := embedded.Open("127.0.0.1:0")
		if err != nil {
			return err
		}
		defer emb.Close()
		back.Go(func() error { return emb.Run(backCtx) })
		redisURL = "redis://" + emb.Addr()
		log.Info("embedded single-node mode: peers live in this process's memory; set TRACKER_REDIS_URL to use Redis", "store", emb.Addr())
	}
	rdb, err := newRedisClient(redisURL, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()

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
	if err := prepareFunctions(ctx, store.Prepare, log, "TRACKER_REDIS_URL"); err != nil {
		return err
	}

	var peers tracker.Store = store
	if cfg.RedisPipelineWorkers > 0 {
		p := redisstore.NewPipeliner(store, cfg.RedisPipelineWorkers, cfg.RedisPipelineBatch, 16*cfg.RedisPipelineWorkers*cfg.RedisPipelineBatch)
		back.Go(func() error { return p.Run(backCtx) })
		peers = p
	}

	reg := newRegistry()
	redisstore.CountRoundTrips(rdb, newRoundTripCounter(reg))
	// The soft state stands between the tracker core and the store: its
	// refreshes written behind are flushed once the front ends are done.
	soft, err := softstate.New(cfg.Soft, peers, store, log, reg)
	if err != nil {
		return err
	}
	back.Go(func() error { return soft.Run(backCtx) })
	peers = soft
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tracker_redis_functions_missing_total",
		Help: "Calls that found Redis without this release's function library (run tracker redis-setup).",
	}, func() float64 { return float64(store.FunctionsMissing()) }))

	var sink tracker.ChangeSink
	var routes []httpapi.Route
	var linkNode *link.Node
	if cfg.Link.Enabled() {
		linkRDB := rdb
		if cfg.LinkRedisURL() != cfg.RedisURL {
			// The same kind of Redis as the store's (a Redis Cluster or
			// not), as the hub has it.
			c, err := newRedisClient(cfg.LinkRedisURL(), cfg)
			if err != nil {
				return fmt.Errorf("TRACKER_LINK_REDIS_URL: %w", err)
			}
			defer c.Close()
			linkRDB = c
		}
		ln, err := link.NewNode(cfg.Link, cfg.NodeID, redisstore.NewLinkConn(linkRDB), redisstore.NewNodeIndex(rdb, cfg.RedisPrefix, cfg.PeerLifetime), log, reg)
		if err != nil {
			return err
		}
		sink = ln
		linkNode = ln
		// One process id everywhere: the registry's, the panel's and
		// the link's first session, which the hub lists the process by
		// (a failed publish starts a new session; the link status and
		// the hub show the session in force).
		proc = ln.Status().Session
		routes = append(routes, httpapi.Route{Method: "GET", Pattern: "/link/status", Handler: jsonHandler(func() any { return ln.Status() })})
	}
	var gate *allowed.Set
	if cfg.AllowedDir != "" {
		if gate, err = allowed.New(redisstore.NewAllowedKeys(rdb, cfg.RedisPrefix, cfg.NodeID), cfg.AllowedDir, cfg.AllowedRescan, log); err != nil {
			return err
		}
		if linkNode != nil {
			gate.OnChange = linkNode.Hello
			refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_shared_torrents_refused_total",
				Help: "Shared torrents refused from the inbox, by reason: invalid, wrong_name (not filed under its info hash), declined (deleted here before)."}, []string{"reason"})
			reg.MustRegister(refused)
			gate.Share(allowed.ShareOptions{Offer: cfg.ShareOffer, Accept: cfg.ShareAccept, Refused: func(reason string) { refused.WithLabelValues(reason).Inc() }})
		}
		if err := gate.Sync(ctx); err != nil {
			log.Warn("allowed torrents not loaded at start; retrying", "err", err)
		}
		back.Go(func() error { return gate.Run(backCtx) })
		routes = append(routes, torrentRoutes(gate))
	}
	// The link starts after the allowed set's first sync, so that the
	// hub's resync on our hello already sees what we carry and accept.
	if linkNode != nil {
		back.Go(func() error { return linkNode.Run(backCtx) })
	} else {
		// Without the link the node still keeps its swarm index, which
		// its admin page counts what it holds in.
		idx := redisstore.NewNodeIndex(rdb, cfg.RedisPrefix, cfg.PeerLifetime)
		sink = redisstore.IndexSink{X: idx, Node: cfg.NodeID}
		errLog := logsample.New(log, 10*time.Second)
		back.Go(func() error {
			idx.Run(backCtx, backCtx.Done(), func(err error) { errLog.Log(slog.LevelWarn, "swarm index write failed", "err", err) })
			return nil
		})
	}
	opts := tracker.Options{Sink: sink, PeerLifetime: cfg.PeerLifetime}
	if gate != nil {
		opts.Gate = gate
		log.Info("allowed-torrents mode", "dir", cfg.AllowedDir, "torrents", len(gate.List()))
	}
	svc, err := tracker.New(cfg.Tracker, peers, opts, log, reg)
	if err != nil {
		return err
	}
	var udp *udpapi.Server
	if cfg.UDP.Enabled() {
		if udp, err = udpapi.New(cfg.UDP, udpSecret(cfg), svc, log, reg); err != nil {
			return err
		}
	}
	udpAddrs := make([]string, len(udpConns))
	for i, c := range udpConns {
		udpAddrs[i] = c.LocalAddr().String()
	}
	if udp != nil {
		routes = append(routes, httpapi.Route{Method: "GET", Pattern: "/udp/status", Handler: jsonHandler(func() any {
			return udpStatus{Addrs: udpAddrs, Status: udp.Status()}
		})})
	}
	var ws *wsapi.Server
	if cfg.WS.On {
		if ws, err = newWS(cfg, rdb, svc, log, reg); err != nil {
			return err
		}
		routes = append(routes, httpapi.Route{Method: "GET", Pattern: "/ws/status", Handler: jsonHandler(func() any { return ws.Status() })})
	}
	udpPort := 0
	if len(udpConns) > 0 {
		udpPort = udpConns[0].LocalAddr().(*net.UDPAddr).Port
	}
	page := nodePage(cfg.NodeID, store, linkNode, udpPort, ws != nil, reg)
	routes = append(routes, httpapi.Route{Method: "GET", Pattern: "/", Handler: page}, httpapi.Route{Method: "HEAD", Pattern: "/", Handler: page})
	srv, err := httpapi.New(cfg.HTTP, svc, log, reg, reg, routes...)
	if err != nil {
		return err
	}
	if ws != nil {
		ws.ClientAddr = srv.ClientAddr
		srv.UpgradeAnnounce(ws)
	}
	var admin *panel.Panel
	var adminLn net.Listener
	if addr := cfg.AdminAddr(false); addr != "" {
		pn := panel.Node{ID: cfg.NodeID, Proc: proc, Version: version, Token: cfg.AdminToken, Admin: cfg.Admin,
			Store: store, UDP: udp != nil, WS: ws != nil, Gatherer: reg, Registerer: reg, Log: log}
		if linkNode != nil {
			pn.Link = linkNode
		}
		if gate != nil {
			pn.Torrents = gate
		}
		if admin, err = panel.NewNode(pn); err != nil {
			return err
		}
		if adminLn, err = listen.Admin(addr); err != nil {
			return err
		}
		defer func() {
			if !serving {
				adminLn.Close()
			}
		}()
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracker_process_info",
		Help:        "1, labelled with this process's node id and its id in the node's registry of processes (the admin page's, the replicas')",
		ConstLabels: prometheus.Labels{"node": cfg.NodeID, "process": proc}}, func() float64 { return 1 }))
	// A replica of a node that several processes serve on one address:
	// the front ends serve until the replica has left its group (it hands
	// new connections to the others first), not at once.
	serveCtx := frontCtx
	var group *reuseport.Group
	if cfg.ReusePort {
		aff, err := reuseport.NewAffinity(ln, cfg.RedisPrefix+"/"+cfg.NodeID, proc)
		if err != nil {
			return fmt.Errorf("TRACKER_REUSEPORT: %w", err)
		}
		ln = aff
		replicas := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tracker_replicas", Help: "Live processes of this node (replicas sharing its address), as this one last read them."})
		reg.MustRegister(replicas, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracker_replica_connections_handed_total",
			Help: "TCP connections this replica handed to the replica that serves their client address."}, func() float64 { h, _, _ := aff.Counts(); return float64(h) }))
		group = &reuseport.Group{Registry: store, Self: proc, TCP: aff, UDP: udpConns, Log: log, Changed: func(n int) { replicas.Set(float64(n)) }}
		var stopServe context.CancelFunc
		serveCtx, stopServe = context.WithCancel(context.WithoutCancel(frontCtx))
		defer stopServe()
		front.Go(func() error { defer stopServe(); return group.Run(frontCtx) })
		if ok, err := reuseport.MigratesRequests(); !ok {
			log.Warn("TRACKER_REUSEPORT: connections queued at this replica when it stops are reset unless the host sets net.ipv4.tcp_migrate_req=1", "err", err)
		}
	}
	if cfg.UDPFollowsHTTP() && len(udpAddrs) > 0 {
		log.Info("UDP listens on the port of TRACKER_HTTP_ADDR (TRACKER_UDP_ADDR is not set)", "udp", udpAddrs)
	}
	log.Info("tracker node listening", "config", cfg, "addr", ln.Addr().String(), "udp", udpAddrs, "admin", addrOf(adminLn), "process", proc, "version", version)
	if started != nil {
		started <- listening{HTTP: ln.Addr(), Admin: addrOrNil(adminLn)}
	}
	serving = true
	front.Go(func() error { return srv.Serve(serveCtx, ln) })
	front.Go(func() error { return page.Run(frontCtx) })
	if admin != nil {
		front.Go(func() error { return httpapi.Serve(frontCtx, adminLn, admin, cfg.HTTP.ShutdownTimeout, log) })
		front.Go(func() error { return admin.Run(frontCtx) })
	}
	if udp != nil {
		front.Go(func() error { return udp.Serve(serveCtx, udpConns) })
	}
	if ws != nil {
		front.Go(func() error { return ws.Run(frontCtx) })
	}
	if cfg.DebugAddr != "" {
		if err := serveDebug(frontCtx, front, cfg.DebugAddr, log); err != nil {
			return err
		}
	}
	errFront := front.Wait()
	stopBack()
	errBack := back.Wait()
	log.Info("tracker node stopped")
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
