package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/listen"
	"github.com/tracklink/tracklink/internal/members"
	"github.com/tracklink/tracklink/internal/testkit"
)

// composeFile is the part of a compose file the checks read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Configs  map[string]struct {
		Content string `yaml:"content"`
	} `yaml:"configs"`
}

// redisServices returns the file's Redis services ("redis", "redis-*").
func (c composeFile) redisServices() []string {
	var out []string
	for name := range c.Services {
		if name == "redis" || strings.HasPrefix(name, "redis-") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

type composeService struct {
	Build       any      `yaml:"build"`
	Image       string   `yaml:"image"`
	PullPolicy  string   `yaml:"pull_policy"`
	NetworkMode string   `yaml:"network_mode"`
	Restart     string   `yaml:"restart"`
	Command     []string `yaml:"command"`
	EnvFile     any      `yaml:"env_file"`
	Environment []string `yaml:"environment"`
	Ports       []string `yaml:"ports"`
	Volumes     []string `yaml:"volumes"`
	Configs     []struct {
		Source string `yaml:"source"`
		Target string `yaml:"target"`
	} `yaml:"configs"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test    []string `yaml:"test"`
		Disable bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
}

// env splits the service's environment list into the variables it sets
// and the ones it passes through from .env (a bare NAME).
func (s composeService) env() (set map[string]string, passed []string) {
	set = map[string]string{}
	for _, e := range s.Environment {
		if k, v, ok := strings.Cut(e, "="); ok {
			set[k] = v
		} else {
			passed = append(passed, e)
		}
	}
	return set, passed
}

func loadCompose(t *testing.T, name string) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

// interpolate resolves compose's ${NAME:-default} to its default and
// ${NAME:?message} and ${NAME} to a placeholder of enough length.
func interpolate(v string) string {
	return regexp.MustCompile(`\$\{[A-Z_]+(:-([^}]*)|:\?[^}]*)?\}`).ReplaceAllStringFunc(v, func(m string) string {
		if _, def, ok := strings.Cut(m, ":-"); ok {
			return strings.TrimSuffix(def, "}")
		}
		return "placeholder-of-enough-length"
	})
}

// Variables only one role reads: passing them to the other role is the
// leak the compose files must not have.
var (
	nodeOnlyVars = regexp.MustCompile(`^TRACKER_(NODE_ID|UDP_.*|NUMWANT_.*|MIN_INTERVAL|ALLOW_IP_PARAM|RATE_.*|LIMIT_LOOPBACK|ENFORCE_MIN_INTERVAL|BIND_KEYS|PEER_TABLE_SLOTS|SCRAPE_MAX_HASHES|HTTP_MAX_CONNS|HTTP_MAX_CONNS_PER_ADDR|TRUSTED_PROXIES|PROXY_HEADER|REDIS_PIPELINE_.*|STORE_PEER_IDS|NEW_SWARMS_.*|ALLOWED_.*|SHARE_.*|LINK_FLUSH|LINK_QUEUE|LINK_KEY|LINK_HUB_KEY)$`)
	hubOnlyVars  = regexp.MustCompile(`^TRACKER_HUB_.*$`)
	// The Redis users' rules name the tl: prefix and the tl:link channel.
	fixedVars = regexp.MustCompile(`^TRACKER_(REDIS_PREFIX|LINK_CHANNEL|REDIS_URL|LINK_REDIS_URL|LINK_PASSWORD|HTTP_ADDR|DEBUG_ADDR|REDIS_CLUSTER)$`)
)

// TestComposeFiles checks what `docker compose up` needs, without a
// Docker engine (TestCompose runs them for real): every variable is one
// the program reads; each role gets its own variables only; secrets are
// required; the image is built by one service; nodes use the host's
// network with a port range, and what is published is on loopback only.
func TestComposeFiles(t *testing.T) {
	known := config.KnownVars()
	for _, file := range []string{"docker-compose.yml", "docker-compose.friends.yml"} {
		t.Run(file, func(t *testing.T) {
			c := loadCompose(t, file)
			// Each Redis service: the users it creates, and the loopback
			// port nodes reach it on (its published port's variable).
			users := map[string]map[string][]string{}
			published := map[string]string{}
			for _, r := range c.redisServices() {
				users[r] = composeUsers(t, c.Services[r].Command)
				for _, p := range c.Services[r].Ports {
					published[r] = strings.TrimSuffix(strings.TrimPrefix(p, "127.0.0.1:"), ":6379")
				}
			}
			if len(users) == 0 {
				t.Fatal("no redis service")
			}
			// Each Redis's administrative step: a one-shot setup service
			// (tracker redis-setup) as its tl-admin user.
			setupFor := map[string]string{}
			for name, s := range c.Services {
				if len(s.Command) > 0 && s.Command[0] == "redis-setup" {
					if r := checkComposeSetup(t, name, s, users); r != "" {
						setupFor[r] = name
					}
				}
			}
			for r := range users {
				if setupFor[r] == "" {
					t.Errorf("no setup service loads the functions of %s", r)
				}
			}
			// completedSetup reports whether service s starts after the
			// setup of Redis r succeeded.
			completedSetup := func(s composeService, r string) bool {
				return s.DependsOn[setupFor[r]].Condition == "service_completed_successfully"
			}
			hubs, nodes, builds := 0, 0, 0
			for name, s := range c.Services {
				for _, p := range s.Ports {
					if !strings.HasPrefix(p, "127.0.0.1:") {
						t.Errorf("%s publishes %s beyond the host's loopback", name, p)
					}
				}
				if users[name] != nil {
					if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "ping") {
						t.Errorf("redis needs a ping health check")
					}
					continue
				}
				if len(s.Command) > 0 && s.Command[0] == "redis-setup" {
					continue // checkComposeSetup
				}
				if s.EnvFile != nil {
					t.Errorf("%s reads a whole env file; list its role's variables instead", name)
				}
				if s.Build != nil {
					builds++
				} else if s.Image != "tracklink:latest" || s.PullPolicy != "never" {
					t.Errorf("%s: without build, want image tracklink:latest and pull_policy never (the image another service builds), got %q %q", name, s.Image, s.PullPolicy)
				}
				set, passed := s.env()
				isHub := len(s.Command) > 0 && s.Command[0] == "hub"
				for _, k := range passed {
					switch {
					case !known[k]:
						t.Errorf("%s passes %s, which the program does not read", name, k)
					case fixedVars.MatchString(k):
						t.Errorf("%s passes %s through; the compose file must set it", name, k)
					case isHub && nodeOnlyVars.MatchString(k), !isHub && hubOnlyVars.MatchString(k):
						t.Errorf("%s passes %s, which its role does not read", name, k)
					}
				}
				for k, v := range set {
					if !known[k] {
						t.Errorf("%s sets %s, which the program does not read", name, k)
					}
					if (k == "TRACKER_LINK_PASSWORD" || k == "TRACKER_UDP_SECRET") && !strings.Contains(v, ":?") {
						t.Errorf("%s: %s must be required (${%s:?...}), got %q", name, k, k, v)
					}
				}
				if _, ok := set["TRACKER_LINK_PASSWORD"]; !ok {
					t.Errorf("%s does not take TRACKER_LINK_PASSWORD", name)
				}
				// Each role connects as a Redis user of its own: the hub
				// on the compose network (to each member's Redis, through
				// its members file), nodes on the host's loopback.
				if isHub {
					for r := range users {
						if !completedSetup(s, r) {
							t.Errorf("%s: should start after %s loaded the functions of %s", name, setupFor[r], r)
						}
					}
				}
				if isHub && set["TRACKER_HUB_MEMBERS"] != "" {
					checkComposeMembers(t, c, s, set["TRACKER_HUB_MEMBERS"], users)
				} else if isHub {
					m := regexp.MustCompile(`^redis://([a-z0-9-]+):\$\{[A-Z_]+\}@(redis[a-z-]*):6379$`).FindStringSubmatch(set["TRACKER_REDIS_URL"])
					if m == nil || users[m[2]][m[1]] == nil {
						t.Errorf("%s: TRACKER_REDIS_URL = %q, want a user a redis service creates, on the compose network", name, set["TRACKER_REDIS_URL"])
					}
				} else {
					m := regexp.MustCompile(`^redis://([a-z0-9-]+):\$\{[A-Z_]+\}@127\.0\.0\.1:(\$\{[A-Z_]+:-[0-9]+\})$`).FindStringSubmatch(set["TRACKER_REDIS_URL"])
					ok := false
					for r, port := range published {
						if m != nil && port == m[2] && users[r][m[1]] != nil {
							ok = true
							if !completedSetup(s, r) {
								t.Errorf("%s: should start after %s loaded the functions of %s", name, setupFor[r], r)
							}
						}
					}
					if !ok {
						t.Errorf("%s: TRACKER_REDIS_URL = %q, want a user of the redis service published on that loopback port", name, set["TRACKER_REDIS_URL"])
					}
				}
				for dep, d := range s.DependsOn {
					ds, ok := c.Services[dep]
					if !ok {
						t.Errorf("%s depends on unknown %s", name, dep)
						continue
					}
					// Our image has a HEALTHCHECK; redis declares one here.
					if d.Condition == "service_healthy" && users[dep] != nil && ds.Healthcheck == nil {
						t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
					}
				}
				// Parse the service's environment as the program would.
				environ := []string{}
				for k, v := range set {
					environ = append(environ, k+"="+interpolate(v))
				}
				cfg, _, err := config.Load(environ)
				if err != nil {
					t.Errorf("%s: its environment does not load: %v", name, err)
					continue
				}
				if isHub {
					hubs++
					if err := cfg.ValidateListen(false); err != nil {
						t.Errorf("hub: %v", err)
					}
					// Its status and its admin panel, each published on
					// the host's loopback only.
					_, port, _ := net.SplitHostPort(cfg.HTTP.Addr)
					_, admin, _ := net.SplitHostPort(cfg.Admin.Addr)
					if len(s.Ports) != 2 || !strings.HasPrefix(s.Ports[0], "127.0.0.1:") || !strings.HasSuffix(s.Ports[0], ":"+port) ||
						!strings.HasPrefix(s.Ports[1], "127.0.0.1:") || !strings.HasSuffix(s.Ports[1], ":"+admin) {
						t.Errorf("hub listens on %s (admin %s) and publishes %v; want both on the host's loopback", port, admin, s.Ports)
					}
					continue
				}
				nodes++
				if err := cfg.ValidateNode(); err != nil {
					t.Errorf("node service %s: %v", name, err)
				}
				if _, ok := s.DependsOn["hub"]; !ok {
					t.Errorf("node service %s should start after the hub", name)
				}
				// Clients' own addresses: the host's network, no
				// published ports; the replicas share one port
				// (TRACKER_REUSEPORT) or take one of a range each.
				r, _ := listen.ParseRange(cfg.HTTP.Addr)
				if s.NetworkMode != "host" || len(s.Ports) > 0 || r.IsRange == cfg.ReusePort || cfg.UDP.Addr != cfg.HTTP.Addr {
					t.Errorf("node service %s: want network_mode host, no ports, HTTP and UDP on one shared port or one port range; got %q %v %q %q reuseport %v", name, s.NetworkMode, s.Ports, cfg.HTTP.Addr, cfg.UDP.Addr, cfg.ReusePort)
				}
				if _, ok := set["TRACKER_NODE_ID"]; !ok {
					t.Errorf("node service %s must set TRACKER_NODE_ID (or every replica takes the host's name)", name)
				}
				// The admin panels: on the host's loopback (host
				// networking publishes nothing), a port per replica.
				if a, _ := listen.ParseRange(cfg.Admin.Addr); a.Host != "127.0.0.1" || !a.IsRange || r.IsRange && a.Last-a.First != r.Last-r.First {
					t.Errorf("node service %s: want TRACKER_ADMIN_ADDR a loopback range (as wide as the replicas' ports, with a range), got %q", name, cfg.Admin.Addr)
				}
			}
			if hubs != 1 || nodes < 1 || builds != 1 {
				t.Fatalf("%d hubs, %d node services, %d services that build the image (want 1, at least 1, 1)", hubs, nodes, builds)
			}
		})
	}
	// The friends topology: two trackers with fixed, different node ids,
	// each restricted to a torrent directory of its own.
	f := loadCompose(t, "docker-compose.friends.yml")
	for _, n := range []string{"alpha", "beta"} {
		s := f.Services[n]
		set, _ := s.env()
		up := strings.ToUpper(n)
		if set["TRACKER_NODE_ID"] != n || set["TRACKER_ALLOWED_DIR"] != "/torrents" || len(s.Volumes) != 1 || s.Volumes[0] != "${"+up+"_TORRENTS:-./torrents/"+n+"}:/torrents" {
			t.Fatalf("%s: want node id %s and TRACKER_ALLOWED_DIR=/torrents on ./torrents/%s, got %v %v", n, n, n, set, s.Volumes)
		}
	}
	// The default topology: one tracker, whatever the number of replicas:
	// one node id, one shared port.
	set, _ := loadCompose(t, "docker-compose.yml").Services["tracker"].env()
	if set["TRACKER_NODE_ID"] != "tracker" || set["TRACKER_REUSEPORT"] != "true" {
		t.Fatalf("tracker replicas: want one node id \"tracker\" and TRACKER_REUSEPORT=true, got %q %q", set["TRACKER_NODE_ID"], set["TRACKER_REUSEPORT"])
	}
}

