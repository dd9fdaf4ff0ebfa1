// Package loadgen is the project's announce load generator, HTTP or UDP: it
// fills a node with swarms, then announces from many simulated clients (HTTP
// keep-alive connections, or UDP sockets that connect once and then
// announce) for a fixed time and reports throughput, latency percentiles,
// CPU per announce, and (given the node's Redis) Redis round trips and new
// connections per announce and memory per peer. It is a measuring tool, not
// part of the tracker.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tracklink/tracklink/internal/redisstore"
)

// Config of one run.
type Config struct {
	// URL is the node's announce URL: http://host:port/announce, or
	// udp://host:port[/announce] for the UDP mode.
	URL string
	// MetricsURL is the node's /metrics, for round trips and CPU per
	// announce; by default derived from an http:// URL (none for udp://).
	MetricsURL string
	Conns      int           // concurrent clients: keep-alive connections or UDP sockets
	Duration   time.Duration // length of the measured phase
	Torrents   int
	Peers      int // peers per torrent
	NumWant    int
	Redis      string // host:port of the node's Redis, for INFO figures; optional
	// Rate paces the measured phase at this many announces a second in
	// all (0: as fast as the node answers), for steady load in fault and
	// soak runs.
	Rate float64
	// Sources spreads the clients over this many loopback source
	// addresses (127.0.0.2 and up; 0: the system's choice), so that the
	// replicas of a node on one port, which serve each client address in
	// one of them, all take a part. Over HTTP a peer announces from one
	// address always (its number modulo Sources), as a real peer does, so
	// that its re-announces reach the replica that knows it.
	Sources int
	// Mux, for udp:// URLs, drives the measured phase's clients from this
	// many sockets, each shared by its clients and served by one
	// goroutine (mux.go), which costs the load generator less per
	// request; 0: a socket and a goroutine per client. No Rate with it,
	// and at most a minute (connection ids are not renewed).
	Mux int
}

// MaxSources bounds Config.Sources.
const MaxSources = 250

// source returns the local address of client i, or nil.
func (cfg Config) source(i int) net.IP {
	if cfg.Sources <= 0 {
		return nil
	}
	return net.IPv4(127, 0, 0, byte(2+i%cfg.Sources))
}

// Result of one run.
type Result struct {
	Announces     int64
	Failures      int64 // bencoded failure reasons and transport errors
	Refused       int64 // of Failures, the bencoded failure reasons: requests the node took and refused
	Rate          float64
	P50, P99, Max time.Duration
	RoundTrips    float64       // node's Redis round trips per announce (its /metrics); -1 if unknown
	NewRedisConns int64         // connections Redis accepted during the measured phase; -1 without Redis
	BytesPerPeer  float64       // used_memory growth per peer during the fill; -1 without Redis
	RedisCPU      time.Duration // Redis CPU time per announce in the measured phase
	NodeCPU       time.Duration // the node's CPU time per announce (its process_cpu_seconds_total)
	Refreshes     float64       // of the measured announces, the share the node's soft state answered as refreshes (0 without it)
	RedisReads    float64       // read events Redis processed per announce (INFO stats total_reads_processed): round trips, from every client
	RedisCommands string        // the commands that took Redis longest in the measured phase, per announce
	FilledPeers   int
	FirstFailure  string
}

// String formats the result for people.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "announces: %d in the measured phase, %d failures (%d failure reasons, %d transport errors)\n", r.Announces, r.Failures, r.Refused, r.Failures-r.Refused)
	fmt.Fprintf(&b, "rate: %.0f announces/s\n", r.Rate)
	fmt.Fprintf(&b, "latency: p50 %s, p99 %s, max %s\n", r.P50, r.P99, r.Max)
	if r.RoundTrips >= 0 {
		fmt.Fprintf(&b, "redis round trips per announce: %.3f (node's tracker_redis_roundtrips_total)\n", r.RoundTrips)
	}
	if r.NewRedisConns >= 0 {
		fmt.Fprintf(&b, "new redis connections during the measured phase: %d\n", r.NewRedisConns)
		fmt.Fprintf(&b, "redis memory: %.1f bytes per peer (%d peers filled)\n", r.BytesPerPeer, r.FilledPeers)
		fmt.Fprintf(&b, "redis CPU per announce: %s\n", r.RedisCPU)
		fmt.Fprintf(&b, "redis read events per announce: %.3f (INFO total_reads_processed: round trips of every client)\n", r.RedisReads)
		if r.RedisCommands != "" {
			fmt.Fprintf(&b, "redis commands per announce (calls, µs): %s\n", r.RedisCommands)
		}
	}
	if r.NodeCPU > 0 {
		fmt.Fprintf(&b, "node CPU per announce: %s (node + redis: %s)\n", r.NodeCPU, r.NodeCPU+r.RedisCPU)
		fmt.Fprintf(&b, "refreshes: %.1f%% of the announces (the node's tracker_write_behind_total queued and now)\n", 100*r.Refreshes)
	}
	if r.FirstFailure != "" {
		fmt.Fprintf(&b, "first failure: %s\n", r.FirstFailure)
	}
	return b.String()
}

