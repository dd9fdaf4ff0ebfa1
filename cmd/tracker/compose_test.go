package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"
	"github.com/redis/go-redis/v9"
	"github.com/tracklink/tracklink/internal/testkit"
)

// The compose test runs the real compose files on a real Docker engine
// and checks them from a client host of its own: a network namespace
// joined to this host by a veth pair, with an IPv4 and an IPv6 address,
// so that what the trackers record is a client's address that is neither
// loopback nor Docker's. It needs root and ../shared/docker/setup.sh (which
// it runs); it is the compose tier (testkit.Compose), which the README's
// test command runs with
//
//	TRACKLINK_COMPOSE_TEST=1 go test -count=1 -run TestCompose -timeout 40m ./cmd/tracker/

// netnsClientVar makes the test binary a one-shot tracker client (see
// TestMain): it announces what the variable holds and prints the answer.
// The compose test runs it inside the client's namespace.
const netnsClientVar = "TRACKLINK_NETNS_CLIENT"

type nsRequest struct {
	URL      string
	InfoHash string // hex
	Port     uint16
	Left     int64
	Event    string
}

type nsAnswer struct {
	Peers    []string
	Seeders  int32
	Leechers int32
	Err      string
}

// netnsClientMain is the client's side: anacrolix/torrent's tracker
// client (HTTP or UDP), which this project did not write.
func netnsClientMain() int {
	var req nsRequest
	var ans nsAnswer
	if err := json.Unmarshal([]byte(os.Getenv(netnsClientVar)), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var ih, pid [20]byte
	hex.Decode(ih[:], []byte(req.InfoHash))
	copy(pid[:], fmt.Sprintf("-TL0001-%012d", req.Port))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev := map[string]tracker.AnnounceEvent{"": tracker.None, "started": tracker.Started, "stopped": tracker.Stopped, "completed": tracker.Completed}[req.Event]
	res, err := tracker.Announce{
		TrackerUrl: req.URL,
		Context:    ctx,
		Request:    tracker.AnnounceRequest{InfoHash: ih, PeerId: pid, Port: req.Port, Left: req.Left, Event: ev, NumWant: 200},
	}.Do()
	if err != nil {
		ans.Err = err.Error()
	}
	for _, p := range res.Peers {
		ans.Peers = append(ans.Peers, net.JoinHostPort(p.IP.String(), strconv.Itoa(p.Port)))
	}
	ans.Seeders, ans.Leechers = res.Seeders, res.Leechers
	json.NewEncoder(os.Stdout).Encode(ans)
	return 0
}

// nsClient is a client host (testkit.NetnsHost): host4/host6 are this
// host's addresses on its veth pair (where the trackers, on the host's
// network, are reached), ip4/ip6 the client's.
type nsClient struct {
	host                         *testkit.NetnsHost
	name, host4, host6, ip4, ip6 string
}

func newNSClient(t *testing.T) *nsClient {
	t.Helper()
	h := testkit.NewNetns(t, "tlcli")
	return &nsClient{host: h, name: h.NS, host4: h.Outer4, host6: h.Outer6, ip4: h.Inner4, ip6: h.Inner6}
}

// announce runs one announce from inside the namespace.
func (c *nsClient) announce(t *testing.T, url, ih string, port uint16, left int64, event string) nsAnswer {
	t.Helper()
	req, _ := json.Marshal(nsRequest{URL: url, InfoHash: hex.EncodeToString([]byte(ih)), Port: port, Left: left, Event: event})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", c.name, os.Args[0])
	cmd.Env = append(os.Environ(), netnsClientVar+"="+string(req))
	out, err := cmd.Output()
	var ans nsAnswer
	if err != nil || json.Unmarshal(out, &ans) != nil {
		t.Fatalf("client in %s: %v: %s", c.name, err, out)
	}
	return ans
}

// sees reports whether the tracker at url, asked by an observer peer of
// the client (a seeder on port observer), returns peer want. The observer
// announces "started" each time: a regular re-announce this soon would be
// refused (min interval).
func (c *nsClient) sees(t *testing.T, url, ih string, observer uint16, want string) bool {
	t.Helper()
	a := c.announce(t, url, ih, observer, 0, "started")
	return a.Err == "" && slices.Contains(a.Peers, want)
}

// composeProject is one compose file brought up under a project name of
// the test's own, with its own env file.
type composeProject struct {
	t          *testing.T
	name, file string
	envFile    string
}

func (p *composeProject) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"compose", "-p", p.name, "-f", p.file, "--env-file", p.envFile}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (p *composeProject) must(timeout time.Duration, args ...string) string {
	p.t.Helper()
	out, err := p.run(timeout, args...)
	if err != nil {
		logs, _ := p.run(time.Minute, "logs", "--no-color", "--tail", "40")
		p.t.Fatalf("docker compose %v: %v\n%s\nlogs:\n%s", args, err, out, logs)
	}
	return out
}

