// Package config reads a Tracklink process's configuration from the
// environment (TRACKER_* variables): parsing, derived defaults and
// validation, with errors that name the variable. cmd/tracker hands each
// component its own part.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/listen"
	"github.com/tracklink/tracklink/internal/panel"
	"github.com/tracklink/tracklink/internal/softstate"
	"github.com/tracklink/tracklink/internal/torrentfile"
	"github.com/tracklink/tracklink/internal/tracker"
	"github.com/tracklink/tracklink/internal/udpapi"
	"github.com/tracklink/tracklink/internal/wsapi"
)

// EnvPrefix is the prefix of every variable Tracklink reads.
const EnvPrefix = "TRACKER_"

// Config is the whole configuration of a node, read once from the
// environment here and handed to each component as its own part.
type Config struct {
	NodeID string `env:"NODE_ID"`
	// ReusePort makes this process one replica of its node: it shares
	// the node's address (TCP and UDP) with the node's other processes
	// (SO_REUSEPORT), and each client address is served by one of them
	// (package reuseport).
	ReusePort    bool   `env:"REUSEPORT" envDefault:"false"`
	RedisURL     string `env:"REDIS_URL"`
	RedisCluster bool   `env:"REDIS_CLUSTER" envDefault:"false"`
	// RedisClusterRefresh: how old the client's map of the cluster's slots
	// may grow before it is read again (CLUSTER SLOTS, in the background):
	// after a failover, the slots of the dead master are back this long
	// after Redis promotes its replica.
	RedisClusterRefresh time.Duration `env:"REDIS_CLUSTER_REFRESH" envDefault:"1s"`
	RedisPrefix         string        `env:"REDIS_PREFIX" envDefault:"tl"`
	RedisTimeout        time.Duration `env:"REDIS_TIMEOUT" envDefault:"1s"`
	RedisPoolSize       int           `env:"REDIS_POOL_SIZE" envDefault:"0"`
	// TLS of rediss:// URLs: the CA that signed Redis's certificate
	// (default: the system's roots) and a client certificate for Redis's
	// tls-auth-clients. PEM files.
	RedisCAFile   string `env:"REDIS_CA_FILE"`
	RedisCertFile string `env:"REDIS_CERT_FILE"`
	RedisKeyFile  string `env:"REDIS_KEY_FILE"`
	// Announces are sent in pipelines by this many workers (0: one call each).
	RedisPipelineWorkers int `env:"REDIS_PIPELINE_WORKERS" envDefault:"1"`
	RedisPipelineBatch   int `env:"REDIS_PIPELINE_BATCH" envDefault:"64"`
	// A worker whose batch is small waits this long for more (0: never).
	RedisPipelineLinger time.Duration `env:"REDIS_PIPELINE_LINGER" envDefault:"4ms"`
	PeerLifetime        time.Duration `env:"PEER_LIFETIME" envDefault:"0s"`
	CompletedTTL        time.Duration `env:"COMPLETED_TTL" envDefault:"720h"`
	StorePeerIDs        bool          `env:"STORE_PEER_IDS" envDefault:"false"`
	// BindKeys binds a live peer to its key in the store (every replica
	// holds to it): a change sent with another key or none is refused.
	BindKeys bool `env:"BIND_KEYS" envDefault:"true"`
	// New swarms this process may start: a second, and at once.
	NewSwarmsRate  float64    `env:"NEW_SWARMS_RATE" envDefault:"50"`
	NewSwarmsBurst int        `env:"NEW_SWARMS_BURST" envDefault:"100000"`
	LogFormat      string     `env:"LOG_FORMAT" envDefault:"text"`
	LogLevel       slog.Level `env:"LOG_LEVEL" envDefault:"info"`
	DebugAddr      string     `env:"DEBUG_ADDR"`
	// AdminToken opens the admin listener (panel and admin API); empty:
	// there is none.
	AdminToken string `env:"ADMIN_TOKEN"`
	HubName    string `env:"HUB_NAME"`
	// AllowedDir turns on allowed-torrents mode: only its .torrent files.
	AllowedDir    string        `env:"ALLOWED_DIR"`
	AllowedRescan time.Duration `env:"ALLOWED_RESCAN" envDefault:"10s"`
	// Torrent sharing over the link (allowed-torrents mode only).
	// Offering is off unless the operator says so: what a node offers
	// leaves its member as far as the hub's members file allows.
	ShareOffer     bool          `env:"SHARE_OFFER" envDefault:"false"`
	ShareAccept    bool          `env:"SHARE_ACCEPT" envDefault:"false"`
	HubNodeTimeout time.Duration `env:"HUB_NODE_TIMEOUT" envDefault:"1m"`
	// What one member's nodes may share into others per resync (hub):
	// torrents and bytes copied, and the size of one shared torrent.
	HubShareMaxTorrents int   `env:"HUB_SHARE_MAX_TORRENTS" envDefault:"100"`
	HubShareMaxBytes    int64 `env:"HUB_SHARE_MAX_BYTES" envDefault:"33554432"`
	HubShareMaxSize     int64 `env:"HUB_SHARE_MAX_SIZE" envDefault:"4194304"`
	// HubMembers is the file listing the members of a network, each on
	// its own Redis (members.go); empty: one member, TRACKER_REDIS_URL.
	HubMembers string `env:"HUB_MEMBERS"`
	// HubBacklog bounds each member's queue of messages to write.
	HubBacklog int `env:"HUB_BACKLOG" envDefault:"1024"`
	// What one node may make the hub hold or do (hub.Config).
	HubMaxProcesses     int           `env:"HUB_MAX_PROCESSES" envDefault:"256"`
	HubResyncBackoff    time.Duration `env:"HUB_RESYNC_BACKOFF" envDefault:"2s"`
	HubResyncBackoffMax time.Duration `env:"HUB_RESYNC_BACKOFF_MAX" envDefault:"1m"`
	HubResyncMaxSwarms  int           `env:"HUB_RESYNC_MAX_SWARMS" envDefault:"250000"`
	HubResyncMaxPeers   int           `env:"HUB_RESYNC_MAX_PEERS" envDefault:"20000"`
	// HubLeaseTTL is how long a hub's lease on a partition of the relay
	// lasts unless renewed: a dead hub's partitions are taken over within
	// it and a third of it (hub.Config.LeaseTTL).
	HubLeaseTTL time.Duration `env:"HUB_LEASE_TTL" envDefault:"3s"`

	Tracker tracker.Config
	// Soft is the node's soft state: the read cache and the refreshes
	// written behind (docs/soft-state.md).
	Soft  softstate.Config
	HTTP  httpapi.Config
	UDP   udpapi.Config
	Link  link.Config
	Admin panel.Config
	WS    wsapi.Config

	// udpFollowsHTTP: TRACKER_UDP_ADDR is not set and TRACKER_HTTP_ADDR
	// is, so UDP takes HTTP's address (said in the startup log).
	udpFollowsHTTP bool
}