// Run fills the node and measures it.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Conns < 1 || cfg.Torrents < 1 || cfg.Peers < 1 || cfg.Duration <= 0 {
		return Result{}, errors.New("loadgen: conns, torrents, peers and duration must be positive")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return Result{}, fmt.Errorf("loadgen: url: %w", err)
	}
	if cfg.Mux != 0 && (u.Scheme != "udp" || cfg.Mux < 0 || cfg.Mux > cfg.Conns || cfg.Rate > 0 || cfg.Duration > time.Minute) {
		return Result{}, errors.New("loadgen: mux is for udp:// only, from 1 to conns sockets, without a rate, for at most 1m")
	}
	if cfg.Sources < 0 || cfg.Sources > MaxSources {
		return Result{}, fmt.Errorf("loadgen: sources must be from 0 to %d", MaxSources)
	}
	// One transport per source address (one in all without sources).
	hcs := make([]*http.Client, max(1, cfg.Sources))
	for i := range hcs {
		d := &net.Dialer{Timeout: 5 * time.Second}
		if ip := cfg.source(i); ip != nil {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
		tr := &http.Transport{
			MaxIdleConns:        cfg.Conns,
			MaxIdleConnsPerHost: cfg.Conns,
			MaxConnsPerHost:     cfg.Conns,
			IdleConnTimeout:     time.Minute,
			DialContext:         d.DialContext,
		}
		defer tr.CloseIdleConnections()
		hcs[i] = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}

	// The node's counters are read through the first source's client:
	// with replicas on one port, they are the figures of the replica that
	// serves it (per announce it served).
	hc := hcs[0]
	var newClient func(i int) (client, error)
	metricsURL, okMetric := cfg.MetricsURL, `tracker_announces_total{outcome="ok"}`
	switch u.Scheme {
	case "http", "https":
		newClient = func(i int) (client, error) { return &httpClient{hcs: hcs, cfg: cfg}, nil }
		if metricsURL == "" {
			metricsURL = strings.TrimSuffix(cfg.URL, "/announce") + "/metrics"
		}
	case "udp":
		newClient = func(i int) (client, error) { return dialUDP(ctx, u.Host, cfg, cfg.source(i)) }
		okMetric = `tracker_udp_requests_total{action="announce",outcome="ok"}`
	default:
		return Result{}, fmt.Errorf("loadgen: url scheme %q: want http or udp", u.Scheme)
	}
	clients := make([]client, cfg.Conns)
	for i := range clients {
		c, err := newClient(i)
		if err != nil {
			for _, c := range clients[:i] {
				c.Close()
			}
			return Result{}, fmt.Errorf("loadgen: %w", err)
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()

	var rdb RedisStats
	res := Result{RoundTrips: -1, NewRedisConns: -1, BytesPerPeer: -1}
	if cfg.Redis != "" {
		st := redisstore.DialStats(cfg.Redis)
		defer st.Close()
		rdb = st
	}

	// Fill: every peer announces once, so each swarm holds cfg.Peers peers.
	var memBefore int64
	if rdb != nil {
		memBefore = rdb.Info(ctx, "memory", "used_memory")
	}
	total := cfg.Torrents * cfg.Peers
	var next atomic.Int64
	var fillErr atomic.Value
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				if err := c.Announce(ctx, i/cfg.Peers, i%cfg.Peers, true); err != nil {
					fillErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	if e := fillErr.Load(); e != nil {
		return res, fmt.Errorf("loadgen: fill failed: %s", e)
	}
	res.FilledPeers = total
	if rdb != nil {
		res.BytesPerPeer = float64(rdb.Info(ctx, "memory", "used_memory")-memBefore) / float64(total)
	}

	// Measure.
	var connsBefore, readsBefore int64
	var cpuBefore float64
	var cmdsBefore map[string]redisstore.CommandStat
	if rdb != nil {
		connsBefore = rdb.Info(ctx, "stats", "total_connections_received")
		readsBefore = rdb.Info(ctx, "stats", "total_reads_processed")
		cmdsBefore = rdb.Commands(ctx)
		cpuBefore = rdb.CPU(ctx)
	}
	metricsErr := errors.New("no metrics URL")
	var before counters
	if metricsURL != "" {
		before, metricsErr = nodeCounters(ctx, hc, metricsURL, okMetric)
	}
	end := time.Now().Add(cfg.Duration)
	mctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	lat := make([][]time.Duration, cfg.Conns)
	var failures, refused atomic.Int64
	var firstFailure atomic.Value
	start := time.Now()
	measured := clients
	if cfg.Mux > 0 {
		measured = nil // the fill's clients rest; mux has sockets of its own
		mux, err := measureMux(mctx, u.Host, cfg, end)
		if err != nil {
			return res, fmt.Errorf("loadgen: %w", err)
		}
		for i, m := range mux {
			lat[i] = m.lat
			failures.Add(m.failures)
			refused.Add(m.refused)
			if m.first != "" {
				firstFailure.CompareAndSwap(nil, m.first)
			}
		}
	}
	for w, c := range measured {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			ls := make([]time.Duration, 0, 1<<16)
			var every time.Duration // this client's share of the rate
			if cfg.Rate > 0 {
				every = time.Duration(float64(cfg.Conns) / cfg.Rate * 1e9)
			}
			due := time.Now().Add(time.Duration(w) * every / time.Duration(cfg.Conns))
			for mctx.Err() == nil {
				if every > 0 {
					if d := time.Until(due); d > 0 {
						select {
						case <-time.After(d):
						case <-mctx.Done():
						}
						if mctx.Err() != nil {
							break
						}
					}
					due = due.Add(every)
				}
				t0 := time.Now()
				err := c.Announce(mctx, rng.IntN(cfg.Torrents), rng.IntN(cfg.Peers), false)
				// Cut off by the end of the run: not counted. The clock
				// is checked too, since the context's timer may fire late.
				if mctx.Err() != nil || !time.Now().Before(end) {
					break
				}
				ls = append(ls, time.Since(t0))
				if err != nil {
					failures.Add(1)
					if errors.Is(err, errFailure) {
						refused.Add(1)
					}
					firstFailure.CompareAndSwap(nil, err.Error())
				}
			}
			lat[w] = ls
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, ls := range lat {
		all = append(all, ls...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	res.Announces = int64(len(all))
	res.Failures, res.Refused = failures.Load(), refused.Load()
	if f := firstFailure.Load(); f != nil {
		res.FirstFailure = f.(string)
	}
	res.Rate = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		res.P50 = all[len(all)/2]
		res.P99 = all[len(all)*99/100]
		res.Max = all[len(all)-1]
	}
	if rdb != nil {
		res.NewRedisConns = rdb.Info(ctx, "stats", "total_connections_received") - connsBefore
		if res.Announces > 0 {
			res.RedisCPU = time.Duration((rdb.CPU(ctx) - cpuBefore) / float64(res.Announces) * 1e9)
			res.RedisReads = float64(rdb.Info(ctx, "stats", "total_reads_processed")-readsBefore) / float64(res.Announces)
			res.RedisCommands = commandsPer(cmdsBefore, rdb.Commands(ctx), res.Announces)
		}
	}
	if metricsErr == nil {
		after, err := nodeCounters(ctx, hc, metricsURL, okMetric)
		if ann := after.announces - before.announces; err == nil && ann > 0 {
			res.RoundTrips = (after.roundTrips - before.roundTrips) / ann
			res.NodeCPU = time.Duration((after.cpu - before.cpu) / ann * 1e9)
			res.Refreshes = (after.refreshes - before.refreshes) / ann
		}
	}
	return res, nil
}

// client is one simulated client: an HTTP keep-alive connection or a UDP
// socket. It is used by one goroutine at a time.
type client interface {
	// Announce announces peer of torrent: at the fill (started,
	// numwant 0) or in the measured phase (numwant cfg.NumWant).
	Announce(ctx context.Context, torrent, peer int, fill bool) error
	Close()
}

// httpClient announces each peer through its source address's client
// (one per source, sharing keep-alive connections).
type httpClient struct {
	hcs []*http.Client
	cfg Config
	buf []byte
}

func (c *httpClient) Announce(ctx context.Context, torrent, peer int, fill bool) error {
	extra := "&event=started&numwant=0"
	if !fill {
		extra = "&numwant=" + strconv.Itoa(c.cfg.NumWant)
	}
	c.buf = announceURL(c.buf[:0], c.cfg, torrent, peer, extra)
	return do(ctx, c.hcs[(torrent*c.cfg.Peers+peer)%len(c.hcs)], string(c.buf))
}

func (c *httpClient) Close() {}

// nodeCounters reads the node's Redis round trips and successful announces
// from its Prometheus text endpoint.
func nodeCounters(ctx context.Context, hc *http.Client, u, okMetric string) (c counters, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return c, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return c, err
	}
	found := 0
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, perr := strconv.ParseFloat(val, 64)
		if perr != nil {
			continue
		}
		switch name {
		case "tracker_redis_roundtrips_total":
			c.roundTrips = f
			found++
		case okMetric:
			c.announces = f
			found++
		case "process_cpu_seconds_total":
			c.cpu = f
		case `tracker_write_behind_total{result="queued"}`, `tracker_write_behind_total{result="now"}`:
			c.refreshes += f
		}
	}
	if found != 2 {
		return counters{}, errors.New("node metrics lack the round-trip or announce counters")
	}
	return c, nil
}

// counters are the node's counters loadgen reads: Redis round trips,
// successful announces, CPU seconds, and refreshes (re-announces of
// known peers answered without an announce to the store, their writes
// queued or written at once: internal/softstate).
type counters struct {
	roundTrips, announces, cpu, refreshes float64
}

func announceURL(b []byte, cfg Config, torrent, peer int, extra string) []byte {
	b = append(b, cfg.URL...)
	b = append(b, "?info_hash="...)
	b = appendID(b, 't', torrent)
	b = append(b, "&peer_id="...)
	b = appendID(b, 'p', torrent*cfg.Peers+peer)
	b = append(b, "&port="...)
	b = strconv.AppendInt(b, int64(1024+peer), 10)
	// Half of the peers are seeders.
	b = append(b, "&uploaded=0&downloaded=0&left="...)
	b = strconv.AppendInt(b, int64(peer%2), 10)
	// The key a UDP announce of the loadgen carries (the peer's number),
	// in hex, so that a peer is one client over either protocol.
	b = append(b, "&compact=1&key="...)
	b = fmt.Appendf(b, "%08x", uint32(torrent*cfg.Peers+peer))
	return append(b, extra...)
}

// appendID writes a 20-byte id: a kind byte, 19 decimal digits (URL-safe).
func appendID(b []byte, kind byte, n int) []byte {
	b = append(b, kind)
	s := strconv.Itoa(n)
	for i := len(s); i < 19; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

var errFailure = errors.New("failure reason")

func do(ctx context.Context, hc *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	if strings.HasPrefix(string(body), "d14:failure reason") {
		return fmt.Errorf("%w: %s", errFailure, body)
	}
	return nil
}

// RedisStats is the figures the load generator reads of the Redis under
// load (redisstore.Stats).
type RedisStats interface {
	Info(ctx context.Context, section, field string) int64
	CPU(ctx context.Context) float64
	Commands(ctx context.Context) map[string]redisstore.CommandStat
}

var _ RedisStats = (*redisstore.Stats)(nil)

// commandsPer formats the six commands that took Redis longest between
// two readings of its command table, per announce: name, calls, µs.
func commandsPer(before, after map[string]redisstore.CommandStat, announces int64) string {
	type row struct {
		name        string
		calls, usec int64
	}
	var rows []row
	for name, a := range after {
		b := before[name]
		if a.Calls > b.Calls {
			rows = append(rows, row{name, a.Calls - b.Calls, a.Usec - b.Usec})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].usec > rows[j].usec })
	var parts []string
	for _, r := range rows[:min(6, len(rows))] {
		parts = append(parts, fmt.Sprintf("%s %.3f %.2f", r.name, float64(r.calls)/float64(announces), float64(r.usec)/float64(announces)))
	}
	return strings.Join(parts, ", ")
}
