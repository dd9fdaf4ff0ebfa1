package config

import (
	"strings"
	"testing"
	"time"
)

func TestValidateListen(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		node bool
		err  string
	}{
		{env: []string{"TRACKER_HTTP_ADDR=:6969-6971", "TRACKER_UDP_ADDR=:6969-6971", "TRACKER_NODE_ID=t-{port}"}, node: true},
		{env: []string{"TRACKER_HTTP_ADDR=:6969-6971", "TRACKER_UDP_ADDR=:7000"}, node: true},
		{env: []string{"TRACKER_HTTP_ADDR=:6969-6971", "TRACKER_UDP_ADDR=:6969-6972"}, node: true, err: "must be the one of TRACKER_HTTP_ADDR"},
		{env: []string{"TRACKER_HTTP_ADDR=:6969", "TRACKER_UDP_ADDR=:6969-6971"}, node: true, err: "must be the one of TRACKER_HTTP_ADDR"},
		{env: []string{"TRACKER_HTTP_ADDR=:6969", "TRACKER_NODE_ID=t-{port}"}, node: true, err: "{port}, which needs a port range"},
		{env: []string{"TRACKER_HTTP_ADDR=:6980-6981", "TRACKER_UDP_ADDR=off"}, node: false, err: "the hub listens on one port"},
		{env: []string{"TRACKER_HTTP_ADDR=:6971-6969"}, node: true, err: "TRACKER_HTTP_ADDR"},
		{env: []string{"TRACKER_NODE_ID=t-{bad}"}, node: true, err: "TRACKER_NODE_ID"},
	} {
		cfg, _, err := Load(tc.env)
		if err == nil {
			err = cfg.ValidateListen(tc.node)
		}
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.err)
		}
	}
}

// TestUDPFollowsHTTP: with only TRACKER_HTTP_ADDR set, UDP listens on its
// address (a second node on another port moves whole); TRACKER_UDP_ADDR,
// when set, wins.
func TestUDPFollowsHTTP(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, ":6969"},
		{[]string{"TRACKER_HTTP_ADDR=:6970"}, ":6970"},
		{[]string{"TRACKER_HTTP_ADDR=127.0.0.1:7000-7002"}, "127.0.0.1:7000-7002"},
		{[]string{"TRACKER_HTTP_ADDR=:6970", "TRACKER_UDP_ADDR=:7001"}, ":7001"},
		{[]string{"TRACKER_HTTP_ADDR=:6970", "TRACKER_UDP_ADDR=off"}, ""},
	} {
		c, _, err := Load(tc.env)
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if c.UDP.Addr != tc.want {
			t.Errorf("%v: UDP on %q, want %q", tc.env, c.UDP.Addr, tc.want)
		}
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"TRACKER_ANNOUNCE_INTERVAL=soon", "TRACKER_ANNOUNCE_INTERVAL"},
		{"TRACKER_NUMWANT_MAX=5000", "TRACKER_NUMWANT_MAX"},
		{"TRACKER_REDIS_URL=http://x", "TRACKER_REDIS_URL"},
		{"TRACKER_NODE_ID=a{b}", "TRACKER_NODE_ID"},
		{"TRACKER_LOG_FORMAT=xml", "TRACKER_LOG_FORMAT"},
		{"TRACKER_TRUSTED_PROXIES=10.0.0.0/99", "TRACKER_TRUSTED_PROXIES"},
		{"TRACKER_PEER_LIFETIME=1m", "TRACKER_PEER_LIFETIME"},
		{"TRACKER_LOG_LEVEL=loud", "TRACKER_LOG_LEVEL"},
		{"TRACKER_UDP_SECRET=short", "TRACKER_UDP_SECRET"},
		{"TRACKER_UDP_WORKERS=0", "TRACKER_UDP_WORKERS"},
		{"TRACKER_UDP_ADDR=nonsense", "TRACKER_UDP_ADDR"},
		{"TRACKER_ADMIN_TOKEN=short-token", "TRACKER_ADMIN_TOKEN"},
		{"TRACKER_ADMIN_TOKEN=aaaaaaaabbbbbbbbcccccccc", "TRACKER_ADMIN_TOKEN"},
		{"TRACKER_ADMIN_HOSTS=panel.example.org,*.example.org", "TRACKER_ADMIN_HOSTS"},
		{"TRACKER_ADMIN_HOSTS=panel.example.org:6980", "TRACKER_ADMIN_HOSTS"},
		{"TRACKER_HUB_SHARE_MAX_TORRENTS=0", "TRACKER_HUB_SHARE_MAX_TORRENTS"},
		{"TRACKER_HUB_SHARE_MAX_SIZE=99999999", "TRACKER_HUB_SHARE_MAX_SIZE"},
		{"TRACKER_HUB_SHARE_MAX_BYTES=1000", "TRACKER_HUB_SHARE_MAX_BYTES"},
		{"TRACKER_HTTP_MAX_CONNS_PER_ADDR=-1", "TRACKER_HTTP_MAX_CONNS_PER_ADDR"},
		{"TRACKER_NEW_SWARMS_PREFIX_RATE=-1", "TRACKER_NEW_SWARMS_PREFIX_RATE"},
		{"TRACKER_NEW_SWARMS_PREFIX_BURST=0", "TRACKER_NEW_SWARMS_PREFIX_BURST"},
	} {
		_, _, err := Load([]string{tc.env})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to name %s", tc.env, err, tc.want)
		}
	}
	_, unknown, err := Load([]string{"TRACKER_INTERVAL=1m", "OTHER=1"})
	if err != nil || len(unknown) != 1 || unknown[0] != "TRACKER_INTERVAL" {
		t.Fatalf("unknown = %v, err %v", unknown, err)
	}
	c, _, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != ":6969" || c.UDP.Addr != ":6969" || c.RedisURL != "" || c.PeerLifetime != 48*time.Minute || c.NodeID == "" {
		t.Fatalf("defaults: %+v", c)
	}
	for _, off := range []string{"TRACKER_UDP_ADDR=", "TRACKER_UDP_ADDR=off"} {
		if c, _, err := Load([]string{off}); err != nil || c.UDP.Enabled() {
			t.Fatalf("%s: UDP on (%v)", off, err)
		}
	}
	// With peers in Redis, other processes may serve the same tracker: the
	// UDP secret must be configured, and the error says how.
	c, _, err = Load([]string{"TRACKER_REDIS_URL=redis://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateNode(); err == nil || !strings.Contains(err.Error(), "TRACKER_UDP_SECRET") {
		t.Fatalf("UDP on Redis without a secret: %v", err)
	}
}
