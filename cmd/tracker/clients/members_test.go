package clients

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestMembersOnTheirOwnRedis is the "a friend and I both run trackers"
// case for real: two members, alpha and beta, each a host of its own (a
// network namespace) with its own redis-server and its own node, which
// holds only its node key, not the network secret; the hub, on this host,
// reaches each member's Redis with the user that member's `tracker acl`
// made, over a slow link (slowLink: 20 ms each way, 1% of chunks held back
// a TCP retransmission's 200 ms). It shows, with the figures logged:
//   - announces at alpha reach beta (propagation p50/p99 over the slow link);
//   - a torrent only alpha carries never reaches beta's Redis;
//   - libtorrent at beta downloads from a seeder that announced only at alpha;
//   - alpha keeps answering while beta's Redis is stopped, and beta is
//     resynced when it is back (100,000 peers: the time it takes);
//   - both keep answering while the hub is stopped, and link again when it
//     is back.
func TestMembersOnTheirOwnRedis(t *testing.T) {
	// Members on hosts of their own (the netns tier), and libtorrent (the
	// clients tier): it runs when both are on.
	testkit.Netns.Require(t)
	python := libtorrentPython(t)
	testkit.NeedNetns(t)
	const password = "the network secret of the members test"
	torrents := filepath.Join(t.TempDir(), "torrents")

	// The torrents: T1 (the download) and P (propagation) carried by both,
	// T2 by alpha only, S1..S100 by both (the 100,000 peers).
	seedDir := t.TempDir()
	payload := make([]byte, 1<<20+777)
	crand.Read(payload)
	if err := os.WriteFile(filepath.Join(seedDir, "payload.bin"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(filepath.Join(seedDir, "payload.bin")); err != nil {
		t.Fatal(err)
	}
	t1, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{"alpha": filepath.Join(torrents, "alpha"), "beta": filepath.Join(torrents, "beta")}
	carry := func(infoBytes []byte, members ...string) string {
		mi := &metainfo.MetaInfo{InfoBytes: infoBytes}
		ih := mi.HashInfoBytes()
		for _, m := range members {
			os.MkdirAll(dirs[m], 0o755)
			writeTorrentTo(t, filepath.Join(dirs[m], ih.HexString()+".torrent"), mi)
		}
		return string(ih.Bytes())
	}
	ihT1 := carry(t1, "alpha", "beta")
	ihT2 := carry(tinyInfo(t, "only at alpha"), "alpha")
	ihP := carry(tinyInfo(t, "propagation"), "alpha", "beta")
	var swarms []bittorrent.InfoHash
	for i := range 100 {
		ih, _ := bittorrent.InfoHashFromBytes([]byte(carry(tinyInfo(t, fmt.Sprintf("swarm %d", i)), "alpha", "beta")))
		swarms = append(swarms, ih)
	}

	// The members: a host, a Redis, ACL users, a node each.
	type memberRig struct {
		host           *host
		redis          *exec.Cmd
		admin          *redis.Client
		hubURL, nodeID string
		node           string // HTTP base URL of its node
	}
	members := map[string]*memberRig{}
	for _, name := range []string{"alpha", "beta"} {
		m := &memberRig{host: newHost(t), nodeID: name}
		m.redis, m.admin = startRedisIn(t, m.host)
		acl := runTracker(t, "acl", "-redis", m.host.inner+":6379", m.nodeID)
		urls := applyACL(t, m.admin, acl)
		// The member's administrator loads the store's functions, as
		// tl-admin (the node's and the hub's users may not).
		setup := exec.Command(bin, "redis-setup")
		setup.Env = append(os.Environ(), "TRACKER_REDIS_URL="+urls["tl-admin"])
		if out, err := setup.CombinedOutput(); err != nil {
			t.Fatalf("tracker redis-setup as tl-admin: %v\n%s", err, out)
		}
		link := newSlowLink(t, m.host.inner+":6379", 20*time.Millisecond, 0.01, 200*time.Millisecond)
		m.hubURL = strings.Replace(urls["tl-hub"], m.host.inner+":6379", link, 1)
		nodeURL := strings.Replace(urls["tl-node-"+name], m.host.inner+":6379", "127.0.0.1:6379", 1)
		keys := linkKey(t, password, name)
		addr := m.host.inner + ":7000"
		cmd := exec.Command("ip", "netns", "exec", m.host.ns, bin)
		cmd.Env = append(os.Environ(), "TRACKER_NODE_ID="+name, "TRACKER_REDIS_URL="+nodeURL,
			"TRACKER_LINK_KEY="+keys["TRACKER_LINK_KEY"], "TRACKER_LINK_HUB_KEY="+keys["TRACKER_LINK_HUB_KEY"],
			"TRACKER_HTTP_ADDR="+addr, "TRACKER_UDP_ADDR=off", "TRACKER_ALLOWED_DIR="+dirs[name],
			"TRACKER_LINK_HEARTBEAT=200ms", "TRACKER_RATE_LIMIT=0", "TRACKER_LOG_LEVEL=warn")
		var logs testkit.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		startProcess(t, cmd)
		m.node = "http://" + addr
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("node %s's log:\n%s", name, logs.String())
			}
		})
		testkit.Eventually(t, 10*time.Second, name+" ready", func() bool { return ready(m.node) })
		members[name] = m
	}
	alpha, beta := members["alpha"], members["beta"]

	// The hub, with the members file.
	mf := map[string]any{"members": []map[string]any{
		{"name": "alpha", "nodes": []string{"alpha"}, "redis_url": alpha.hubURL},
		{"name": "beta", "nodes": []string{"beta"}, "redis_url": beta.hubURL},
	}}
	mfPath := filepath.Join(t.TempDir(), "members.json")
	b, _ := json.Marshal(mf)
	if err := os.WriteFile(mfPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	hubAddr := "127.0.0.1:" + strconv.Itoa(testkit.PortRange(t, 1))
	startHubOn := func(addr, name string) *running {
		cmd := exec.Command(bin, "hub")
		cmd.Env = append(os.Environ(), "TRACKER_HUB_MEMBERS="+mfPath, "TRACKER_LINK_PASSWORD="+password, "TRACKER_HTTP_ADDR="+addr,
			"TRACKER_UDP_ADDR=off", "TRACKER_LINK_HEARTBEAT=200ms", "TRACKER_HUB_NAME="+name, "TRACKER_LOG_LEVEL=warn")
		var logs testkit.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("hub's log:\n%s", logs.String())
			}
		})
		return startRunning(t, cmd)
	}
	startHub := func() *running { return startHubOn(hubAddr, "hub") }
	hub := startHub()
	linked := func() bool {
		st := hubStatus(t, "http://"+hubAddr)
		return st.Nodes["alpha"].Live && st.Nodes["alpha"].Member == "alpha" && st.Nodes["beta"].Live && st.Nodes["beta"].Member == "beta"
	}
	took := testkit.Eventually(t, 20*time.Second, "both members linked at the hub", linked)
	t.Logf("members linked %s after the hub started", took.Round(time.Millisecond))

	// A second hub for the same network takes half the relay's
	// partitions (leases in alpha's Redis, the first member's); the
	// counts below stay exact.
	hub2Addr := "127.0.0.1:" + strconv.Itoa(testkit.PortRange(t, 1))
	hub2 := startHubOn(hub2Addr, "hub2")
	testkit.Eventually(t, 20*time.Second, "both members linked at the second hub, the partitions split", func() bool {
		st := hubStatus(t, "http://"+hub2Addr)
		return st.Nodes["alpha"].Live && st.Nodes["beta"].Live && len(st.Partitions) == 16/2 // TRACKER_LINK_PARTITIONS
	})

	// Propagation across members: a new peer at alpha, until beta counts it.
	var lat []time.Duration
	for i := range 100 {
		start := time.Now()
		announcePeer(t, alpha.node, ihP, 20000+i, 1, "started")
		if !testkit.Within(5*time.Second, func() bool { return scrapeOf(t, beta.node, ihP).leechers >= int64(i+1) }) {
			t.Fatalf("peer %d of alpha not at beta within 5s", i)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("propagation alpha -> hub -> beta over the slow link (20 ms each way, 1%% held 200 ms): p50 %s, p99 %s, max %s (100 peers, announce to beta's scrape)",
		lat[49].Round(time.Millisecond), lat[98].Round(time.Millisecond), lat[99].Round(time.Millisecond))

	// T2 is alpha's only: its peers never reach beta's Redis. A P announce
	// after it, relayed in order, shows the hub got past it.
	announcePeer(t, alpha.node, ihT2, 21000, 1, "started")
	announcePeer(t, alpha.node, ihP, 21001, 1, "started")
	testkit.Eventually(t, 5*time.Second, "the P peer after T2 at beta", func() bool { return scrapeOf(t, beta.node, ihP).leechers == 101 })
	time.Sleep(500 * time.Millisecond) // whatever the second hub still had to write
	if a, b := scrapeOf(t, alpha.node, ihP), scrapeOf(t, beta.node, ihP); a != b || b.leechers != 101 {
		t.Fatalf("with two hubs: alpha %+v, beta %+v, want 101 leechers each", a, b)
	}
	hub2.stop(t)
	ctx := context.Background()
	if keys := beta.admin.Keys(ctx, "*"+hex.EncodeToString([]byte(ihT2))+"*").Val(); len(keys) != 0 {
		t.Fatalf("alpha's own torrent reached beta's Redis: %v", keys)
	}
	if keys := beta.admin.Keys(ctx, "*{alpha*").Val(); len(keys) != 0 {
		t.Fatalf("beta's Redis holds alpha's keyspace: %v", keys)
	}
	// What the hub's credentials at alpha cannot do (TestACLUsers has the
	// whole list): read the key bindings of alpha's peers, list alpha's
	// keys, publish as alpha's nodes.
	o, err := redis.ParseURL(alpha.hubURL)
	if err != nil {
		t.Fatal(err)
	}
	asHub := redis.NewClient(o)
	defer asHub.Close()
	bindings := "tl:{alpha:" + hex.EncodeToString([]byte(ihP)) + "}:k"
	for what, err := range map[string]error{
		"read the key bindings": asHub.HGetAll(ctx, bindings).Err(),
		"list the keys":         asHub.Scan(ctx, 0, "*", 100).Err(),
		"publish as a node":     asHub.Publish(ctx, "tl:link:up", "x").Err(),
	} {
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("the hub's user at alpha may %s: %v", what, err)
		}
	}

	// A real download across the members: an anacrolix seeder announces
	// only at alpha; libtorrent, inside beta's host, only at beta.
	seeder := realClientOn(t, seedDir, true, alpha.host.outer)
	st, err := seeder.AddTorrent(&metainfo.MetaInfo{InfoBytes: t1, Announce: alpha.node + "/announce"})
	if err != nil {
		t.Fatal(err)
	}
	<-st.GotInfo()
	if err := st.VerifyDataContext(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "alpha's seeder at beta", func() bool { return scrapeOf(t, beta.node, ihT1).seeders == 1 })
	leechDir := t.TempDir()
	tf := writeTorrent(t, &metainfo.MetaInfo{InfoBytes: t1, Announce: beta.node + "/announce"})
	dctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	lt := exec.CommandContext(dctx, "ip", "netns", "exec", beta.host.ns, python, "testdata/lt_download.py", tf, leechDir, "60")
	lt.Env = append(os.Environ(), "LT_LISTEN="+beta.host.inner+":0")
	start := time.Now()
	if out, err := lt.CombinedOutput(); err != nil {
		t.Fatalf("libtorrent at beta did not download from alpha's seeder: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(leechDir, "payload.bin"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("libtorrent's file differs from the seeded one (%v)", err)
	}
	t.Logf("libtorrent at beta downloaded %d bytes from alpha's seeder in %s", len(payload), time.Since(start).Round(time.Millisecond))

	// beta's Redis stops (SIGSTOP: its connections hang, the harder case
	// for the hub). alpha keeps answering; meanwhile 100,000 peers arrive
	// at alpha (written into its Redis as its node would, with its swarm
	// index, and not published: only a resync can bring them to beta).
	if err := beta.redis.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			beta.redis.Process.Signal(syscall.SIGCONT)
		}
	}()
	for i := range 5 {
		start := time.Now()
		announcePeer(t, alpha.node, ihP, 22000+i, 1, "started")
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("alpha took %s to answer while beta's Redis is stopped", d)
		}
	}
	testkit.Eventually(t, 10*time.Second, "beta's link down at the hub while its Redis is stopped", func() bool {
		return hubStatus(t, "http://"+hubAddr).Members["beta"].Link == "down"
	})
	if st := hubStatus(t, "http://"+hubAddr); st.Members["alpha"].Link != "up" || !ready("http://"+hubAddr) {
		t.Fatalf("alpha's link at the hub while beta's Redis is stopped: %+v, or the hub not ready", st.Members)
	}
	const perSwarm = 1000
	loadPeers(t, alpha.admin, "alpha", swarms, perSwarm)
	if err := beta.redis.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	start = time.Now()
	want := int64(len(swarms) * perSwarm)
	if !testkit.Within(60*time.Second, func() bool { return heldAt(t, beta.admin, "beta", swarms) == want }) {
		t.Fatalf("beta holds %d of alpha's %d peers a minute after its Redis came back", heldAt(t, beta.admin, "beta", swarms), want)
	}
	t.Logf("beta resynced with %d peers %s after its Redis came back (slow link)", want, time.Since(start).Round(time.Millisecond))
	testkit.Eventually(t, 10*time.Second, "beta's link up again at the hub", func() bool {
		return hubStatus(t, "http://"+hubAddr).Members["beta"].Link == "up"
	})

	// The hub stops: both members keep answering; it comes back and the
	// link works again.
	hub.stop(t)
	for _, m := range []*memberRig{alpha, beta} {
		announcePeer(t, m.node, ihP, 23000, 1, "started")
		if !ready(m.node) {
			t.Fatalf("%s not ready while the hub is stopped", m.nodeID)
		}
	}
	before := scrapeOf(t, alpha.node, ihP).leechers
	startHub()
	testkit.Eventually(t, 20*time.Second, "both members linked at the restarted hub", linked)
	announcePeer(t, beta.node, ihP, 23001, 1, "started")
	testkit.Eventually(t, 10*time.Second, "beta's peers at alpha after the hub's restart", func() bool {
		// beta's peer announced while the hub was away comes by the
		// resync, the new one by the link.
		return scrapeOf(t, alpha.node, ihP).leechers == before+2
	})
}

