package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"
	"go.yaml.in/yaml/v3"

	"github.com/tracklink/tracklink/internal/testkit"
)

// The dashboard and the alert rules operators get (deploy/), tested in
// three tiers: TestOpsFiles always (their shape, and that every metric
// they name is one the code registers); with TRACKLINK_OPS_TEST=1,
// TestAlertRules (promtool check rules and promtool test rules, Debian's
// prometheus package) and TestDashboardQueries (Debian's Prometheus server
// scraping a local cluster under load: every panel's query returns data,
// every alert rule evaluates without error).

const (
	dashboardFile = "../../deploy/grafana/tracklink.json"
	alertsFile    = "../../deploy/prometheus/alerts.yml"
	alertsTest    = "../../deploy/prometheus/alerts_test.yml"
)

// dashboard is what the tests read of the Grafana dashboard.
type dashboard struct {
	Title  string           `json:"title"`
	UID    string           `json:"uid"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID      int              `json:"id"`
	Type    string           `json:"type"`
	Title   string           `json:"title"`
	Panels  []dashboardPanel `json:"panels"` // a collapsed row's
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) (dashboard, []dashboardPanel) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var panels []dashboardPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	return d, panels
}

// alertExprs returns each alert rule's name and expression.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// registeredMetrics are the metric names the program's sources register
// (quoted tracker_*, hub_* and admin_* names), and the Go and process
// collectors' and Prometheus's own that the dashboard uses.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{"up": true, "go_goroutines": true, "process_resident_memory_bytes": true}
	name := regexp.MustCompile(`"((?:tracker|hub|admin)_[a-z0-9_]+)"`)
	for _, dir := range []string{"../../internal", "."} {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			for _, m := range name.FindAllStringSubmatch(string(b), -1) {
				known[m[1]] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return known
}

// metricNames are the metric names an expression reads.
func metricNames(expr string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`\b((?:tracker|hub|admin|go|process)_[a-z0-9_]+|up)\b`).FindAllStringSubmatch(expr, -1) {
		n := m[1]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(n, "_seconds"+suffix) {
				n = strings.TrimSuffix(n, suffix)
			}
		}
		out = append(out, n)
	}
	return out
}

// TestOpsFiles: the dashboard is well formed (ids unique, every panel a
// title and at least one query), each alert has a unit test, and every
// metric the dashboard and the alerts read is one the code registers.
func TestOpsFiles(t *testing.T) {
	known := registeredMetrics(t)
	d, panels := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard without title or uid")
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d: no title or no query", p.ID)
		}
		for _, tg := range p.Targets {
			queries++
			names := metricNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: %s reads no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !known[n] {
					t.Errorf("panel %q reads %s, which the code does not register", p.Title, n)
				}
			}
		}
	}
	if queries < 20 {
		t.Errorf("only %d queries in the dashboard", queries)
	}
	tests, err := os.ReadFile(alertsTest)
	if err != nil {
		t.Fatal(err)
	}
	for alert, expr := range alertExprs(t) {
		if !strings.Contains(string(tests), "alertname: "+alert+"\n") && !strings.Contains(string(tests), "alertname: "+alert+",") {
			t.Errorf("alert %s has no unit test in %s", alert, alertsTest)
		}
		for _, n := range metricNames(expr) {
			if !known[n] {
				t.Errorf("alert %s reads %s, which the code does not register", alert, n)
			}
		}
	}
}

// opsTest skips unless the ops tier (TRACKLINK_OPS_TEST) is on, and
// returns the path of a tool of Debian's prometheus package, failing when
// it is missing.
func opsTest(t *testing.T, tool string) string {
	t.Helper()
	testkit.Ops.Require(t)
	return testkit.Ops.Tool(t, tool, "apt-get install prometheus")
}

// TestAlertRules runs promtool on the alert rules: they check, and each
// alert's unit tests (deploy/prometheus/alerts_test.yml) pass.
func TestAlertRules(t *testing.T) {
	promtool := opsTest(t, "promtool")
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertsTest}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDashboardQueries runs Debian's Prometheus server scraping a hub and
// two linked nodes (one of them limiting loopback clients, so that some
// announces are refused) under HTTP and UDP load, with Redis paused for a
// moment (Redis errors), a forged link message (a refusal at the hub) and
// a short datagram (a UDP drop). Then every query of every dashboard panel
// returns data (at least one series with a number), and every alert rule,
// loaded into the same server, evaluates without error.
func TestDashboardQueries(t *testing.T) {
	promBin := opsTest(t, "prometheus")
	c := newCluster(t)
	c.nodes["node1"] = startProc(t, runNode, c.env("TRACKER_NODE_ID=node1", "TRACKER_LINK_PASSWORD="+testPassword, "TRACKER_REDIS_TIMEOUT=200ms"))
	c.nodes["node2"] = startProc(t, runNode, c.env("TRACKER_NODE_ID=node2", "TRACKER_LINK_PASSWORD="+testPassword, "TRACKER_REDIS_TIMEOUT=200ms",
		"TRACKER_LIMIT_LOOPBACK=true", "TRACKER_RATE_LIMIT=20", "TRACKER_RATE_BURST=20"))
	c.waitLinked("node1", "node2")

	abs, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	hostOf := func(u string) string { return strings.TrimPrefix(u, "http://") }
	dir := t.TempDir()
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: tracklink-node
    static_configs: [{targets: [%q, %q]}]
  - job_name: tracklink-hub
    static_configs: [{targets: [%q]}]
`, abs, hostOf(c.nodes["node1"].url), hostOf(c.nodes["node2"].url), hostOf(c.hub.url))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := fmt.Sprintf("127.0.0.1:%d", testkit.PortRange(t, 1))
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	var promLog testkit.Buffer
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	promDone := make(chan struct{})
	go func() { prom.Wait(); close(promDone) }()
	t.Cleanup(func() {
		prom.Process.Signal(syscall.SIGTERM)
		select {
		case <-promDone:
		case <-time.After(15 * time.Second):
			prom.Process.Kill()
			<-promDone
		}
		if t.Failed() {
			t.Logf("prometheus:\n%s", promLog.String())
		}
	})
	promURL := "http://" + promAddr
	if err := waitReady(context.Background(), nil, promURL+"/-/ready"); err != nil {
		t.Fatalf("prometheus: %v", err)
	}

	// Load for about 12 s: HTTP announces and scrapes at both nodes, UDP
	// announces at node1; Redis paused 1.5 s on the way; a forged link
	// message and a short datagram.
	var ih [20]byte
	copy(ih[:], "ops-test-torrent-001")
	udpURL := testkit.UDPAnnounceURL(t, c.nodes["node1"].url)
	var wg sync.WaitGroup
	for _, n := range []string{"node1", "node2"} {
		wg.Go(func() { traffic(t, c.nodes[n].url, "ops-test-torrent-001", 300, 12*time.Second) })
	}
	var udpOK, udpFailed atomic.Int64
	wg.Go(func() {
		for i := range 100 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := tracker.Announce{TrackerUrl: udpURL, Context: ctx,
				Request: tracker.AnnounceRequest{InfoHash: ih, PeerId: [20]byte{byte(i)}, Port: uint16(30000 + i), Left: 1, Event: tracker.Started, NumWant: -1}}.Do()
			cancel()
			if err != nil {
				udpFailed.Add(1) // while Redis is paused
			} else {
				udpOK.Add(1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	time.Sleep(2 * time.Second)
	if err := c.client(t).Publish(context.Background(), c.channel+":up", "not a link message").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := c.redis.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := c.redis.Resume(); err != nil {
		t.Fatal(err)
	}
	if u, err := url.Parse(udpURL); err == nil {
		if conn, err := net.Dial("udp", u.Host); err == nil {
			conn.Write([]byte("short"))
			conn.Close()
		}
	}
	wg.Wait()
	t.Logf("UDP announces: %d answered, %d failed", udpOK.Load(), udpFailed.Load())
	time.Sleep(3 * time.Second) // a few scrapes after the load

	query := func(expr string) (series int, numbers int, err error) {
		resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return 0, 0, err
		}
		if r.Status != "success" {
			return 0, 0, fmt.Errorf("%s: %s", r.Status, r.Error)
		}
		for _, s := range r.Data.Result {
			if v, ok := s.Value[1].(string); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) {
					numbers++
				}
			}
		}
		return len(r.Data.Result), numbers, nil
	}

	// Every target scraped.
	if n, up, err := query(`up == 1`); err != nil || n != 3 || up != 3 {
		t.Fatalf("targets up: %d (%v), want 3", n, err)
	}
	_, panels := loadDashboard(t)
	checked := 0
	for _, p := range panels {
		for _, tg := range p.Targets {
			n, numbers, err := query(tg.Expr)
			switch {
			case err != nil:
				t.Errorf("panel %q, query %s: %v", p.Title, tg.RefID, err)
			case n == 0:
				t.Errorf("panel %q, query %s returns no data: %s", p.Title, tg.RefID, tg.Expr)
			case numbers == 0:
				t.Errorf("panel %q, query %s returns only NaN: %s", p.Title, tg.RefID, tg.Expr)
			}
			checked++
		}
	}
	t.Logf("%d panel queries return data", checked)

	// Every alert rule loaded, and evaluated without error on this data.
	resp, err := http.Get(promURL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &rules); err != nil {
		t.Fatal(err)
	}
	var loaded []string
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			loaded = append(loaded, r.Name)
			if r.Health != "ok" {
				t.Errorf("alert %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	for name := range alertExprs(t) {
		if !slices.Contains(loaded, name) {
			t.Errorf("alert %s not loaded by Prometheus", name)
		}
	}
}
