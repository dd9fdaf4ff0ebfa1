package main

// How the documentation's shell blocks are tested: read this before you
// add or change one.
//
// Every fenced block of README.md, CHANGELOG.md and docs/*.md whose info
// string is sh, bash, shell or console is a shell block, and the comment
// lines right above its fence say what it is:
//
//	<!-- runnable: NAME -->   TestExamples runs it; NAME is its entry in
//	                          examples below, which says how it is checked
//	<!-- not-run: REASON -->  not run, for the reason given (it needs
//	                          Docker, is a benchmark, stands for someone
//	                          else's servers ...); say which test covers it
//	<!-- test-command -->     the test command, which .ci/run runs
//
// TestExamplesMarked fails on a shell block with none of them, on a NAME
// without an entry, and on an entry without a block.
//
// A runnable block runs as written, under bash, in a temporary directory,
// with these substitutions only, so that it runs on free loopback ports
// beside other tests and leaves nothing behind:
//
//   - `go run ./cmd/tracker`, `go build -o X ./cmd/tracker` (a copy at X,
//     made before the block runs) and a bare `tracker` command are the
//     binary the test built;
//   - the ports its entry lists (":6969" as a listen address) are free
//     loopback ports, and `redis://127.0.0.1:6379` a redis-server of the
//     test's own;
//   - a <placeholder> is a fixed value;
//   - its environment has TRACKER_HTTP_ADDR and TRACKER_ADMIN_ADDR on free
//     loopback ports, for what the block starts without naming a port (a
//     variable the block sets wins).
//
// The block's processes share one process group, which the test stops
// (SIGTERM, then SIGKILL) once its entry's check is done.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"

	"github.com/tracklink/tracklink/internal/testkit"
)

// docBlock is one shell block of a page.
type docBlock struct {
	file    string
	line    int // of the opening fence
	markers []string
	body    string
}

// run is a runnable block being run: its ports, its Redis and its output.
type exampleRun struct {
	http, admin int   // TRACKER_HTTP_ADDR's and TRACKER_ADMIN_ADDR's ports
	ports       []int // the entry's ports, in the order it lists them
	redisURL    string
	out         *testkit.Buffer
	exited      chan struct{}
}