// UDPFollowsHTTP tells that TRACKER_UDP_ADDR is not set and
// TRACKER_HTTP_ADDR is, so UDP took HTTP's address.
func (c Config) UDPFollowsHTTP() bool { return c.udpFollowsHTTP }

// DefaultUDPAddr is TRACKER_UDP_ADDR when neither it nor TRACKER_HTTP_ADDR
// is set (with TRACKER_HTTP_ADDR set, UDP takes its address). It has no
// envDefault tag because caarlos0/env applies a default to a variable set
// empty too, and "TRACKER_UDP_ADDR=" (or "off") turns UDP off.
const DefaultUDPAddr = ":6969"

// The port plan: each port has one meaning wherever Tracklink runs (a
// single node, `tracker cluster`, the compose files), so that no port
// means two things by default. docs/deployment.md's table of ports says the same.
//
//	6969 (and up: 6970, 6971 ...)  a node's announce, HTTP and UDP
//	6968                           a hub's public port (/, /status, /metrics)
//	6980                           a node's admin panel
//	6981                           a hub's admin panel
//	6990 (and up)                  the admin panels of replicas and of tracker cluster's nodes
const (
	DefaultHubAddr        = ":6968"
	DefaultNodeAdminPorts = 6990
)

// LogValue keeps secrets (the Redis URL may carry a password) out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("node_id", c.NodeID),
		slog.String("redis", redactURL(c.RedisURL)),
		slog.Bool("redis_cluster", c.RedisCluster),
		slog.Duration("redis_cluster_refresh", c.RedisClusterRefresh),
		slog.String("http_addr", c.HTTP.Addr),
		slog.Any("udp", c.UDP),
		slog.Duration("interval", c.Tracker.Interval),
		slog.Duration("peer_lifetime", c.PeerLifetime),
		slog.Any("link", c.Link),
		slog.Bool("admin", c.AdminToken != ""),
		slog.String("admin_addr", c.Admin.Addr),
	)
}

