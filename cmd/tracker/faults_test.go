package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// The fault suite runs Redis, a hub and three nodes as real processes (the
// built binary), drives steady announce load at all three with `tracker
// loadgen -rate`, and injects one fault at a time. For each it reports the
// client requests that failed, how long until a peer announced at any node
// reaches all three again, the peers lost (a peer live at one node and
// missing at another once the load stops and the link had 30 s to repair:
// must be 0), and the processes' memory and goroutines before and after.
//
//	TRACKLINK_FAULTS=short go test -count=1 -run TestFaults -v ./cmd/tracker/   (CI: 8 s of load per fault)
//	TRACKLINK_FAULTS=long  go test -count=1 -run TestFaults -v -timeout 60m ./cmd/tracker/   (60 s)
//	TRACKLINK_SOAK=1h      go test -count=1 -run TestSoak -v -timeout 90m ./cmd/tracker/
const (
	faultsVar = "TRACKLINK_FAULTS"
	soakVar   = "TRACKLINK_SOAK"
)

// rig is the processes of one fault run.
type rig struct {
	t       *testing.T
	bin     string
	dir     string
	redis   *testkit.RedisServer
	rdb     *redis.Client
	channel string
	hub     *osProc
	nodes   []*osProc
}

// osProc is one tracker process (node or hub), restartable on its port.
type osProc struct {
	name, role string
	port       int
	env        []string
	cmd        *exec.Cmd
	exited     chan struct{}
}

func (p *osProc) url() string { return fmt.Sprintf("http://127.0.0.1:%d", p.port) }

func buildTracker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tracker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func newRig(t *testing.T, nodes int) *rig {
	t.Helper()
	r := &rig{t: t, bin: buildTracker(t), dir: t.TempDir(), channel: fmt.Sprintf("tlfault%d", os.Getpid())}
	r.redis = testkit.StartRedis(t)
	r.rdb = r.redis.Client(t)
	r.hub = &osProc{name: "hub", role: "hub", port: testkit.FreePort(t)}
	r.start(r.hub)
	for i := 1; i <= nodes; i++ {
		n := &osProc{name: fmt.Sprintf("node%d", i), role: "node", port: testkit.FreePort(t)}
		r.nodes = append(r.nodes, n)
		r.start(n)
	}
	t.Cleanup(func() {
		for _, p := range append([]*osProc{r.hub}, r.nodes...) {
			r.stop(p, syscall.SIGKILL)
		}
	})
	r.waitLinked()
	return r
}

