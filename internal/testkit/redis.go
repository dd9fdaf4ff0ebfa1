// Real redis-server processes on free loopback ports, stopped when the
// test (or the test binary) ends, and Redis Clusters of them. Tests of
// anything that touches Redis storage use them; nothing stands in for
// Redis there.

package testkit

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is one redis-server process.
type RedisServer struct {
	Port int
	dir  string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Addr returns host:port of the server.
func (s *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL returns a redis:// URL of the server.
func (s *RedisServer) URL() string { return "redis://" + s.Addr() }

// Client returns a client of the server that is closed at the end of tb.
func (s *RedisServer) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	tb.Cleanup(func() { c.Close() })
	return c
}

// StartRedis starts a redis-server on a free loopback port, stopped at the end of tb.
// Extra arguments are passed to redis-server (e.g. "--maxmemory", "10mb").
func StartRedis(tb testing.TB, extra ...string) *RedisServer {
	tb.Helper()
	s, err := start(tb.TempDir(), extra)
	if err != nil {
		tb.Fatalf("testkit: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

var (
	sharedOnce sync.Once
	shared     *RedisServer
	sharedErr  error
	sharedDirs []string
)

// SharedRedis returns one redis-server for the whole test binary, started on
// first use. Tests that share it keep apart by key prefix or node id. The
// package's TestMain must call Main so that the server is stopped.
func SharedRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	sharedOnce.Do(func() {
		var dir string
		if dir, sharedErr = os.MkdirTemp("", "testkit-redis"); sharedErr == nil {
			sharedDirs = append(sharedDirs, dir)
			shared, sharedErr = start(dir, nil)
		}
	})
	if sharedErr != nil {
		tb.Fatalf("testkit: %v", sharedErr)
	}
	return shared
}

// Main runs the tests and then stops the shared server and cluster, if
// any. Use it as os.Exit(testkit.Main(m)) in TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	if sharedCluster != nil {
		sharedCluster.Stop()
	}
	for _, d := range sharedDirs {
		os.RemoveAll(d)
	}
	return code
}

func start(dir string, extra []string) (*RedisServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server is not installed (apt-get install redis-server): %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &RedisServer{Port: port, dir: dir, args: append([]string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--daemonize", "no",
			"--loglevel", "warning",
		}, extra...)}
		if lastErr = s.Start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// Start (re)starts the process on the server's port and waits until it
// answers PING.
func (s *RedisServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redis-server on port %d is running already", s.Port)
	}
	cmd := exec.Command("redis-server", s.args...)
	logf, err := os.Create(filepath.Join(s.dir, "redis-"+strconv.Itoa(s.Port)+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.Port, tail(logf.Name()))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on port %d did not answer within 10s: %v", s.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the process (like a crash: nothing is saved) and waits for it.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart stops and starts the server on the same port.
func (s *RedisServer) Restart() error {
	s.Stop()
	return s.Start()
}

func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 5 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, " | ")
}