func (r *exampleRun) url(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

// example says how one runnable block runs and what shows it works.
type example struct {
	ports []int // ports the block names, replaced by free ones in order
	redis bool  // give it a redis-server for redis://127.0.0.1:6379
	// extra substitutions (old, new pairs), after the ports'
	extra func(r *exampleRun) []string
	exits bool // the block ends by itself (else it serves until stopped)
	check func(t *testing.T, r *exampleRun)
}

var examples = map[string]example{
	// go run ./cmd/tracker: a node on the embedded store; its public
	// page, and UDP on the HTTP port (TRACKER_HTTP_ADDR is all it got).
	"quickstart": {check: func(t *testing.T, r *exampleRun) {
		waitHTTP(t, r, r.url(r.http)+"/", "Announce URLs")
		udpWorks(t, r.http)
		if !strings.Contains(r.out.String(), "UDP listens on the port of TRACKER_HTTP_ADDR") {
			t.Errorf("the startup log does not say that UDP followed TRACKER_HTTP_ADDR:\n%s", r.out.String())
		}
	}},
	// The admin panel: its sign-in page on the admin listener.
	"admin": {check: func(t *testing.T, r *exampleRun) {
		waitHTTP(t, r, r.url(r.admin)+"/", "token")
	}},
	// Two linked nodes and a hub on one Redis: the hub lists both, a peer
	// announced at node1 is returned by node2, and node2's UDP is on its
	// HTTP port.
	"link": {ports: []int{6969, 6970}, redis: true, check: func(t *testing.T, r *exampleRun) {
		n1, n2 := r.url(r.ports[0]), r.url(r.ports[1])
		waitHTTP(t, r, r.url(r.http)+"/status", `"node2"`)
		waitHTTP(t, r, r.url(r.http)+"/status", `"node1"`)
		testkit.Eventually(t, 20*time.Second, "node2 returns a peer announced at node1", func() bool {
			announceTo(t, n1, "readme-link-torrent1", 7001, 10, "started")
			return scrapeOrZero(n2, "readme-link-torrent1").leechers == 1
		})
		udpWorks(t, r.ports[1])
	}},
	// tracker cluster: ready, and its hub lists three nodes.
	"cluster": {ports: []int{6969}, extra: func(r *exampleRun) []string {
		// Three node ports from the first, and the hub's (-hub-port,
		// 6968 by default) after them.
		return []string{"-base-port 6969", fmt.Sprintf("-base-port %d -hub-port %d", r.ports[0], r.ports[0]+3)}
	}, check: func(t *testing.T, r *exampleRun) {
		waitHTTP(t, r, r.url(r.ports[0]+3)+"/status", `"node3"`)
		// The hub lists node3 as soon as it says hello; the cluster says
		// it is ready once every process answers /readyz, a moment later.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(r.out.String(), "cluster ready") {
			if time.Now().After(deadline) {
				t.Fatalf("no \"cluster ready\":\n%s", r.out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}},
	"linkkey": {exits: true, check: func(t *testing.T, r *exampleRun) {
		for _, want := range []string{"TRACKER_NODE_ID=friend1", "TRACKER_LINK_KEY=", "TRACKER_LINK_HUB_KEY="} {
			if !strings.Contains(r.out.String(), want) {
				t.Errorf("output lacks %s:\n%s", want, r.out.String())
			}
		}
	}},
	"acl": {exits: true, check: func(t *testing.T, r *exampleRun) {
		for _, want := range []string{"ACL SETUSER tl-hub", "ACL SETUSER tl-node-friend1"} {
			if !strings.Contains(r.out.String(), want) {
				t.Errorf("output lacks %s:\n%s", want, r.out.String())
			}
		}
	}},
}

// TestExamplesMarked: every shell block of the docs is runnable (and has
// an entry in examples), not run for a reason given, or the test command.
func TestExamplesMarked(t *testing.T) {
	blocks := docBlocks(t)
	seen := map[string]bool{}
	for _, b := range blocks {
		kind, arg := blockMarker(b)
		switch kind {
		case "runnable":
			if _, ok := examples[arg]; !ok {
				t.Errorf("%s:%d: runnable %q has no entry in examples", b.file, b.line, arg)
			}
			if seen[arg] {
				t.Errorf("%s:%d: runnable %q twice", b.file, b.line, arg)
			}
			seen[arg] = true
		case "not-run":
			if len(arg) < 10 {
				t.Errorf("%s:%d: not-run needs a reason", b.file, b.line)
			}
		case "test-command":
		default:
			t.Errorf("%s:%d: shell block without <!-- runnable: NAME --> or <!-- not-run: REASON --> above it:\n%s", b.file, b.line, b.body)
		}
	}
	for name := range examples {
		if !seen[name] {
			t.Errorf("examples[%q] has no runnable block", name)
		}
	}
	if len(blocks) < 10 {
		t.Fatalf("found only %d shell blocks: is the parser broken?", len(blocks))
	}
}

// TestExamples runs every runnable block of the docs as written (see the
// top of this file) and checks it works. It needs what a reader needs to
// run them: bash and openssl (which makes their secrets), besides Go and
// redis-server; it fails, naming them, when they are missing.
func TestExamples(t *testing.T) {
	for _, tool := range []string{"bash", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the docs' runnable examples need %s (apt-get install %s): %v", tool, tool, err)
		}
	}
	bin := buildTracker(t)
	for _, b := range docBlocks(t) {
		kind, name := blockMarker(b)
		if kind != "runnable" {
			continue
		}
		ex, ok := examples[name]
		if !ok {
			continue // TestExamplesMarked says so
		}
		t.Run(name, func(t *testing.T) { runExample(t, bin, b, ex) })
	}
}

func runExample(t *testing.T, bin string, b docBlock, ex example) {
	r := &exampleRun{out: &testkit.Buffer{}, exited: make(chan struct{})}
	script := b.body
	// Ports first (the block's own), then the rest.
	var subs []string
	for _, p := range ex.ports {
		free := testkit.PortRange(t, 4) // the cluster takes 3 nodes and the hub from its port
		r.ports = append(r.ports, free)
		subs = append(subs, fmt.Sprintf("=:%d", p), fmt.Sprintf("=127.0.0.1:%d", free))
	}
	r.http, r.admin = testkit.PortRange(t, 1), testkit.PortRange(t, 1)
	if ex.redis {
		r.redisURL = testkit.StartRedis(t).URL()
		subs = append(subs, "redis://127.0.0.1:6379", r.redisURL)
	}
	if ex.extra != nil {
		subs = append(subs, ex.extra(r)...)
	}
	script = strings.NewReplacer(subs...).Replace(script)
	script = regexp.MustCompile(`<[a-zA-Z][a-zA-Z ]*>`).ReplaceAllString(script, "placeholder-0123456789abcdef")
	// A bare tracker command: first word of a line, after any VAR=value.
	script = regexp.MustCompile(`(?m)^((?:[A-Z_]+=\S*\s+)*)tracker(\s)`).ReplaceAllString(script, "${1}"+bin+"${2}")
	script = strings.ReplaceAll(script, "go run ./cmd/tracker", bin)
	// `go build -o X`: the test puts a copy of the binary at X (in Go, so
	// that the block needs no more tools than it names), and the line
	// becomes a no-op that says so.
	dir := t.TempDir()
	build := regexp.MustCompile(`go build -o (\S+) \./cmd/tracker`)
	for _, m := range build.FindAllStringSubmatch(script, -1) {
		copyFile(t, bin, filepath.Join(dir, m[1]))
	}
	script = build.ReplaceAllString(script, ": built $1")
	t.Logf("%s:%d as run:\n%s", b.file, b.line, script)

	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), fmt.Sprintf("TRACKER_HTTP_ADDR=127.0.0.1:%d", r.http), fmt.Sprintf("TRACKER_ADMIN_ADDR=127.0.0.1:%d", r.admin))
	cmd.Stdout, cmd.Stderr = r.out, r.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(r.exited) }()
	defer func() {
		stopGroup(t, cmd.Process.Pid, r.exited)
		if t.Failed() {
			t.Logf("output:\n%s", r.out.String())
		}
	}()
	if ex.exits {
		select {
		case <-r.exited:
			if waitErr != nil {
				t.Fatalf("exited with %v:\n%s", waitErr, r.out.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("did not end within 30s:\n%s", r.out.String())
		}
	}
	ex.check(t, r)
}

// stopGroup stops the process group pgid: SIGTERM, and SIGKILL for what
// is left after 10 s. It waits for the group's leader (bash) too.
func stopGroup(t *testing.T, pgid int, leader <-chan struct{}) {
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(-pgid, 0) == nil {
		t.Errorf("process group %d still running 10s after SIGTERM: killed", pgid)
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
	<-leader
}

// waitHTTP waits up to 30 s for u to answer 200 with want in its body.
func waitHTTP(t *testing.T, r *exampleRun, u, want string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-r.exited:
			t.Fatalf("the block ended before %s answered:\n%s", u, r.out.String())
		default:
		}
		resp, err := http.Get(u)
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = resp.Status + " " + string(body)
		if resp.StatusCode == 200 && strings.Contains(string(body), want) {
			return
		}
	}
	t.Fatalf("%s: no 200 with %q within 30s; last: %.300s", u, want, last)
}