func redactURL(u string) string {
	if u == "" {
		return "embedded"
	}
	if at := strings.LastIndexByte(u, '@'); at >= 0 {
		if i := strings.Index(u, "://"); i >= 0 && i < at {
			return u[:i+3] + "REDACTED@" + u[at+1:]
		}
	}
	return u
}

// Load parses environ (NAME=value pairs) into a Config, fills derived
// defaults and validates. Errors name the variable. It also returns the
// TRACKER_ variables that nothing reads (most often a typo).
func Load(environ []string) (Config, []string, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var c Config
	if err := env.ParseWithOptions(&c, env.Options{Prefix: EnvPrefix, Environment: vars}); err != nil {
		return c, nil, namedEnvError(err, vars)
	}
	switch v, set := vars[EnvPrefix+"UDP_ADDR"]; {
	case !set && vars[EnvPrefix+"HTTP_ADDR"] != "":
		// UDP listens where HTTP does: a user who moves a node to another
		// port (a second node on one host) moves all of it.
		c.UDP.Addr = c.HTTP.Addr
		c.udpFollowsHTTP = true
	case !set:
		c.UDP.Addr = DefaultUDPAddr
	case v == "off":
		c.UDP.Addr = ""
	}
	if c.NodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, nil, fmt.Errorf("TRACKER_NODE_ID is not set and the hostname is unknown: %w", err)
		}
		c.NodeID = SanitizeNodeID(h)
	}
	if c.HubName == "" {
		c.HubName = "hub-" + strings.ReplaceAll(c.NodeID, "{port}", "")
	}
	// On a Redis Cluster the link rides sharded pub/sub (see link.Config).
	c.Link.Sharded = c.RedisCluster
	if c.PeerLifetime == 0 {
		c.PeerLifetime = c.Tracker.DefaultPeerLifetime()
	}
	c.Soft.PeerLifetime, c.Soft.PeerIDs, c.Soft.Sample = c.PeerLifetime, c.StorePeerIDs, c.Tracker.NumWantDefault
	c.Soft.ReadLinger = c.RedisPipelineLinger
	if err := c.validate(); err != nil {
		return c, nil, err
	}
	return c, unknownVars(vars), nil
}

