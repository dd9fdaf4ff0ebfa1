// Package clients tests the tracker with real BitTorrent clients that this
// project did not write: anacrolix/torrent's client and Debian's
// libtorrent. It drives the built `tracker` binary as processes (`tracker
// cluster`, a single node, `tracker torrent create`), so the full client
// library (webrtc, sqlite and all) is linked only into this test binary,
// not into the command's own.
package clients

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/testkit"
)

// bin is the tracker binary, built once for the package's tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tracklink-clients")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "tracker")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is `tracker cluster`: a redis-server, the hub and linked nodes
// on consecutive loopback ports, HTTP and UDP on the same port.
type cluster struct {
	nodes []string // HTTP base URLs
}

// startCluster runs `tracker cluster -nodes n` until the end of the test,
// then stops it (SIGTERM to its PID; it stops its children).
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	base := testkit.PortRange(t, n+1)
	cmd := exec.Command(bin, "cluster", "-nodes", strconv.Itoa(n), "-base-port", strconv.Itoa(base))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	cmd.Stderr = &logs
	exited := startProcess(t, cmd)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "cluster ready") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("tracker cluster exited: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("tracker cluster not ready within 30s\n%s", logs.String())
	}
	c := &cluster{}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, "http://127.0.0.1:"+strconv.Itoa(base+i))
	}
	return c
}

// startNode runs one node in embedded mode on a free port until the end of
// the test, and returns its HTTP base URL.
func startNode(t *testing.T) string {
	t.Helper()
	port := testkit.PortRange(t, 1)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "TRACKER_HTTP_ADDR="+addr, "TRACKER_UDP_ADDR="+addr, "TRACKER_LOG_LEVEL=warn")
	var logs testkit.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	startProcess(t, cmd)
	u := "http://" + addr
	testkit.Eventually(t, 10*time.Second, "node ready", func() bool {
		resp, err := http.Get(u + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return u
}

// startProcess starts cmd and stops it at the end of the test: SIGTERM to
// its PID (the cluster runner stops its children), SIGKILL after 20 s. The
// channel receives its exit.
func startProcess(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%s did not stop within 20s", strings.Join(cmd.Args, " "))
		}
	})
	return exited
}

// running is a process a test stops before its end (and, if it did not,
// the end of the test does).
type running struct {
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// startRunning starts cmd; stop, or the end of the test, stops it by its
// PID (SIGTERM, SIGKILL after 20 s).
func startRunning(t *testing.T, cmd *exec.Cmd) *running {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	r.once.Do(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			r.cmd.Process.Kill()
			<-r.done
			t.Errorf("%s did not stop within 20s", strings.Join(r.cmd.Args, " "))
		}
	})
}

// realClient returns an anacrolix/torrent client that can find peers only
// through trackers: DHT, PEX and web seeds are off (this client has no
// local peer discovery), and it listens on loopback only.
func realClient(t *testing.T, dir string, seed bool) *torrent.Client {
	t.Helper()
	return realClientOn(t, dir, seed, "127.0.0.1")
}

// realClientOn is realClient listening on host.
func realClientOn(t *testing.T, dir string, seed bool, host string) *torrent.Client {
	t.Helper()
	cfg := torrent.NewDefaultClientConfig()
	cfg.DataDir = dir
	cfg.Seed = seed
	cfg.NoDHT = true
	cfg.DisablePEX = true
	cfg.DisableWebtorrent = true
	cfg.DisableWebseeds = true
	cfg.DisableIPv6 = true
	cfg.DisableUTP = true
	cfg.NoDefaultPortForwarding = true
	cfg.ListenHost = func(string) string { return host }
	cfg.ListenPort = 0
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// counts is a swarm as a scrape tells it: seeders, leechers (partial
// seeds included) and downloaders (leechers that are not partial seeds).
type counts struct{ seeders, leechers, downloaders int64 }

func scrapeOf(t *testing.T, base, ih string) counts {
	t.Helper()
	resp, err := http.Get(base + "/scrape?info_hash=" + url.QueryEscape(ih))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := bencode.Unmarshal(body, &m); err != nil {
		t.Fatalf("scrape %q: %v", body, err)
	}
	f, _ := m["files"].(map[string]any)[ih].(map[string]any)
	if f == nil {
		return counts{}
	}
	return counts{f["complete"].(int64), f["incomplete"].(int64), f["downloaders"].(int64)}
}

// runTracker runs the tracker binary with args and returns its output.
func runTracker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tracker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