// udpWorks announces over UDP (anacrolix's client) to the HTTP port.
func udpWorks(t *testing.T, port int) {
	t.Helper()
	var ih [20]byte
	binary.BigEndian.PutUint64(ih[:], uint64(port))
	res := clientAnnounce(t, fmt.Sprintf("udp://127.0.0.1:%d/announce", port), ih, 7002, 1, tracker.Started)
	if res.Leechers < 1 {
		t.Fatalf("UDP announce on port %d: %+v", port, res)
	}
}

// docBlocks returns the shell blocks of README.md, CHANGELOG.md and
// docs/*.md.
func docBlocks(t *testing.T) []docBlock {
	t.Helper()
	files, _ := filepath.Glob("../../docs/*.md")
	sort.Strings(files)
	files = append([]string{"../../README.md", "../../CHANGELOG.md"}, files...)
	fence := regexp.MustCompile("^(\\s*)```\\s*([A-Za-z]*)")
	var out []docBlock
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(raw), "\n")
		for i := 0; i < len(lines); i++ {
			m := fence.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			end := i + 1
			for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
				end++
			}
			switch m[2] {
			case "sh", "bash", "shell", "console":
				b := docBlock{file: filepath.Base(f), line: i + 1}
				for j := i - 1; j >= 0; j-- {
					c := strings.TrimSpace(lines[j])
					if !strings.HasPrefix(c, "<!--") || !strings.HasSuffix(c, "-->") {
						break
					}
					b.markers = append(b.markers, strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(c, "<!--"), "-->")))
				}
				var body []string
				for _, l := range lines[i+1 : min(end, len(lines))] {
					body = append(body, strings.TrimPrefix(l, m[1]))
				}
				b.body = strings.Join(body, "\n") + "\n"
				out = append(out, b)
			}
			i = end
		}
	}
	return out
}