// StartOneNodeCluster starts a one-node Redis Cluster (all 16384 slots on one
// redis-server): enough to prove that every multi-key operation stays in
// one slot, which Redis Cluster refuses otherwise (CROSSSLOT).
func StartOneNodeCluster(tb testing.TB) *RedisServer {
	tb.Helper()
	dir := tb.TempDir()
	s, err := start(dir, []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf")})
	if err != nil {
		tb.Fatalf("testkit: %v", err)
	}
	tb.Cleanup(s.Stop)
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		tb.Fatalf("testkit: cluster addslots: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := c.ClusterInfo(ctx).Result()
		if strings.Contains(info, "cluster_state:ok") {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testkit: cluster not ok within 10s: %s", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RedisCluster is a Redis Cluster of real redis-server processes: masters and
// their replicas, each its own process on loopback.
type RedisCluster struct {
	// Masters[i] serves the i-th equal share of the slots; Replicas[i]
	// replicate Masters[i].
	Masters  []*RedisServer
	Replicas [][]*RedisServer
}

// Servers returns every process of the cluster.
func (c *RedisCluster) Servers() []*RedisServer {
	out := append([]*RedisServer(nil), c.Masters...)
	for _, rs := range c.Replicas {
		out = append(out, rs...)
	}
	return out
}

// URL is a redis:// URL with every process as a seed address
// (redis://first?addr=second&addr=...), as TRACKER_REDIS_URL takes it.
func (c *RedisCluster) URL() string {
	ss := c.Servers()
	u := ss[0].URL()
	for i, s := range ss[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + s.Addr()
	}
	return u
}

// Client returns a cluster client of every seed, closed at the end of tb.
func (c *RedisCluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	var addrs []string
	for _, s := range c.Servers() {
		addrs = append(addrs, s.Addr())
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// StartRedisCluster starts a Redis Cluster of masters masters with replicas
// replicas each (e.g. 3 and 1: six processes), the slots split evenly, and
// waits until every process reports it healthy. nodeTimeout is Redis's
// cluster-node-timeout: how long a master may be unreachable before its
// replica is promoted (Redis's default is 15 s; tests use about 1 s).
// Every process is stopped at the end of tb.
func StartRedisCluster(tb testing.TB, masters, replicas int, nodeTimeout time.Duration) *RedisCluster {
	tb.Helper()
	c, err := startCluster(tb.TempDir(), masters, replicas, nodeTimeout)
	if c != nil {
		tb.Cleanup(c.Stop)
	}
	if err != nil {
		tb.Fatalf("testkit: %v", err)
	}
	return c
}

var (
	sharedClusterOnce sync.Once
	sharedCluster     *RedisCluster
	sharedClusterErr  error
)

// SharedRedisCluster returns one cluster of three masters and three replicas
// for the whole test binary, started on first use and stopped by Main.
// Tests that share it keep apart by key prefix or node id.
func SharedRedisCluster(tb testing.TB) *RedisCluster {
	tb.Helper()
	sharedClusterOnce.Do(func() {
		var dir string
		if dir, sharedClusterErr = os.MkdirTemp("", "testkit-redis-cluster"); sharedClusterErr != nil {
			return
		}
		sharedDirs = append(sharedDirs, dir)
		sharedCluster, sharedClusterErr = startCluster(dir, 3, 1, time.Second)
	})
	if sharedClusterErr != nil {
		tb.Fatalf("testkit: %v", sharedClusterErr)
	}
	return sharedCluster
}

// Stop stops every process of the cluster.
func (c *RedisCluster) Stop() {
	for _, s := range c.Servers() {
		s.Stop()
	}
}

func startCluster(root string, masters, replicas int, nodeTimeout time.Duration) (*RedisCluster, error) {
	c := &RedisCluster{}
	var all []*RedisServer
	var buses []int
	fail := func(err error) (*RedisCluster, error) { return c, err }
	for i := 0; i < masters*(1+replicas); i++ {
		dir := filepath.Join(root, strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fail(err)
		}
		bus, err := freePort()
		if err != nil {
			return fail(err)
		}
		s, err := start(dir, []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
			"--cluster-replica-validity-factor", "0", "--cluster-require-full-coverage", "no"})
		if err != nil {
			return fail(err)
		}
		all, buses = append(all, s), append(buses, bus)
		c.Masters = all[:min(len(all), masters)]
	}
	for i := range masters {
		c.Replicas = append(c.Replicas, all[masters+i*replicas:masters+(i+1)*replicas])
	}
	ctx := context.Background()
	clients := make([]*redis.Client, len(all))
	for i, s := range all {
		clients[i] = redis.NewClient(&redis.Options{Addr: s.Addr()})
		defer clients[i].Close()
	}
	ids := make([]string, len(all))
	for i, cl := range clients {
		id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return fail(fmt.Errorf("cluster myid: %w", err))
		}
		ids[i] = id
		if i > 0 {
			// The bus port is not port+10000 here (that may not exist).
			if err := cl.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", all[0].Port, buses[0]).Err(); err != nil {
				return fail(fmt.Errorf("cluster meet: %w", err))
			}
		}
	}
	per := 16384 / masters
	for i := range masters {
		hi := (i+1)*per - 1
		if i == masters-1 {
			hi = 16383
		}
		if err := clients[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", i*per, hi).Err(); err != nil {
			return fail(fmt.Errorf("cluster addslots: %w", err))
		}
	}
	// A replica can follow its master once it has heard of it.
	if err := waitFor("every process knows every other", func() bool {
		for _, cl := range clients {
			nodes, err := cl.ClusterNodes(ctx).Result()
			if err != nil || strings.Count(strings.TrimSpace(nodes), "\n")+1 != len(all) || strings.Contains(nodes, "handshake") {
				return false
			}
		}
		return true
	}); err != nil {
		return fail(err)
	}
	for i := range masters {
		for j := range replicas {
			if err := clients[masters+i*replicas+j].ClusterReplicate(ctx, ids[i]).Err(); err != nil {
				return fail(fmt.Errorf("cluster replicate: %w", err))
			}
		}
	}
	return c, waitFor("cluster healthy, one view of the slots, replicas attached", func() bool {
		view := ""
		for i, cl := range clients {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			// Every process maps every slot, to the same masters (a
			// process still learning the others' slots answers
			// CLUSTERDOWN for them, though its state is ok).
			slots, err := cl.ClusterSlots(ctx).Result()
			if err != nil {
				return false
			}
			covered, v := 0, []string{}
			for _, s := range slots {
				covered += int(s.End - s.Start + 1)
				if len(s.Nodes) > 0 {
					v = append(v, fmt.Sprintf("%d-%d@%s", s.Start, s.End, s.Nodes[0].Addr))
				}
			}
			sort.Strings(v)
			if covered != 16384 || (i > 0 && strings.Join(v, ",") != view) {
				return false
			}
			view = strings.Join(v, ",")
		}
		for i := range masters {
			rep, err := clients[i].Info(ctx, "replication").Result()
			if err != nil || !strings.Contains(rep, fmt.Sprintf("connected_slaves:%d", replicas)) {
				return false
			}
		}
		return true
	})
}

func waitFor(what string, cond func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Pause stops the process with SIGSTOP (it holds its connections and
// answers nothing) until Resume.
func (s *RedisServer) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (s *RedisServer) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *RedisServer) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return fmt.Errorf("redis-server on port %d is not running", s.Port)
	}
	return s.cmd.Process.Signal(sig)
}