func (c Config) validate() error {
	// "{port}" becomes the port a node takes of a range (see listen.go).
	if err := bittorrent.ValidName("TRACKER_NODE_ID", strings.ReplaceAll(c.NodeID, "{port}", "65535")); err != nil {
		return err
	}
	if err := bittorrent.ValidName("TRACKER_REDIS_PREFIX", c.RedisPrefix); err != nil {
		return err
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		return errors.New("TRACKER_REDIS_URL must start with redis:// or rediss://")
	}
	tlsFiles := c.RedisCAFile != "" || c.RedisCertFile != "" || c.RedisKeyFile != ""
	if tlsFiles && !strings.HasPrefix(c.RedisURL, "rediss://") && !strings.HasPrefix(c.Link.RedisURL, "rediss://") {
		return errors.New("TRACKER_REDIS_CA_FILE, TRACKER_REDIS_CERT_FILE and TRACKER_REDIS_KEY_FILE are for TLS: use a rediss:// URL")
	}
	if (c.RedisCertFile == "") != (c.RedisKeyFile == "") {
		return errors.New("TRACKER_REDIS_CERT_FILE and TRACKER_REDIS_KEY_FILE go together (a client certificate and its key)")
	}
	if c.RedisCluster && c.RedisURL == "" {
		return errors.New("TRACKER_REDIS_CLUSTER needs TRACKER_REDIS_URL")
	}
	if c.RedisClusterRefresh < 100*time.Millisecond || c.RedisClusterRefresh > time.Hour {
		return errors.New("TRACKER_REDIS_CLUSTER_REFRESH must be from 100ms to 1h")
	}
	if c.RedisTimeout < time.Millisecond || c.RedisTimeout > time.Minute {
		return errors.New("TRACKER_REDIS_TIMEOUT must be from 1ms to 1m")
	}
	if c.RedisPoolSize < 0 || c.RedisPoolSize > 10000 {
		return errors.New("TRACKER_REDIS_POOL_SIZE must be from 0 (automatic) to 10000")
	}
	if c.RedisPipelineWorkers < 0 || c.RedisPipelineWorkers > 256 {
		return errors.New("TRACKER_REDIS_PIPELINE_WORKERS must be from 0 (off) to 256")
	}
	if c.RedisPipelineBatch < 1 || c.RedisPipelineBatch > 1024 {
		return errors.New("TRACKER_REDIS_PIPELINE_BATCH must be from 1 to 1024")
	}
	if c.RedisPipelineLinger < 0 || c.RedisPipelineLinger > 100*time.Millisecond {
		return errors.New("TRACKER_REDIS_PIPELINE_LINGER must be from 0 (never wait) to 100ms")
	}
	if c.PeerLifetime < c.Tracker.Interval {
		return errors.New("TRACKER_PEER_LIFETIME must not be shorter than TRACKER_ANNOUNCE_INTERVAL (peers would vanish between announces)")
	}
	if c.NewSwarmsRate < 0 || c.NewSwarmsRate > 1e6 {
		return errors.New("TRACKER_NEW_SWARMS_RATE must be from 0 (no cap) to 1000000 a second")
	}
	if c.NewSwarmsBurst < 1 || c.NewSwarmsBurst > 100_000_000 {
		return errors.New("TRACKER_NEW_SWARMS_BURST must be from 1 to 100000000")
	}
	if c.CompletedTTL < c.PeerLifetime {
		return errors.New("TRACKER_COMPLETED_TTL must not be shorter than TRACKER_PEER_LIFETIME")
	}
	if c.DebugAddr != "" {
		host, _, err := net.SplitHostPort(c.DebugAddr)
		if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.IsLoopback() {
			return errors.New("TRACKER_DEBUG_ADDR must be a loopback host:port (pprof must not be public)")
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return errors.New("TRACKER_LOG_FORMAT must be text or json")
	}
	// The panel lets the right token in at any rate (so that wrong ones
	// cannot lock the operator out): its length is what stops guessing.
	if c.AdminToken != "" && (len(c.AdminToken) < 16 || distinctBytes(c.AdminToken) < 8) {
		return errors.New("TRACKER_ADMIN_TOKEN must be at least 16 characters, at least 8 of them different (e.g. openssl rand -hex 16)")
	}
	if err := c.Admin.Validate(); err != nil {
		return err
	}
	if c.Admin.Addr != "" && c.Admin.Addr != "off" {
		if _, err := listen.ParseRange(c.Admin.Addr); err != nil {
			return fmt.Errorf("TRACKER_ADMIN_ADDR=%q: %v (host:port, host:first-last, or off)", c.Admin.Addr, err)
		}
	}
	if err := bittorrent.ValidName("TRACKER_HUB_NAME", c.HubName); err != nil {
		return err
	}
	if c.AllowedRescan < 100*time.Millisecond || c.AllowedRescan > time.Hour {
		return errors.New("TRACKER_ALLOWED_RESCAN must be from 100ms to 1h")
	}
	if c.HubNodeTimeout < time.Second {
		return errors.New("TRACKER_HUB_NODE_TIMEOUT must be at least 1s")
	}
	if c.HubNodeTimeout <= c.Link.MaxSkew {
		return errors.New("TRACKER_HUB_NODE_TIMEOUT must be longer than TRACKER_LINK_MAX_SKEW (a forgotten process's messages must be too old to replay)")
	}
	if c.Link.RedisURL != "" && !strings.HasPrefix(c.Link.RedisURL, "redis://") && !strings.HasPrefix(c.Link.RedisURL, "rediss://") {
		return errors.New("TRACKER_LINK_REDIS_URL must start with redis:// or rediss://")
	}
	if c.HubMaxProcesses < 1 || c.HubMaxProcesses > 65536 {
		return errors.New("TRACKER_HUB_MAX_PROCESSES must be from 1 to 65536")
	}
	if c.HubResyncBackoff < 100*time.Millisecond || c.HubResyncBackoff > time.Hour {
		return errors.New("TRACKER_HUB_RESYNC_BACKOFF must be from 100ms to 1h")
	}
	if c.HubResyncBackoffMax < c.HubResyncBackoff || c.HubResyncBackoffMax > 24*time.Hour {
		return errors.New("TRACKER_HUB_RESYNC_BACKOFF_MAX must be from TRACKER_HUB_RESYNC_BACKOFF to 24h")
	}
	if c.HubResyncMaxSwarms < 1 || c.HubResyncMaxSwarms > 100_000_000 {
		return errors.New("TRACKER_HUB_RESYNC_MAX_SWARMS must be from 1 to 100000000")
	}
	if c.HubResyncMaxPeers < 1 || c.HubResyncMaxPeers > 10_000_000 {
		return errors.New("TRACKER_HUB_RESYNC_MAX_PEERS must be from 1 to 10000000")
	}
	if c.HubLeaseTTL < 300*time.Millisecond || c.HubLeaseTTL > time.Minute {
		return errors.New("TRACKER_HUB_LEASE_TTL must be from 300ms to 1m")
	}
	if c.HubBacklog < 1 || c.HubBacklog > 1_000_000 {
		return errors.New("TRACKER_HUB_BACKLOG must be from 1 to 1000000")
	}
	if c.HubShareMaxTorrents < 1 || c.HubShareMaxTorrents > 100_000 {
		return errors.New("TRACKER_HUB_SHARE_MAX_TORRENTS must be from 1 to 100000")
	}
	if c.HubShareMaxSize < 1024 || c.HubShareMaxSize > torrentfile.MaxSize {
		return fmt.Errorf("TRACKER_HUB_SHARE_MAX_SIZE must be from 1024 to %d bytes", torrentfile.MaxSize)
	}
	if c.HubShareMaxBytes < c.HubShareMaxSize || c.HubShareMaxBytes > 1<<30 {
		return errors.New("TRACKER_HUB_SHARE_MAX_BYTES must be from TRACKER_HUB_SHARE_MAX_SIZE to 1073741824 bytes")
	}
	if c.HubMembers != "" && (c.RedisURL != "" || c.Link.RedisURL != "") {
		return errors.New("TRACKER_HUB_MEMBERS lists each member's Redis: leave TRACKER_REDIS_URL and TRACKER_LINK_REDIS_URL unset")
	}
	if c.Link.Enabled() && c.RedisURL == "" && c.HubMembers == "" {
		return errors.New("the link (TRACKER_LINK_PASSWORD) needs TRACKER_REDIS_URL: the embedded store is private to one process")
	}
	if err := c.Link.Validate(); err != nil {
		return err
	}
	if err := c.Tracker.Validate(); err != nil {
		return err
	}
	if err := c.Soft.Validate(); err != nil {
		return err
	}
	if err := c.UDP.Validate(); err != nil {
		return err
	}
	if c.WS.On {
		if err := c.WS.Validate(); err != nil {
			return err
		}
	}
	return c.HTTP.Validate()
}

// ValidateNode checks what only a tracker node needs (the hub serves no
// UDP). A UDP connection ID must be accepted by every process that may
// serve the same tracker, so their secret is configured, never generated
// per process; only the embedded store, private to one process, may do
// without.
func (c Config) ValidateNode() error {
	if err := c.ValidateListen(true); err != nil {
		return err
	}
	if c.ReusePort {
		if r, _ := listen.ParseRange(c.HTTP.Addr); r.IsRange {
			return errors.New("TRACKER_REUSEPORT: the replicas share one port; TRACKER_HTTP_ADDR names a range")
		}
		if c.RedisURL == "" {
			return errors.New("TRACKER_REUSEPORT: replicas share their node's keyspace in Redis; set TRACKER_REDIS_URL (the embedded store is one process's)")
		}
	}
	if c.UDP.Enabled() && c.UDP.Secret == "" && c.RedisURL != "" {
		return errors.New("TRACKER_UDP_SECRET is required when UDP is on (TRACKER_UDP_ADDR) and peers live in Redis: " +
			"every process serving this tracker must accept the others' connection IDs. Set the same random string " +
			"of at least 16 characters on all of them (e.g. openssl rand -hex 16), or TRACKER_UDP_ADDR=off")
	}
	return nil
}

// UDPAddr is where UDP listens: "" when it is off.
func (c Config) UDPAddr() string {
	if !c.UDP.Enabled() {
		return ""
	}
	return c.UDP.Addr
}

// LinkRedisURL is the Redis that carries the link channel.
func (c Config) LinkRedisURL() string {
	if c.Link.RedisURL != "" {
		return c.Link.RedisURL
	}
	return c.RedisURL
}

// SanitizeNodeID turns a hostname into a valid node id.
func SanitizeNodeID(h string) string {
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > bittorrent.MaxNameLen {
		b = b[:bittorrent.MaxNameLen]
	}
	if len(b) == 0 {
		return "node"
	}
	return string(b)
}

// namedEnvError rewrites caarlos0/env's errors, which name struct fields,
// to name the variable and the value that was refused.
func namedEnvError(err error, vars map[string]string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("configuration: %w", err)
	}
	byField := FieldVars(reflect.TypeOf(Config{}), EnvPrefix)
	msgs := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if name, ok := byField[pe.Name]; ok {
				msgs = append(msgs, fmt.Sprintf("%s=%q is not a valid %s: %v", name, vars[name], pe.Type, pe.Err))
				continue
			}
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New("configuration: " + strings.Join(msgs, "; "))
}