// blockMarker is what a block's markers say it is: "runnable" and its
// name, "not-run" and the reason, "test-command", or "" (unmarked).
func blockMarker(b docBlock) (kind, arg string) {
	for _, m := range b.markers {
		k, a, _ := strings.Cut(m, ":")
		switch k = strings.TrimSpace(k); k {
		case "runnable", "not-run":
			return k, strings.TrimSpace(a)
		case "test-command":
			kind = k
		}
	}
	return kind, ""
}

// TestEnvExampleRequired: the head of .env.example lists, for each compose
// file, exactly the variables that file refuses to start without
// (${NAME:?...}).
func TestEnvExampleRequired(t *testing.T) {
	env, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	// "#   FILE:  NAME NAME" and its continuation lines "#   NAME NAME".
	listed := map[string]map[string]bool{}
	var cur map[string]bool
	head := regexp.MustCompile(`^#\s+(docker-compose[a-z.]*\.yml):\s+([A-Z_ ]+)$`)
	more := regexp.MustCompile(`^#\s{2,}([A-Z_][A-Z_ ]*)$`)
	for _, l := range strings.Split(string(env), "\n") {
		if m := head.FindStringSubmatch(l); m != nil {
			cur = map[string]bool{}
			listed[m[1]] = cur
			l = "#  " + m[2]
		}
		if m := more.FindStringSubmatch(l); m != nil && cur != nil {
			for _, f := range strings.Fields(m[1]) {
				cur[f] = true
			}
			continue
		}
		cur = nil
	}
	for _, file := range []string{"docker-compose.yml", "docker-compose.friends.yml"} {
		b, err := os.ReadFile("../../" + file)
		if err != nil {
			t.Fatal(err)
		}
		need := map[string]bool{}
		for _, m := range regexp.MustCompile(`\$\{([A-Z_]+):\?`).FindAllStringSubmatch(string(b), -1) {
			need[m[1]] = true
		}
		if listed[file] == nil {
			t.Fatalf(".env.example does not say what %s requires", file)
		}
		for k := range need {
			if !listed[file][k] {
				t.Errorf(".env.example: %s requires %s, not listed", file, k)
			}
		}
		for k := range listed[file] {
			if !need[k] {
				t.Errorf(".env.example lists %s as required by %s, which does not require it", k, file)
			}
		}
	}
}

// copyFile copies the executable from to to.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
