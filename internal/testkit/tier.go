package testkit

import (
	"os"
	"os/exec"
	"testing"
)

// Tier is one tier of the heavy tests: those that need more than Go and
// redis-server. Var is the environment variable that runs it, Needs what
// it needs besides. `go test ./...` without the variable skips the tier's
// tests and says why (Require); with it, a test of the tier fails, never
// skips, when what it needs is missing (Tool, NewNetns). README.md's test
// command, which CI runs, sets every tier's variable.
type Tier struct {
	Var   string
	Needs string
}

// The tiers. TRACKLINK_FAULTS (short or long: the fault suite of
// cmd/tracker, which needs only Go and redis-server but takes minutes)
// is kept apart, with its own values.
var (
	// Browser: headless Chromium drives the admin panel and the public page.
	Browser = Tier{"TRACKLINK_BROWSER_TEST", "Chromium (apt-get install chromium)"}
	// Clients: real BitTorrent clients' code reads what we serve and write.
	Clients = Tier{"TRACKLINK_CLIENTS_TEST", "libtorrent for Debian's python3 (apt-get install python3-libtorrent) and transmission-show (apt-get install transmission-cli)"}
	// Netns: hosts of their own (network namespaces) for members and clients.
	Netns = Tier{"TRACKLINK_NETNS_TEST", "the right to make network namespaces (root) and iproute2"}
	// Ops: Prometheus checks the alert rules and the dashboard's queries.
	Ops = Tier{"TRACKLINK_OPS_TEST", "Debian's prometheus package (promtool, prometheus)"}
	// WebTorrent: real WebRTC clients in Node and in Chromium.
	WebTorrent = Tier{"TRACKLINK_WEBTORRENT_TEST", "Node 20, npm and Chromium (apt-get install nodejs npm chromium)"}
	// Compose: the compose files on a real Docker engine, with a client
	// host of its own.
	Compose = Tier{"TRACKLINK_COMPOSE_TEST", "root, iproute2, and Docker (installed by ../shared/docker/setup.sh, which the test runs); 40 minutes"}
)

// Tiers is every tier: README.md's test command sets each one's variable
// (TestTestCommandRunsEveryTier).
var Tiers = []Tier{Browser, Clients, Netns, Ops, WebTorrent, Compose}

// On reports whether the tier's variable is set.
func (tr Tier) On() bool { return os.Getenv(tr.Var) != "" }

// Require skips tb unless the tier runs, naming its variable and what it
// needs.
func (tr Tier) Require(tb testing.TB) {
	tb.Helper()
	if !tr.On() {
		tb.Skipf("tier %s is off: set %s=1 to run this test; it needs %s (README.md's test command sets it)", tr.Var, tr.Var, tr.Needs)
	}
}

// Tool returns the path of the program name, failing tb when it is not
// installed: the tier is on (Require came first), so a missing tool is a
// failure, never a skip. install says how to get it.
func (tr Tier) Tool(tb testing.TB, name, install string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s is set but %s is not installed (%s; .ci/run installs it): %v", tr.Var, name, install, err)
	}
	return p
}