// FieldVars maps the struct's field names (nested structs included) to
// their variable names.
func FieldVars(t reflect.Type, prefix string) map[string]string {
	out := map[string]string{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" {
			for k, v := range FieldVars(f.Type, prefix+f.Tag.Get("EnvPrefix")) {
				out[k] = v
			}
			continue
		}
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			out[f.Name] = prefix + name
		}
	}
	return out
}

// KnownVars lists every variable the program reads.
func KnownVars() map[string]bool {
	known := map[string]bool{}
	for _, v := range []any{&Config{}} {
		params, err := env.GetFieldParamsWithOptions(v, env.Options{Prefix: EnvPrefix})
		if err != nil {
			panic(err) // static struct tags; covered by tests
		}
		for _, p := range params {
			known[p.Key] = true
		}
	}
	return known
}

// unknownVars returns TRACKER_ variables that nothing reads: most often a typo.
func unknownVars(vars map[string]string) []string {
	known := KnownVars()
	var out []string
	for k := range vars {
		if strings.HasPrefix(k, EnvPrefix) && !known[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// distinctBytes counts the different bytes of s.
func distinctBytes(s string) int {
	var seen [256]bool
	n := 0
	for i := range len(s) {
		if !seen[s[i]] {
			seen[s[i]] = true
			n++
		}
	}
	return n
}

// ValidateListen checks TRACKER_HTTP_ADDR and TRACKER_UDP_ADDR: a range
// in TRACKER_UDP_ADDR must be the one in TRACKER_HTTP_ADDR (both take the
// same port). Only a node may listen on a range.
func (c Config) ValidateListen(node bool) error {
	h, err := listen.ParseRange(c.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("TRACKER_HTTP_ADDR=%q: %v", c.HTTP.Addr, err)
	}
	if h.IsRange && !node {
		return fmt.Errorf("TRACKER_HTTP_ADDR=%q: a port range is for tracker nodes; the hub listens on one port", c.HTTP.Addr)
	}
	if !c.UDP.Enabled() {
		return nil
	}
	u, err := listen.ParseRange(c.UDP.Addr)
	if err != nil {
		return fmt.Errorf("TRACKER_UDP_ADDR=%q: %v", c.UDP.Addr, err)
	}
	if u.IsRange && (!h.IsRange || u.First != h.First || u.Last != h.Last) {
		return fmt.Errorf("TRACKER_UDP_ADDR=%q: a port range must be the one of TRACKER_HTTP_ADDR (%q): UDP takes the port HTTP takes", c.UDP.Addr, c.HTTP.Addr)
	}
	if strings.Contains(c.NodeID, "{port}") && !h.IsRange {
		return errors.New("TRACKER_NODE_ID has {port}, which needs a port range in TRACKER_HTTP_ADDR")
	}
	return nil
}

// AdminAddr is where the admin listener listens: TRACKER_ADMIN_ADDR, or
// the role's default; "" when there is none (no TRACKER_ADMIN_TOKEN: no
// panel and no admin API, or TRACKER_ADMIN_ADDR=off).
func (c Config) AdminAddr(hub bool) string {
	switch {
	case c.AdminToken == "" || c.Admin.Addr == "off":
		return ""
	case c.Admin.Addr != "":
		return c.Admin.Addr
	case hub:
		return panel.DefaultHubAddr
	}
	return panel.DefaultNodeAddr
}
