package main

import (
	"context"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/panel"
)

// TestPortPlan: no port means two things by default, across the program's
// defaults (a node, a hub, their admin listeners, `tracker cluster`'s
// flags) and the compose files; and docs/deployment.md's table of ports lists each
// default. (The plan is written out next to config.DefaultHubAddr.)
func TestPortPlan(t *testing.T) {
	meaning := map[int]string{}
	where := map[int]string{}
	add := func(port int, what, from string) {
		t.Helper()
		if m, ok := meaning[port]; ok && m != what {
			t.Errorf("port %d is %s (%s) and %s (%s)", port, m, where[port], what, from)
			return
		}
		meaning[port], where[port] = what, from
	}
	portOf := func(addr string) int {
		t.Helper()
		_, p, err := net.SplitHostPort(addr)
		n, err2 := strconv.Atoi(p)
		if err != nil || err2 != nil {
			t.Fatalf("address %q", addr)
		}
		return n
	}
	cfg, _, err := config.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	add(portOf(cfg.HTTP.Addr), "announce", "a node's TRACKER_HTTP_ADDR")
	add(portOf(cfg.UDP.Addr), "announce", "a node's TRACKER_UDP_ADDR")
	add(portOf(config.DefaultHubAddr), "hub", "the hub's TRACKER_HTTP_ADDR")
	add(portOf(panel.DefaultNodeAddr), "node admin", "a node's TRACKER_ADMIN_ADDR")
	add(portOf(panel.DefaultHubAddr), "hub admin", "the hub's TRACKER_ADMIN_ADDR")
	add(config.DefaultNodeAdminPorts, "node admin", "tracker cluster -node-admin-port")

	// tracker cluster's flags, from its usage.
	var usage strings.Builder
	runLocalCluster(context.Background(), []string{"-h"}, io.Discard, &usage)
	flagDefault := func(name string) int {
		m := regexp.MustCompile(`(?s)-` + name + ` int\n[^\n]*\(default (\d+)\)`).FindStringSubmatch(usage.String())
		if m == nil {
			t.Fatalf("tracker cluster -%s: no default in\n%s", name, usage.String())
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	add(flagDefault("base-port"), "announce", "tracker cluster -base-port")
	add(flagDefault("hub-port"), "hub", "tracker cluster -hub-port")
	add(flagDefault("admin-port"), "hub admin", "tracker cluster -admin-port")
	add(flagDefault("node-admin-port"), "node admin", "tracker cluster -node-admin-port")

	// The compose files: what each service listens on and publishes.
	def := regexp.MustCompile(`\$\{[A-Z_]+:-([0-9]+)(?:-([0-9]+))?\}`)
	ports := func(v string) []int { // the default port or range of a ${VAR:-...}
		m := def.FindStringSubmatch(v)
		if m == nil {
			return nil
		}
		first, _ := strconv.Atoi(m[1])
		last := first
		if m[2] != "" {
			last, _ = strconv.Atoi(m[2])
		}
		var out []int
		for p := first; p <= last; p++ {
			out = append(out, p)
		}
		return out
	}
	for _, file := range []string{"docker-compose.yml", "docker-compose.friends.yml"} {
		c := loadCompose(t, file)
		for name, s := range c.Services {
			set, _ := s.env()
			from := file + " " + name
			switch {
			case name == "hub":
				hubPort, adminPort := portOf(set["TRACKER_HTTP_ADDR"]), portOf(set["TRACKER_ADMIN_ADDR"])
				add(hubPort, "hub", from+" TRACKER_HTTP_ADDR")
				for _, p := range s.Ports { // 127.0.0.1:${VAR:-host port}:container port
					inside, _ := strconv.Atoi(p[strings.LastIndexByte(p, ':')+1:])
					what := map[int]string{hubPort: "hub", adminPort: "hub admin"}[inside]
					if what == "" {
						t.Errorf("%s publishes %s, neither its public nor its admin port", from, p)
					}
					for _, h := range ports(p) {
						add(h, what, from+" ports")
					}
				}
			case strings.HasPrefix(name, "redis"):
				for _, p := range s.Ports {
					for _, h := range ports(p) {
						add(h, "redis", from+" ports")
					}
				}
			default: // trackers, on the host's network
				for _, p := range ports(set["TRACKER_HTTP_ADDR"]) {
					add(p, "announce", from+" TRACKER_HTTP_ADDR")
				}
				for _, p := range ports(set["TRACKER_ADMIN_ADDR"]) {
					add(p, "node admin", from+" TRACKER_ADMIN_ADDR")
				}
			}
		}
	}
	if meaning[6968] != "hub" || meaning[6969] != "announce" || meaning[6379] != "redis" {
		t.Errorf("port plan read wrong: %v", meaning)
	}

	readme, err := os.ReadFile("../../docs/deployment.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{portOf(cfg.HTTP.Addr), portOf(config.DefaultHubAddr), portOf(panel.DefaultNodeAddr), portOf(panel.DefaultHubAddr), config.DefaultNodeAdminPorts} {
		if !regexp.MustCompile(`(?m)^\| ` + strconv.Itoa(p) + `\b`).Match(readme) {
			t.Errorf("docs/deployment.md's table of ports has no row for %d (%s)", p, meaning[p])
		}
	}
}