// up brings the project up and waits for every container's health check.
func (p *composeProject) up(args ...string) time.Duration {
	p.t.Helper()
	start := time.Now()
	p.must(20*time.Minute, append([]string{"up", "-d", "--build", "--wait", "--wait-timeout", "300"}, args...)...)
	return time.Since(start)
}

// healthy returns the project's containers that are running and healthy
// (or have no health check), and all of them, but for the one-shot setup
// services (tracker redis-setup), which must have exited 0.
func (p *composeProject) containers() (healthy, all []string) {
	p.t.Helper()
	out := p.must(time.Minute, "ps", "-a", "--format", "{{.Name}} {{.State}} {{.ExitCode}} {{.Health}}")
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		if strings.Contains(f[0], "-setup") {
			if f[1] != "exited" || f[2] != "0" {
				p.t.Errorf("setup container: %s, want exited with 0", l)
			}
			continue
		}
		all = append(all, f[0])
		if f[1] == "running" && (len(f) == 3 || f[3] == "healthy") {
			healthy = append(healthy, f[0])
		}
	}
	return healthy, all
}

// writeEnv writes the project's .env: the README's required settings and
// extra.
func (p *composeProject) writeEnv(extra ...string) {
	p.t.Helper()
	lines := append([]string{
		"TRACKER_LINK_PASSWORD=compose-test-link-password",
		"TRACKER_UDP_SECRET=compose-test-udp-secret-0123",
		"REDIS_HUB_PASSWORD=compose-test-hub-0123456789",
		"REDIS_NODES_PASSWORD=compose-test-nodes-0123456789",
		"REDIS_ALPHA_PASSWORD=compose-test-alpha-0123456789",
		"REDIS_BETA_PASSWORD=compose-test-beta-0123456789",
		"REDIS_ALPHA_HUB_PASSWORD=compose-test-alpha-hub-0123456789",
		"REDIS_BETA_HUB_PASSWORD=compose-test-beta-hub-0123456789",
		"REDIS_ADMIN_PASSWORD=compose-test-admin-0123456789",
		"REDIS_ALPHA_ADMIN_PASSWORD=compose-test-alpha-admin-0123456789",
		"REDIS_BETA_ADMIN_PASSWORD=compose-test-beta-admin-0123456789",
		// Node-only: must reach no service of docker-compose.yml.
		"TRACKER_NODE_ID=leaked-from-env",
		"TRACKER_ADMIN_TOKEN=" + composeAdminToken,
	}, extra...)
	if err := os.WriteFile(p.envFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

const composeAdminToken = "compose-test-admin-token-0123"

var panelNameRE = regexp.MustCompile(`<span class="name">([^<]*)</span>`)

// checkPanels signs in to the admin panel on each loopback port with the
// compose test's token and counts the names their pages show.
func checkPanels(t *testing.T, ports []int, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for _, port := range ports {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 5 * time.Second}
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		resp, err := c.PostForm(base+"/signin", url.Values{"token": {composeAdminToken}})
		if err != nil {
			t.Fatalf("admin panel at %d: %v", port, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := panelNameRE.FindSubmatch(b)
		if resp.StatusCode != 200 || m == nil || !bytes.Contains(b, []byte("Sign out")) {
			t.Fatalf("admin panel at %d after sign-in: %s", port, resp.Status)
		}
		got[string(m[1])]++
	}
	if !maps.Equal(got, want) {
		t.Fatalf("admin panels show %v, want %v", got, want)
	}
}

// liveNodes reads the hub's /status: the live nodes and their live
// processes, and the resync count.
func liveNodes(t *testing.T, hubURL string) (map[string]int, int) {
	t.Helper()
	st, err := hubStatus(hubURL)
	if err != nil {
		return nil, -1
	}
	live := map[string]int{}
	for id, n := range st.Nodes {
		if !n.Live {
			continue
		}
		for _, p := range n.Processes {
			if p.Live {
				live[id]++
			}
		}
	}
	return live, int(st.Resyncs)
}

// waitNodes waits until the hub lists exactly the live nodes of want
// (node id: live processes; 0 for any number). A process that renewed
// its link session (after a failed publish, e.g. while Redis restarts)
// leaves its old session listed until TRACKER_HUB_NODE_TIMEOUT.
func waitNodes(t *testing.T, hubURL string, want map[string]int, what string) {
	t.Helper()
	var got map[string]int
	deadline := time.Now().Add(20 * time.Second)
	for got, _ = liveNodes(t, hubURL); !sameNodes(got, want); got, _ = liveNodes(t, hubURL) {
		if time.Now().After(deadline) {
			st, _ := hubStatus(hubURL)
			t.Fatalf("%s: the hub lists %v, want %v; status %+v", what, got, want, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sameNodes(got, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] == 0 || v != 0 && got[k] != v {
			return false
		}
	}
	return true
}

// dockerSetup runs ../shared/docker/setup.sh (next to the repository, or
// where TRACKLINK_DOCKER_SETUP says).
func dockerSetup(t *testing.T, repo string) {
	t.Helper()
	script := os.Getenv("TRACKLINK_DOCKER_SETUP")
	if script == "" {
		script = filepath.Join(repo, "..", "shared", "docker", "setup.sh")
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("the compose test needs the Docker setup script (TRACKLINK_DOCKER_SETUP, default ../shared/docker/setup.sh): %v", err)
	}
	start := time.Now()
	if out, err := exec.Command("bash", script, repo).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	t.Logf("compose: docker setup took %s", time.Since(start).Round(time.Second))
}

func TestCompose(t *testing.T) {
	testkit.Compose.Require(t)
	testkit.NeedNetns(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dockerSetup(t, repo)
	t.Run("default", func(t *testing.T) { testComposeDefault(t, repo) })
	t.Run("friends", func(t *testing.T) { testComposeFriends(t, repo) })
}

// testComposeDefault: docker-compose.yml with three tracker replicas.
func testComposeDefault(t *testing.T, repo string) {
	hubPort := testkit.FreePort(t)
	p := &composeProject{t: t, name: "tlcompose-test", file: filepath.Join(repo, "docker-compose.yml"), envFile: filepath.Join(t.TempDir(), ".env")}
	hubAdmin := testkit.FreePort(t)
	p.writeEnv(fmt.Sprintf("TRACKLINK_HUB_PORT=%d", hubPort), fmt.Sprintf("TRACKLINK_HUB_ADMIN_PORT=%d", hubAdmin),
		fmt.Sprintf("TRACKLINK_REDIS_PORT=%d", testkit.FreePort(t)), "TRACKER_LINK_HEARTBEAT=500ms")
	t.Cleanup(func() { downAndCheck(t, p) })
	p.run(2*time.Minute, "down", "-v", "--remove-orphans") // leftovers of an interrupted run
	took := p.up("--scale", "tracker=3")
	out, _ := exec.Command("docker", "image", "inspect", "tracklink:latest", "--format", "{{.Size}}").Output()
	size, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	t.Logf("compose: docker-compose.yml up with 3 replicas, healthy in %s; image %.1f MB", took.Round(time.Second), float64(size)/1e6)
	if healthy, all := p.containers(); len(healthy) != 5 || len(all) != 5 {
		t.Fatalf("want 5 healthy containers (redis, hub, 3 trackers), got %v of %v", healthy, all)
	}
	hubURL := fmt.Sprintf("http://127.0.0.1:%d", hubPort)
	// Three replicas of one tracker: one node with three processes.
	want := map[string]int{"tracker": 3}
	waitNodes(t, hubURL, want, "at start")
	// The admin panels: the hub's on its published port, one per replica
	// on the admin port range.
	checkPanels(t, []int{hubAdmin}, map[string]int{"hub": 1})
	checkPanels(t, []int{6990, 6991, 6992}, map[string]int{"tracker": 3})

	c := newNSClient(t)
	const port = 6969 // the one announce URL of the tracker
	httpURL := func(int) string { return fmt.Sprintf("http://%s:%d/announce", c.host4, port) }
	udp6URL := func(int) string { return fmt.Sprintf("udp://[%s]:%d/announce", c.host6, port) }
	ih := "compose-test-torrent"
	peer4 := net.JoinHostPort(c.ip4, "51413")
	peer6 := net.JoinHostPort(c.ip6, "51414")
	// IPv4 over HTTP, IPv6 over UDP, both at the tracker's one port.
	if a := c.announce(t, httpURL(port), ih, 51413, 100, "started"); a.Err != "" {
		t.Fatalf("announce over HTTP: %s", a.Err)
	}
	if a := c.announce(t, udp6URL(port), ih, 51414, 100, "started"); a.Err != "" {
		t.Fatalf("announce over UDP/IPv6: %s", a.Err)
	}
	// Each family's answer: the IPv4 peer over HTTP/IPv4, the IPv6 one
	// over UDP/IPv6 (a UDP answer holds its own family's peers).
	testkit.Eventually(t, 10*time.Second, "both peers", func() bool {
		return c.sees(t, httpURL(port), ih, 52000, peer4) && c.sees(t, udp6URL(port), ih, 52001, peer6)
	})
	c.announce(t, httpURL(port), ih, 51413, 100, "stopped")
	c.announce(t, udp6URL(port), ih, 51414, 100, "stopped")
	testkit.Eventually(t, 10*time.Second, "stopped peers gone", func() bool {
		return !c.sees(t, httpURL(port), ih, 52002, peer4) && !c.sees(t, udp6URL(port), ih, 52003, peer6)
	})

	// Every replica takes a part: 20 client addresses, each announcing
	// over a fresh TCP connection and a fresh UDP socket, are served by all
	// three replicas (each by one), each counts HTTP and UDP announces in
	// its own metrics, and each returns every peer.
	srcs := c.host.AddAddrs(t, 20)
	spreadIH := hex.EncodeToString([]byte("compose-spread-ih-01"))
	base, udpAt := fmt.Sprintf("http://%s:%d", c.host4, port), fmt.Sprintf("%s:%d", c.host4, port)
	res, err := runLoad(c.name, nsLoad{Mode: "spread", Base: base, UDP: udpAt, Sources: srcs, InfoHash: spreadIH}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replicas) != 3 {
		t.Fatalf("20 client addresses were served by %d replicas, want 3: %+v", len(res.Replicas), res.Replicas)
	}
	for proc, r := range res.Replicas {
		t.Logf("compose: replica %s serves %d of 20 addresses; %v HTTP and %v UDP announces; shows %d of %d peers", proc, len(r.Sources), r.HTTP, r.UDP, r.PeersShown, res.Peers)
		if r.HTTP == 0 || r.UDP == 0 || r.PeersShown != res.Peers {
			t.Errorf("replica %s: %v HTTP and %v UDP announces, %d of %d peers shown", proc, r.HTTP, r.UDP, r.PeersShown, res.Peers)
		}
	}

	// Scale out to five and in to two under a paced load (a request every
	// 10 ms, each on a fresh connection, from all 20 addresses): no request
	// fails.
	load := startLoad(c.name, nsLoad{Mode: "paced", Base: base, Sources: srcs, For: 15 * time.Minute}, 20*time.Minute)
	time.Sleep(3 * time.Second)
	took = p.up("--scale", "tracker=5")
	t.Logf("compose: scaled out to 5 in %s", took.Round(time.Second))
	waitNodes(t, hubURL, map[string]int{"tracker": 0}, "at 5 replicas")
	time.Sleep(3 * time.Second)
	took = p.up("--scale", "tracker=2")
	t.Logf("compose: scaled in to 2 in %s", took.Round(time.Second))
	time.Sleep(3 * time.Second)
	load.stop()
	paced, err := load.wait()
	if err == nil && (paced.Failed > 0 || paced.Sent < 500) {
		err = fmt.Errorf("%d of %d requests failed while scaling; first: %s", paced.Failed, paced.Sent, paced.FirstErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compose: %d requests while scaling to 5 and back to 2, none failed", paced.Sent)
	if healthy, all := p.containers(); len(healthy) != 4 || len(all) != 4 {
		t.Fatalf("at two replicas: want 4 healthy containers, got %v of %v", healthy, all)
	}
	took = p.up("--scale", "tracker=3")

	// Redis restarts (with its RDB), then the hub restarts: each time a
	// new peer reaches every replica again.
	for i, svc := range []string{"redis", "hub"} {
		start := time.Now()
		p.must(2*time.Minute, "restart", svc)
		port := uint16(51420 + i)
		peer := net.JoinHostPort(c.ip4, strconv.Itoa(int(port)))
		announced := false
		testkit.Eventually(t, 60*time.Second, "a new peer answered after the "+svc+" restart", func() bool {
			if !announced {
				announced = c.announce(t, httpURL(6969), ih, port, 100, "started").Err == ""
				return false
			}
			return c.sees(t, httpURL(6969), ih, 52004, peer)
		})
		t.Logf("compose: after a %s restart, a new peer was answered in %s", svc, time.Since(start).Round(100*time.Millisecond))
		// A replica whose publish failed while Redis restarted opens a
		// new session; its old one stays listed for the node timeout.
		waitNodes(t, hubURL, map[string]int{"tracker": 0}, "after the "+svc+" restart")
	}

	// down and up with Redis's volume kept: the replicas come back as the
	// same node, so the hub lists one node, none stale.
	p.must(3*time.Minute, "down", "--timeout", "20")
	took = p.up("--scale", "tracker=3")
	t.Logf("compose: up again after down (volume kept), healthy in %s", took.Round(time.Second))
	waitNodes(t, hubURL, map[string]int{"tracker": 0}, "after down and up")
	if st, err := hubStatus(hubURL); err != nil || len(st.Nodes) != 1 {
		t.Fatalf("after down and up the hub knows %d nodes (%v), want 1", len(st.Nodes), err)
	}
}

// testComposeFriends: docker-compose.friends.yml, trackers alpha and beta
// of two replicas each, each on a Redis and a torrent directory of its own,
// the hub a member of neither.
func testComposeFriends(t *testing.T, repo string) {
	hubPort := testkit.FreePort(t)
	dirs := map[string]string{"alpha": t.TempDir(), "beta": t.TempDir()}
	for _, d := range dirs {
		if err := os.Chown(d, 65532, 65532); err != nil {
			t.Fatal(err)
		}
	}
	_, shared := makeTorrent(t, "shared", dirs["alpha"], dirs["beta"])
	_, private := makeTorrent(t, "private", dirs["alpha"])
	p := &composeProject{t: t, name: "tlcompose-friends-test", file: filepath.Join(repo, "docker-compose.friends.yml"), envFile: filepath.Join(t.TempDir(), ".env")}
	betaRedis := testkit.FreePort(t)
	hubAdmin := testkit.FreePort(t)
	env := []string{
		fmt.Sprintf("TRACKLINK_HUB_PORT=%d", hubPort), fmt.Sprintf("TRACKLINK_HUB_ADMIN_PORT=%d", hubAdmin),
		fmt.Sprintf("ALPHA_REDIS_PORT=%d", testkit.FreePort(t)), fmt.Sprintf("BETA_REDIS_PORT=%d", betaRedis),
		"ALPHA_TORRENTS=" + dirs["alpha"], "BETA_TORRENTS=" + dirs["beta"], "TRACKER_ALLOWED_RESCAN=1s",
	}
	p.writeEnv(env...)
	t.Cleanup(func() { downAndCheck(t, p) })
	p.run(2*time.Minute, "down", "-v", "--remove-orphans")
	took := p.up()
	t.Logf("compose: docker-compose.friends.yml up (2 + 2 replicas, a Redis each), healthy in %s", took.Round(time.Second))
	if healthy, all := p.containers(); len(healthy) != 7 || len(all) != 7 {
		t.Fatalf("want 7 healthy containers (redis-alpha, redis-beta, hub, 2 alpha, 2 beta), got %v of %v", healthy, all)
	}
	hubURL := fmt.Sprintf("http://127.0.0.1:%d", hubPort)
	want := map[string]int{"alpha": 2, "beta": 2}
	waitNodes(t, hubURL, want, "at start")
	checkPanels(t, []int{hubAdmin, 7010, 7011, 7110, 7111}, map[string]int{"hub": 1, "alpha": 2, "beta": 2})

	c := newNSClient(t)
	u := func(port int) string { return fmt.Sprintf("http://%s:%d/announce", c.host4, port) }
	peer := net.JoinHostPort(c.ip4, "51500")
	if a := c.announce(t, u(7000), shared, 51500, 100, "started"); a.Err != "" {
		t.Fatalf("shared torrent at alpha: %s", a.Err)
	}
	for _, port := range []int{7001, 7100, 7101} {
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("the shared torrent's peer at %d", port), func() bool { return c.sees(t, u(port), shared, 52100, peer) })
	}
	if a := c.announce(t, u(7001), private, 51501, 100, "started"); a.Err != "" {
		t.Fatalf("private torrent at alpha: %s", a.Err)
	}
	for _, port := range []int{7100, 7101} {
		if a := c.announce(t, u(port), private, 52101, 0, ""); a.Err == "" {
			t.Fatalf("beta (%d) serves alpha's private torrent: %+v", port, a)
		}
	}
	// Nothing of it in beta's Redis (read as beta's node user, which may
	// read beta's keyspace), while the shared torrent's peer is there.
	betaRDB := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", betaRedis), Username: "tl-node-beta", Password: "compose-test-beta-0123456789"})
	defer betaRDB.Close()
	ctx := context.Background()
	key := func(ih, suffix string) string { return fmt.Sprintf("tl:{beta:%x}:%s", ih, suffix) }
	if n, err := betaRDB.Exists(ctx, key(shared, "m")).Result(); err != nil || n != 1 {
		t.Fatalf("the shared torrent's swarm in beta's Redis: %d %v", n, err)
	}
	if n, err := betaRDB.Exists(ctx, key(private, "m"), key(private, "c"), key(private, "x")).Result(); err != nil || n != 0 {
		t.Fatalf("alpha's private torrent in beta's Redis: %d keys (%v)", n, err)
	}
	if st, err := hubStatus(hubURL); err != nil || st.Nodes["alpha"].Member != "alpha" || st.Nodes["beta"].Member != "beta" {
		t.Fatalf("the hub's members: %+v (%v)", st, err)
	}

	// Replicas of one node id cause no resyncs while idle.
	_, before := liveNodes(t, hubURL)
	time.Sleep(10 * time.Second)
	_, after := liveNodes(t, hubURL)
	t.Logf("compose: friends hub resyncs %d, then %d after 10 s idle", before, after)
	if before < 0 || after != before {
		t.Fatalf("hub resyncs went from %d to %d in 10 s idle", before, after)
	}

	// Sharing on: alpha offers (the members file lets it share with
	// beta), beta accepts, and the private torrent's peer reaches it.
	p.writeEnv(append(env, "TRACKER_SHARE_OFFER=true", "TRACKER_SHARE_ACCEPT=true")...)
	p.up()
	privatePeer := net.JoinHostPort(c.ip4, "51501")
	for _, port := range []int{7100, 7101} {
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("alpha's torrent shared to beta (%d)", port), func() bool { return c.sees(t, u(port), private, 52102, privatePeer) })
	}
}

// downAndCheck tears the project down, volumes included, and checks that
// nothing of it is left.
func downAndCheck(t *testing.T, p *composeProject) {
	if out, err := p.run(3*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "20"); err != nil {
		t.Errorf("down: %v\n%s", err, out)
	}
	if _, all := p.containers(); len(all) != 0 {
		t.Errorf("containers left after down: %v", all)
	}
	if out, _ := exec.Command("docker", "volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+p.name).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("volumes left after down -v: %s", out)
	}
}
