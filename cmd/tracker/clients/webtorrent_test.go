package clients

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/testkit"
)

// The WebTorrent tier (testkit.WebTorrent) runs real WebRTC clients (Node
// with @roamhq/wrtc: webtorrent and bittorrent-tracker's client) against
// two processes of one node on one Redis. It needs Node and npm; it runs
// when TRACKLINK_WEBTORRENT_TEST=1 and fails, never skips, when a tool is
// missing then.

// webtorrentDir is the JS harness (package.json and package-lock.json
// checked in; node_modules is not).
const webtorrentDir = "webtorrent"

// npmHarness makes sure the harness's packages are installed (npm ci when
// node_modules is missing) and returns the path of node.
func npmHarness(t *testing.T) string {
	t.Helper()
	testkit.WebTorrent.Require(t)
	node := testkit.WebTorrent.Tool(t, "node", "apt-get install nodejs npm")
	if _, err := os.Stat(filepath.Join(webtorrentDir, "node_modules")); err != nil {
		npm := testkit.WebTorrent.Tool(t, "npm", "apt-get install npm")
		cmd := exec.Command(npm, "ci")
		cmd.Dir = webtorrentDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", webtorrentDir, err, out)
		}
	}
	return node
}

// startWSProcesses runs n processes of node "wt" on one redis-server, and
// returns their ws:// announce URLs.
func startWSProcesses(t *testing.T, n int) []string {
	t.Helper()
	rs := testkit.StartRedis(t)
	base := testkit.PortRange(t, n)
	var urls []string
	for i := range n {
		addr := "127.0.0.1:" + strconv.Itoa(base+i)
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "TRACKER_REDIS_URL="+rs.URL(), "TRACKER_NODE_ID=wt", "TRACKER_HTTP_ADDR="+addr,
			"TRACKER_UDP_ADDR=off", "TRACKER_LOG_LEVEL=warn")
		var logs testkit.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		startProcess(t, cmd)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("process %s:\n%s", addr, logs.String())
			}
		})
		testkit.Eventually(t, 10*time.Second, "node ready", func() bool {
			resp, err := http.Get("http://" + addr + "/ws/status")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var st struct{ Ready bool }
			return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Ready
		})
		urls = append(urls, "ws://"+addr+"/announce")
	}
	return urls
}

// runNode runs a harness script with args and returns its last line of
// output, failing the test if it fails.
func runNode(t *testing.T, node, script string, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Dir = webtorrentDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// TestWebTorrentTransferAcrossProcesses: webtorrent in Node (WebRTC by
// @roamhq/wrtc) seeds a generated file through one process of the node;
// another webtorrent downloads it through the other process; the SHA-256
// matches. The two peers met only through the tracker's signalling across
// processes (Redis pub/sub).
func TestWebTorrentTransferAcrossProcesses(t *testing.T) {
	node := npmHarness(t)
	urls := startWSProcesses(t, 2)
	out := runNode(t, node, "transfer.mjs", 2*time.Minute, urls[0], urls[1])
	if !strings.Contains(out, `"ok":true`) {
		t.Fatalf("transfer: %s", out)
	}
	t.Logf("transfer: %s", out)
}

// TestBittorrentTrackerClient: bittorrent-tracker's own client (what
// webtorrent uses) announces, connects to the other peer through offers
// and answers carried across processes, scrapes, and stops.
func TestBittorrentTrackerClient(t *testing.T) {
	node := npmHarness(t)
	urls := startWSProcesses(t, 2)
	out := runNode(t, node, "protocol.mjs", time.Minute, urls[0], urls[1])
	if !strings.Contains(out, `"ok":true`) {
		t.Fatalf("protocol: %s", out)
	}
	t.Logf("protocol: %s", out)
}