// start runs p (again) on its port and waits for /healthz.
func (r *rig) start(p *osProc) {
	r.t.Helper()
	env := append(os.Environ(),
		"TRACKER_REDIS_URL="+r.redis.URL(),
		"TRACKER_LINK_PASSWORD="+testPassword,
		"TRACKER_LINK_CHANNEL="+r.channel,
		"TRACKER_LINK_HEARTBEAT=200ms",
		"TRACKER_HTTP_ADDR="+fmt.Sprintf("127.0.0.1:%d", p.port),
		"TRACKER_UDP_ADDR=off",
		"TRACKER_LOG_LEVEL=warn",
		// The skew is longer than any fault below holds messages up (the
		// 3 s Redis pause): a message the fault delays past the skew is
		// refused as stale by design, and the resync repairs it, so with
		// a skew of 3 s the pause row counted a few refusals on a loaded
		// machine. The default skew is 30 s.
		"TRACKER_HUB_NODE_TIMEOUT=15s",
		"TRACKER_LINK_MAX_SKEW=10s",
	)
	args := []string{}
	if p.role == "hub" {
		args = append(args, "hub")
		env = append(env, "TRACKER_HUB_NAME=hub")
	} else {
		env = append(env, "TRACKER_NODE_ID="+p.name)
	}
	env = append(env, p.env...)
	logf, err := os.OpenFile(filepath.Join(r.dir, p.name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	p.cmd = exec.Command(r.bin, args...)
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = env, logf, logf
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { c.Wait(); logf.Close(); close(ch) }(p.cmd, p.exited)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if resp, err := http.Get(p.url() + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.exited:
			r.t.Fatalf("%s exited at start: %s", p.name, r.logTail(p))
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s not healthy within 15s: %s", p.name, r.logTail(p))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop signals p and waits for it to exit (SIGKILL after 20 s).
func (r *rig) stop(p *osProc, sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

func (r *rig) logTail(p *osProc) string {
	b, _ := os.ReadFile(filepath.Join(r.dir, p.name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitLinked waits until every node's link is up and the hub lists them.
func (r *rig) waitLinked() {
	r.t.Helper()
	testkit.Eventually(r.t, 20*time.Second, "every node linked", func() bool {
		st, err := hubStatus(r.hub.url())
		if err != nil {
			return false
		}
		for _, n := range r.nodes {
			if !st.Nodes[n.name].Live {
				return false
			}
		}
		return true
	})
}

// maxFaultLogLines bounds what one process may log about one fault.
const maxFaultLogLines = 60

// logLines counts the lines each process has logged so far.
func (r *rig) logLines() map[string]int {
	out := map[string]int{}
	for _, p := range append([]*osProc{r.hub}, r.nodes...) {
		b, _ := os.ReadFile(filepath.Join(r.dir, p.name+".log"))
		out[p.name] = strings.Count(string(b), "\n")
	}
	return out
}

// procUsage is one process's memory and goroutines, from its /metrics.
type procUsage struct{ rss, goroutines float64 }

var metricLine = regexp.MustCompile(`(?m)^(process_resident_memory_bytes|go_goroutines) (\S+)$`)

func (r *rig) usage(p *osProc) procUsage {
	resp, err := http.Get(p.url() + "/metrics")
	if err != nil {
		return procUsage{-1, -1}
	}
	defer resp.Body.Close()
	var u procUsage
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := metricLine.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			if m[1] == "go_goroutines" {
				u.goroutines = v
			} else {
				u.rss = v
			}
		}
	}
	return u
}

// loadResult is what one `tracker loadgen` process reported.
type loadResult struct {
	announces, failures, refused int
	err                          error
}

var loadLine = regexp.MustCompile(`announces: (\d+) in the measured phase, (\d+) failures \((\d+) failure reasons`)

// load runs `tracker loadgen` at every node for d at rate announces a
// second each, on the same torrents (common to all nodes), and returns
// their results when they end.
func (r *rig) load(ctx context.Context, d time.Duration, rate float64) <-chan []loadResult {
	out := make(chan []loadResult, 1)
	res := make([]loadResult, len(r.nodes))
	var wg sync.WaitGroup
	for i, n := range r.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, r.bin, "loadgen", "-url", n.url()+"/announce", "-conns", "8", "-duration", d.String(),
				"-torrents", "100", "-peers", "10", "-numwant", "20", "-rate", strconv.FormatFloat(rate, 'f', 0, 64))
			b, err := cmd.CombinedOutput()
			m := loadLine.FindStringSubmatch(string(b))
			if err != nil || m == nil {
				res[i].err = fmt.Errorf("loadgen at %s: %v: %s", n.name, err, b)
				return
			}
			res[i].announces, _ = strconv.Atoi(m[1])
			res[i].failures, _ = strconv.Atoi(m[2])
			res[i].refused, _ = strconv.Atoi(m[3])
		}()
	}
	go func() { wg.Wait(); out <- res }()
	return out
}

// livePeers reads every node's keyspace: torrent (hex) -> live peers.
func (r *rig) livePeers() []map[string]map[string]bool {
	ctx := context.Background()
	cutoff := time.Now().Add(-time.Hour).UnixMilli()
	out := make([]map[string]map[string]bool, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = map[string]map[string]bool{}
		// A swarm's one set (:m) or its buckets (:m0, :m1, ...).
		iter := r.rdb.Scan(ctx, 0, "tl:{"+n.name+":*}:m*", 1000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			ih := key[len("tl:{"+n.name+":"):strings.LastIndex(key, "}:")]
			ms, _ := r.rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
			if out[i][ih] == nil {
				out[i][ih] = map[string]bool{}
			}
			for _, z := range ms {
				if _, seen := redisstore.PeerClass(z.Score); seen > cutoff {
					out[i][ih][z.Member.(string)] = true
				}
			}
		}
	}
	return out
}

// missing counts peers live at some node and missing at another.
func missing(sets []map[string]map[string]bool) int {
	n := 0
	union := map[string]map[string]bool{}
	for _, s := range sets {
		for ih, ms := range s {
			if union[ih] == nil {
				union[ih] = map[string]bool{}
			}
			for m := range ms {
				union[ih][m] = true
			}
		}
	}
	for ih, ms := range union {
		for m := range ms {
			for _, s := range sets {
				if !s[ih][m] {
					n++
				}
			}
		}
	}
	return n
}

// probeReach announces a new peer at every node, on a torrent of its
// own, until one round's peers are in every node's keyspace within 2 s,
// and returns how long that took from start.
func (r *rig) probeReach(start time.Time, probe int) time.Duration {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for round := 0; time.Now().Before(deadline); round++ {
		ih := fmt.Sprintf("fp%03d-%014d", probe, round)
		ok := true
		for i, n := range r.nodes {
			resp, err := http.Get(fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-FP0001-%012d&port=%d&left=1", n.url(), escape(ih), 30000+i, 30000+i))
			if err != nil {
				ok = false
				continue
			}
			resp.Body.Close()
		}
		hexIH := fmt.Sprintf("%x", ih)
		if ok && testkit.Within(2*time.Second, func() bool {
			for _, s := range r.livePeers() {
				if len(s[hexIH]) < len(r.nodes) {
					return false
				}
			}
			return true
		}) {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("probe peers did not reach every node within 60 s")
	return 0
}

// fault is one injection: it breaks something at the start of a window of
// load and heals it (returning when healed).
type fault struct {
	name   string
	inject func(r *rig)
}

func faults() []fault {
	return []fault{
		{"hub kill -9, restart", func(r *rig) {
			r.stop(r.hub, syscall.SIGKILL)
			time.Sleep(time.Second)
			r.start(r.hub)
		}},
		{"a second hub started, then kill -9 (its partitions taken over)", func(r *rig) {
			// The two hubs split the partitions under the load; one
			// dies without giving up its leases, and the other must hold
			// every partition again within the lease time (3 s by
			// default) and a tick: 5 s at most.
			hub2 := &osProc{name: "hub2", role: "hub", port: testkit.FreePort(r.t), env: []string{"TRACKER_HUB_NAME=hub2"}}
			r.start(hub2)
			r.t.Cleanup(func() { r.stop(hub2, syscall.SIGKILL) })
			split := testkit.Eventually(r.t, 10*time.Second, "two hubs split the partitions", func() bool {
				a, errA := hubStatus(r.hub.url())
				b, errB := hubStatus(hub2.url())
				return errA == nil && errB == nil && len(a.Partitions) == link.DefaultPartitions/2 && len(b.Partitions) == link.DefaultPartitions/2
			})
			time.Sleep(time.Second) // hub2 relays its half under the load
			r.stop(hub2, syscall.SIGKILL)
			took := testkit.Eventually(r.t, 10*time.Second, "the first hub takes every partition", func() bool {
				st, err := hubStatus(r.hub.url())
				return err == nil && len(st.Partitions) == link.DefaultPartitions
			})
			r.t.Logf("second hub: partitions split %s after its start; taken over %s after its kill -9", split.Round(10*time.Millisecond), took.Round(10*time.Millisecond))
			if took > 5*time.Second {
				r.t.Errorf("partitions taken over %s after the kill, more than 5 s", took)
			}
		}},
		{"node kill -9, restart", func(r *rig) {
			r.stop(r.nodes[1], syscall.SIGKILL)
			time.Sleep(time.Second)
			r.start(r.nodes[1])
		}},
		{"Redis restart with its RDB", func(r *rig) {
			r.rdb.ShutdownSave(context.Background())
			if err := r.redis.Restart(); err != nil {
				r.t.Fatal(err)
			}
		}},
		{"Redis paused 3 s (CLIENT PAUSE)", func(r *rig) {
			r.rdb.Do(context.Background(), "CLIENT", "PAUSE", "3000", "ALL")
			time.Sleep(3 * time.Second)
		}},
		{"pub/sub connections killed", func(r *rig) {
			r.rdb.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub")
		}},
		{"a node process with its clock 2 s ahead (200 updates)", func(r *rig) {
			// A process of a fourth node, "skewed", whose clock runs 2 s
			// ahead, publishes what it saw: its peers must reach every
			// node, and the hub must refuse nothing.
			key := link.NewMaster(testPassword).NodeKey("skewed")
			session := link.NewSession()
			for i := 1; i <= 200; i++ {
				now := time.Now().Add(2 * time.Second).UnixMilli()
				ch := bittorrent.PeerChange{InfoHash: bittorrent.InfoHash([]byte("skewed-clock-torrent")), Op: bittorrent.OpLeecher, Seen: now,
					Peer: string([]byte{10, 3, byte(i >> 8), byte(i), 0x1a, 0xe1})}
				b, err := link.EncodeUp(key, &link.Message{Kind: link.KindUpdates, Node: "skewed", Session: session, Seq: uint64(i), Time: now, Changes: []bittorrent.PeerChange{ch}})
				if err != nil {
					r.t.Fatal(err)
				}
				if err := r.rdb.Publish(context.Background(), r.channel+":up", b).Err(); err != nil {
					r.t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			hexIH := fmt.Sprintf("%x", "skewed-clock-torrent")
			testkit.Eventually(r.t, 5*time.Second, "the skewed process's 200 peers at every node", func() bool {
				for _, s := range r.livePeers() {
					if len(s[hexIH]) != 200 {
						return false
					}
				}
				return true
			})
		}},
		{"SIGTERM of node 3, restart", func(r *rig) {
			r.stop(r.nodes[2], syscall.SIGTERM)
			r.start(r.nodes[2])
		}},
	}
}

func TestFaults(t *testing.T) {
	mode := os.Getenv(faultsVar)
	if mode == "" {
		t.Skip("the fault suite runs with " + faultsVar + "=short or long (the README's test command runs the short form)")
	}
	window, rate := 8*time.Second, 200.0
	if mode == "long" {
		window, rate = 60*time.Second, 1000.0
	}
	r := newRig(t, 3)
	type row struct {
		name             string
		requests, failed int
		refused          int
		reach            time.Duration
		lost             int
		hubRefused       float64
		refusedWhy       string
		logLines         int           // most lines one process logged (warn and above)
		whole            time.Duration // from the end of the load until every node has every peer
		before, after    []procUsage
	}
	var rows []row
	for i, f := range faults() {
		ctx, cancel := context.WithTimeout(context.Background(), window+2*time.Minute)
		before := []procUsage{r.usage(r.hub)}
		for _, n := range r.nodes {
			before = append(before, r.usage(n))
		}
		refusedBefore := hubRefused(t, r.hub.url())
		linesBefore := r.logLines()
		done := r.load(ctx, window, rate)
		time.Sleep(window / 4)
		f.inject(r)
		healed := time.Now()
		reach := r.probeReach(healed, i)
		res := <-done
		cancel()
		rw := row{name: f.name, reach: reach, before: before}
		rw.hubRefused, rw.refusedWhy = refusedSince(refusedBefore, hubRefused(t, r.hub.url()))
		for _, lr := range res {
			if lr.err != nil {
				t.Fatalf("%s: %v", f.name, lr.err)
			}
			rw.requests += lr.announces
			rw.failed += lr.failures
			rw.refused += lr.refused
		}
		// The load has stopped: give the link 30 s to repair, then count
		// the peers some node misses.
		lost := -1
		stopped := time.Now()
		testkit.Within(30*time.Second, func() bool { lost = missing(r.livePeers()); return lost == 0 })
		rw.lost, rw.whole = lost, time.Since(stopped)
		rw.after = []procUsage{r.usage(r.hub)}
		for _, n := range r.nodes {
			rw.after = append(rw.after, r.usage(n))
		}
		for name, n := range r.logLines() {
			rw.logLines = max(rw.logLines, n-linesBefore[name])
		}
		// Logs summarise: a fault is a few lines, never one per request.
		if rw.logLines > maxFaultLogLines {
			t.Errorf("%s: a process logged %d lines (more than %d): one per request?", f.name, rw.logLines, maxFaultLogLines)
		}
		if rw.hubRefused > 0 {
			t.Errorf("%s: the hub refused %v messages (%s)", f.name, rw.hubRefused, rw.refusedWhy)
		}
		if lost != 0 {
			t.Errorf("%s: %d peers live at one node and missing at another 30 s after the load stopped", f.name, lost)
		}
		rows = append(rows, rw)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| fault (%s load, %.0f/s at each of 3 nodes) | requests | failed (failure reasons) | a new peer at every node after healing | every peer at every node, after the load stopped | peers lost | messages the hub refused | most log lines of one process | hub+nodes RSS MB before → after | goroutines before → after |\n|---|---|---|---|---|---|---|---|---|---|\n", window, rate)
	for _, rw := range rows {
		var rb, ra, gb, ga float64
		for i := range rw.before {
			rb, ra, gb, ga = rb+rw.before[i].rss, ra+rw.after[i].rss, gb+rw.before[i].goroutines, ga+rw.after[i].goroutines
		}
		fmt.Fprintf(&b, "| %s | %d | %d (%d) | %s | %s | %d | %.0f | %d | %.0f → %.0f | %.0f → %.0f |\n", rw.name, rw.requests, rw.failed, rw.refused,
			rw.reach.Round(10*time.Millisecond), rw.whole.Round(10*time.Millisecond), rw.lost, max(0, rw.hubRefused), rw.logLines, rb/1e6, ra/1e6, gb, ga)
	}
	t.Log(b.String())
}

// TestSoak runs the rig for TRACKLINK_SOAK at a steady rate and reports
// memory and goroutines of every process, and Redis's memory and keys,
// each minute: they must stay flat, and the test fails when one grows
// past its tolerance (soakFlat). The rate is half of what the rig
// measured as its peak (TRACKLINK_SOAK_RATE overrides).
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv(soakVar))
	if err != nil || d <= 0 {
		t.Skip("the soak runs with " + soakVar + "=1h (a duration)")
	}
	r := newRig(t, 3)
	rate, _ := strconv.ParseFloat(os.Getenv("TRACKLINK_SOAK_RATE"), 64)
	if rate <= 0 {
		res := <-r.load(context.Background(), 10*time.Second, 0)
		total := 0
		for _, lr := range res {
			if lr.err != nil {
				t.Fatal(lr.err)
			}
			total += lr.announces
		}
		peak := float64(total) / 10
		rate = peak / 2 / float64(len(r.nodes))
		t.Logf("peak %.0f announces/s over the 3 nodes; soak at %.0f/s per node", peak, rate)
	}
	type sample struct {
		at       time.Duration
		rss, gor float64
		redisMem int64
		keys     int64
	}
	var samples []sample
	start := time.Now()
	take := func() {
		var s sample
		s.at = time.Since(start).Round(time.Second)
		for _, p := range append([]*osProc{r.hub}, r.nodes...) {
			u := r.usage(p)
			s.rss += u.rss
			s.gor += u.goroutines
		}
		s.redisMem = infoInt(r.rdb, "memory", "used_memory")
		s.keys, _ = r.rdb.DBSize(context.Background()).Result()
		samples = append(samples, s)
		t.Logf("soak %s: hub+nodes RSS %.1f MB, goroutines %.0f, Redis used_memory %.1f MB, %d keys", s.at, s.rss/1e6, s.gor, float64(s.redisMem)/1e6, s.keys)
	}
	failed, requests := 0, 0
	for time.Since(start) < d {
		window := min(10*time.Minute, d-time.Since(start))
		done := r.load(context.Background(), window, rate)
		tick := time.NewTicker(time.Minute)
	wait:
		for {
			select {
			case res := <-done:
				for _, lr := range res {
					if lr.err != nil {
						t.Fatal(lr.err)
					}
					requests += lr.announces
					failed += lr.failures
				}
				break wait
			case <-tick.C:
				take()
			}
		}
		tick.Stop()
	}
	take()
	t.Logf("soak: %d requests, %d failed, over %s", requests, failed, time.Since(start).Round(time.Second))
	if len(samples) < 3 {
		t.Fatalf("soak: %d samples; it needs a TRACKLINK_SOAK of 3m at least to compare the lines", len(samples))
	}
	sort.SliceStable(samples, func(i, j int) bool { return samples[i].at < samples[j].at })
	first, last := samples[1], samples[len(samples)-1] // after the first minute's warm-up
	t.Logf("soak: from %s to %s: RSS %.1f → %.1f MB, goroutines %.0f → %.0f, Redis %.1f → %.1f MB, keys %d → %d",
		first.at, last.at, first.rss/1e6, last.rss/1e6, first.gor, last.gor, float64(first.redisMem)/1e6, float64(last.redisMem)/1e6, first.keys, last.keys)
	for _, l := range soakFlat(first.rss, last.rss, first.gor, last.gor, float64(first.redisMem), float64(last.redisMem), float64(first.keys), float64(last.keys)) {
		t.Errorf("soak: %s did not stay flat from %s to %s", l, first.at, last.at)
	}
	if failed != 0 {
		t.Errorf("%d of %d soak requests failed", failed, requests)
	}
}

// soakFlat names the soak's lines that grew past their tolerance between
// the first sample after warm-up and the last. The load is a fixed set of
// peers (loadgen's 100 torrents × 10 peers, the same ids in every window,
// re-announcing long before their lifetime), so nothing the soak measures
// has a reason to grow; what a leak grows with is requests, millions an
// hour. The tolerances cover what varies without a leak:
//   - RSS of hub+nodes: up to 1.5 × + 16 MB. Go's heap swings up to twice
//     its live size between collections (GOGC=100) and freed pages go back
//     to the kernel lazily, so one reading can be half again another; a
//     leak of a few bytes a request outgrows it within the hour.
//   - goroutines: up to + 64 over the four processes: each loadgen window
//     opens 8 connections at each of 3 nodes (a goroutine or two each on
//     the server), and the last window's may still be closing when the
//     next has opened; a goroutine leaked per request or per message
//     passes it within seconds.
//   - Redis used_memory: up to 1.25 × + 4 MB. The keys hold the same
//     peers; what moves is client buffers (the link's pub/sub output, the
//     nodes' pipelines) and the allocator's fragments.
//   - Redis keys: up to + 10. The swarms' keys are fixed by the load;
//     what may come and go is bookkeeping (hub leases, the process
//     registry), while a key leaked per swarm would add 300.
func soakFlat(rss0, rss1, gor0, gor1, mem0, mem1, keys0, keys1 float64) []string {
	var grew []string
	check := func(what string, from, to, limit float64, unit string) {
		if to > limit {
			grew = append(grew, fmt.Sprintf("%s (%.1f → %.1f%s, tolerance %.1f%s)", what, from, to, unit, limit, unit))
		}
	}
	check("hub+nodes RSS", rss0/1e6, rss1/1e6, 1.5*rss0/1e6+16, " MB")
	check("goroutines", gor0, gor1, gor0+64, "")
	check("Redis used_memory", mem0/1e6, mem1/1e6, 1.25*mem0/1e6+4, " MB")
	check("Redis keys", keys0, keys1, keys0+10, "")
	return grew
}

// TestSoakFlat: the soak's check passes flat lines and their usual swings,
// and names each line that grows like a leak.
func TestSoakFlat(t *testing.T) {
	const mb = 1e6
	if grew := soakFlat(80*mb, 110*mb, 120, 160, 20*mb, 24*mb, 1500, 1508); len(grew) != 0 {
		t.Errorf("swings within tolerance reported as growth: %v", grew)
	}
	grew := soakFlat(80*mb, 200*mb, 120, 400, 20*mb, 40*mb, 1500, 1800)
	want := []string{"hub+nodes RSS", "goroutines", "Redis used_memory", "Redis keys"}
	if len(grew) != len(want) {
		t.Fatalf("growth of every line: reported %v", grew)
	}
	for i, w := range want {
		if !strings.HasPrefix(grew[i], w+" (") {
			t.Errorf("line %d: %q, want %s", i, grew[i], w)
		}
	}
}

func infoInt(rdb *redis.Client, section, field string) int64 {
	s, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// hubRefused is the hub's refusals of link messages, by reason (a
// restarted hub starts from 0 again).
func hubRefused(t *testing.T, hubURL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(hubURL + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	by := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if name, v, ok := strings.Cut(sc.Text(), " "); ok && strings.HasPrefix(name, "hub_rejected_total{") {
			f, _ := strconv.ParseFloat(v, 64)
			by[strings.TrimSuffix(strings.TrimPrefix(name, `hub_rejected_total{reason="`), `"}`)] += f
		}
	}
	return by
}

// refusedSince is how many messages the hub refused between two readings
// of hubRefused, and by which reasons.
func refusedSince(before, after map[string]float64) (float64, string) {
	total, why := 0.0, []string{}
	for reason, n := range after {
		if d := n - before[reason]; d > 0 {
			total += d
			why = append(why, fmt.Sprintf("%s %.0f", reason, d))
		}
	}
	sort.Strings(why)
	return total, strings.Join(why, ", ")
}