// host is a member's machine (testkit.NetnsHost): outer is this host's
// address on its veth pair, inner the member's.
type host struct{ ns, outer, inner string }

func newHost(t *testing.T) *host {
	t.Helper()
	h := testkit.NewNetns(t, "tlmem")
	return &host{ns: h.NS, outer: h.Outer4, inner: h.Inner4}
}

// startRedisIn starts a redis-server inside h, reachable at h.inner:6379,
// stopped by its PID at the end of the test; it returns the process and a
// client of its default user (the test's view of the member's data).
func startRedisIn(t *testing.T, h *host) (*exec.Cmd, *redis.Client) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", h.ns, "redis-server", "--port", "6379", "--bind", "0.0.0.0",
		"--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	var logs testkit.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	startProcess(t, cmd)
	c := redis.NewClient(&redis.Options{Addr: h.inner + ":6379"})
	t.Cleanup(func() { c.Close() })
	if !testkit.Within(10*time.Second, func() bool { return c.Ping(context.Background()).Err() == nil }) {
		t.Fatalf("redis-server in %s did not answer:\n%s", h.ns, logs.String())
	}
	return cmd, c
}

// applyACL runs the ACL SETUSER lines `tracker acl` printed and returns
// each user's URL by user name.
func applyACL(t *testing.T, admin *redis.Client, out string) map[string]string {
	t.Helper()
	urls := map[string]string{}
	var user string
	for _, line := range strings.Split(out, "\n") {
		if cmd, ok := strings.CutPrefix(line, "ACL SETUSER "); ok {
			args := []any{"ACL", "SETUSER"}
			for _, f := range strings.Fields(cmd) {
				args = append(args, f)
			}
			if err := admin.Do(context.Background(), args...).Err(); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			user = strings.Fields(cmd)[0]
		}
		if u, ok := strings.CutPrefix(line, "# TRACKER_REDIS_URL="); ok {
			urls[user] = u
		}
	}
	return urls
}