// TestDockerfile checks the image recipe: multi-stage, static, non-root,
// version stamped, health checked by the binary itself.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(b)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(d, -1)
	if len(froms) < 2 || froms[len(froms)-1][1] != "scratch" {
		t.Fatalf("want a multi-stage build ending FROM scratch, got %v", froms)
	}
	for _, want := range []string{
		"CGO_ENABLED=0",
		"-X main.version=${VERSION}",
		"-X main.commit=${COMMIT}",
		"USER 65532:65532",
		`CMD ["/tracker", "healthcheck"]`,
		`ENTRYPOINT ["/tracker"]`,
		"./cmd/tracker",
		"/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// The stamped variables exist.
	if version == "" || commit == "" {
		t.Fatal("version variables missing")
	}
}

// TestLocalCluster runs `tracker cluster` (the compose topology as
// processes): redis-server, the hub and two nodes; a peer announced to node 1
// is returned by node 2; stopping the runner stops every process.
func TestLocalCluster(t *testing.T) {
	bin := buildTracker(t)
	base := testkit.PortRange(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testkit.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runLocalCluster(ctx, []string{"-nodes", "2", "-base-port", fmt.Sprint(base), "-hub-port", fmt.Sprint(base + 2), "-bin", bin}, &out, os.Stderr)
	}()
	n1, n2 := fmt.Sprintf("http://127.0.0.1:%d", base), fmt.Sprintf("http://127.0.0.1:%d", base+1)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "cluster ready") {
		select {
		case err := <-done:
			t.Fatalf("cluster exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready within 20s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ih := "local-cluster-torr01"
	announceTo(t, n1, ih, 7001, 10, "started")
	testkit.Eventually(t, 5*time.Second, "peer on node 2", func() bool { return scrapeOrZero(n2, ih).leechers == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cluster stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cluster did not stop")
	}
	if resp, err := http.Get(n1 + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("node 1 still answers after the runner stopped")
	}
}

// TestLocalClusterChildFails: a node that cannot bind its port stops
// `tracker cluster` at once with the node's own error, not a timeout of
// the wait for it.
func TestLocalClusterChildFails(t *testing.T) {
	bin := buildTracker(t)
	base := testkit.PortRange(t, 2)
	taken, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	err = runLocalCluster(ctx, []string{"-nodes", "1", "-base-port", fmt.Sprint(base), "-hub-port", fmt.Sprint(base + 1), "-bin", bin}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "node1 exited") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("cluster with node1's port taken: %v, want node1's own error", err)
	}
	if d := time.Since(begin); d > 8*time.Second {
		t.Fatalf("cluster took %v to report node1's error", d)
	}
}

// checkComposeMembers checks a hub's members file given as a compose
// config: mounted where TRACKER_HUB_MEMBERS points, valid (as the hub
// reads it, after interpolation), and each member's URL a tl-hub user of a
// Redis service of the file.
func checkComposeMembers(t *testing.T, c composeFile, hub composeService, path string, users map[string]map[string][]string) {
	t.Helper()
	var content string
	for _, cf := range hub.Configs {
		if cf.Target == path {
			content = c.Configs[cf.Source].Content
		}
	}
	if content == "" {
		t.Fatalf("hub: TRACKER_HUB_MEMBERS=%s, but no config is mounted there", path)
	}
	members, err := members.Parse(path, []byte(interpolate(content)))
	if err != nil {
		t.Fatal(err)
	}
	url := regexp.MustCompile(`"redis_url": "redis://tl-hub:\$\{[A-Z_]+\}@(redis-[a-z]+):6379"`)
	found := url.FindAllStringSubmatch(content, -1)
	if len(found) != len(members) {
		t.Fatalf("hub members: %d members, %d redis_url of a tl-hub user at a redis service", len(members), len(found))
	}
	for _, m := range found {
		if users[m[1]]["tl-hub"] == nil {
			t.Errorf("hub members: %s creates no tl-hub user", m[1])
		}
		if _, ok := hub.DependsOn[m[1]]; !ok {
			t.Errorf("hub: should start after %s", m[1])
		}
	}
}

// checkComposeSetup checks a setup service: the image the compose file
// builds, run once as `tracker redis-setup` with the tl-admin user of a
// Redis on the compose network, after that Redis is healthy. It returns
// that Redis's service.
func checkComposeSetup(t *testing.T, name string, s composeService, users map[string]map[string][]string) string {
	t.Helper()
	if s.Image != "tracklink:latest" || s.PullPolicy != "never" || s.Build != nil || len(s.Ports) > 0 || s.Restart != "no" || len(s.Command) != 1 ||
		s.Healthcheck == nil || !s.Healthcheck.Disable {
		t.Errorf("%s: want image tracklink:latest, pull_policy never, no ports, restart \"no\", command [redis-setup], the image's health check disabled; got %+v", name, s)
	}
	set, passed := s.env()
	m := regexp.MustCompile(`^redis://tl-admin:\$\{([A-Z_]+)\}@(redis[a-z-]*):6379$`).FindStringSubmatch(set["TRACKER_REDIS_URL"])
	if m == nil || users[m[2]]["tl-admin"] == nil || len(set) != 1 || len(passed) != 0 {
		t.Errorf("%s: want only TRACKER_REDIS_URL, as the tl-admin user of a redis service; got %v %v", name, set, passed)
		return ""
	}
	if pw := users[m[2]]["tl-admin"][2]; !strings.HasPrefix(pw, ">${"+m[1]+":?") {
		t.Errorf("%s: connects with ${%s}, but %s's tl-admin has the password %s", name, m[1], m[2], pw)
	}
	if s.DependsOn[m[2]].Condition != "service_healthy" {
		t.Errorf("%s: should start once %s is healthy", name, m[2])
	}
	return m[2]
}

// composeUsers reads the Redis users a compose redis service creates
// ("--user NAME reset on >PASSWORD RULES..."), checks each one's rules
// against what `tracker acl` prints for that role, and returns them by
// name.
func composeUsers(t *testing.T, cmd []string) map[string][]string {
	t.Helper()
	users := map[string][]string{}
	for i := 0; i < len(cmd); i++ {
		if cmd[i] != "--user" {
			continue
		}
		j := i + 1
		for j < len(cmd) && !strings.HasPrefix(cmd[j], "--") {
			j++
		}
		u := cmd[i+1 : j]
		if len(u) < 1 {
			t.Fatalf("empty --user in %v", cmd)
		}
		users[u[0]] = u[1:]
		i = j - 1
	}
	if d := strings.Join(users["default"], " "); d != "reset on nopass -@all +ping" {
		t.Errorf("the default user may do %q; want only PING (the health check)", d)
	}
	for name, rules := range users {
		var want aclUser
		switch {
		case name == "default":
			continue
		case name == "tl-admin":
			want = adminUser()
		case name == "tl-hub":
			want = hubUser("tl", "tl:link")
		case name == "tl-nodes":
			want = nodesUser("tl", "tl:link")
		case strings.HasPrefix(name, "tl-node-"):
			want = nodeUser("tl", "tl:link", strings.TrimPrefix(name, "tl-node-"))
		default:
			t.Errorf("unknown Redis user %s", name)
			continue
		}
		if len(rules) < 3 || rules[0] != "reset" || rules[1] != "on" || !strings.HasPrefix(rules[2], ">${") || !strings.Contains(rules[2], ":?") {
			t.Errorf("%s: want reset on >${PASSWORD:?...} first, got %v", name, rules)
			continue
		}
		if got := strings.Join(rules[3:], " "); got != strings.Join(want.rules, " ") {
			t.Errorf("%s: rules\n%s\nwant what tracker acl prints\n%s", name, got, strings.Join(want.rules, " "))
		}
	}
	return users
}