// linkKey returns what `tracker link key NODE` prints for a member's
// operator: the node's key and the hub's public key.
func linkKey(t *testing.T, password, node string) map[string]string {
	t.Helper()
	cmd := exec.Command(bin, "link", "key", node)
	cmd.Env = append(os.Environ(), "TRACKER_LINK_PASSWORD="+password)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			vars[k] = v
		}
	}
	if vars["TRACKER_LINK_KEY"] == "" || vars["TRACKER_LINK_HUB_KEY"] == "" {
		t.Fatalf("tracker link key printed:\n%s", out)
	}
	return vars
}

// tinyInfo is the info dictionary of a one-byte file called name.
func tinyInfo(t *testing.T, name string) []byte {
	t.Helper()
	b, err := bencode.Marshal(metainfo.Info{Name: name, PieceLength: 16384, Length: 1, Pieces: make([]byte, 20)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeTorrentTo writes mi to path.
func writeTorrentTo(t *testing.T, path string, mi *metainfo.MetaInfo) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := mi.Write(f); err != nil {
		t.Fatal(err)
	}
}

func ready(base string) bool {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// announcePeer announces a peer on port of ih (raw bytes) at base and
// fails the test unless the answer is a success.
func announcePeer(t *testing.T, base, ih string, port int, left int, event string) {
	t.Helper()
	u := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&event=%s",
		base, urlEscape(ih), urlEscape(fmt.Sprintf("-TL0001-%012d", port)), port, left, event)
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.Contains(string(body), "failure reason") {
		t.Fatalf("announce at %s: %d %q", base, resp.StatusCode, body)
	}
}

func urlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// loadPeers writes perSwarm leechers into each swarm of node's keyspace
// through its store, and the swarms into its index, as the node would.
func loadPeers(t *testing.T, rdb *redis.Client, node string, swarms []bittorrent.InfoHash, perSwarm int) {
	t.Helper()
	store, err := redisstore.New(rdb, redisstore.Config{Prefix: "tl", NodeID: node, PeerLifetime: 45 * time.Minute, CompletedTTL: 720 * time.Hour, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for s, ih := range swarms {
		reqs := make([]*bittorrent.AnnounceRequest, perSwarm)
		for i := range reqs {
			addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 99, byte(s), byte(i >> 8)}), uint16(10000+i))
			reqs[i] = &bittorrent.AnnounceRequest{InfoHash: ih, Peer: bittorrent.Peer{Addr: addr}, Left: 1, Event: bittorrent.Started}
		}
		out, errs := make([]bittorrent.AnnounceResult, perSwarm), make([]error, perSwarm)
		store.AnnounceBatch(ctx, reqs, make([]int, perSwarm), out, errs)
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := rdb.ZAdd(ctx, redisstore.IndexKey("tl", node, ih), redis.Z{Score: float64(time.Now().UnixMilli()), Member: string(ih[:])}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// heldAt counts the leechers node holds in swarms (its Redis, read with
// a store's scrape: large swarms are in buckets).
func heldAt(t *testing.T, rdb *redis.Client, node string, swarms []bittorrent.InfoHash) int64 {
	t.Helper()
	store, err := redisstore.New(rdb, redisstore.Config{Prefix: "tl", NodeID: node, PeerLifetime: 45 * time.Minute, CompletedTTL: 720 * time.Hour, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := store.Scrape(context.Background(), swarms)
	if err != nil {
		t.Logf("count at %s: %v", node, err)
		return -1 // not readable now; callers poll
	}
	var n int64
	for _, s := range sc {
		n += int64(s.Downloaders)
	}
	return n
}

type hubView struct {
	Partitions []int
	Members    map[string]struct{ Link string }
	Nodes      map[string]struct {
		Member string
		Live   bool
	}
}

func hubStatus(t *testing.T, base string) hubView {
	t.Helper()
	var v hubView
	resp, err := http.Get(base + "/status")
	if err != nil {
		return v
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&v)
	return v
}

// slowLink relays TCP connections to target, holding every chunk back by
// delay in each direction and, for a share loss of chunks (at random), by
// rto more, in order: what a lost segment costs a TCP stream (its
// retransmission after the minimum RTO, and the head-of-line blocking
// behind it). It stands in for tc netem, which this machine's kernel does
// not have (no sch_netem). It returns its loopback address; it stops at
// the end of the test.
func newSlowLink(t *testing.T, target string, delay time.Duration, loss float64, rto time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		type chunk struct {
			at time.Time
			b  []byte
		}
		ch := make(chan chunk, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer dst.Close()
			for c := range ch {
				time.Sleep(time.Until(c.at))
				if _, err := dst.Write(c.b); err != nil {
					return
				}
			}
		}()
		defer close(ch)
		var last time.Time
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				at := time.Now().Add(delay)
				if rand.Float64() < loss {
					at = at.Add(rto)
				}
				if at.Before(last) {
					at = last // in order, as TCP delivers
				}
				last = at
				ch <- chunk{at, buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, d)
			mu.Unlock()
			wg.Add(2)
			go pipe(d, c)
			go pipe(c, d)
		}
	}()
	return ln.Addr().String()
}
