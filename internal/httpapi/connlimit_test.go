package httpapi

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serveNode serves a node through Server.Serve (where the connection caps
// are) on 127.0.0.1, and returns its address.
func serveNode(t *testing.T, store storeFunc, cfg testConfig) (string, *prometheus.Registry) {
	t.Helper()
	ts, reg := newTestServer(t, store, cfg, false)
	srv := ts.Config.Handler.(*Server)
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), reg
}

// dialFrom opens a connection to addr from the local address from (any
// address of 127.0.0.0/8 is this host's on Linux).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// servedFrom reports whether a new connection from the local address
// from gets an answer to a health check: a refused one is reset while it
// is read, or already while it is dialled.
func servedFrom(t *testing.T, from, addr string) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	t.Cleanup(func() { c.Close() })
	return served(c)
}

// served reports whether c gets an answer to a health check.
func served(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// TestConnectionsPerAddress: one address holds at most
// TRACKER_HTTP_MAX_CONNS_PER_ADDR connections (idle keep-alive ones
// included); the next one is reset at once and counted, while another
// address is still served. A trusted proxy's address, and loopback
// unless TRACKER_LIMIT_LOOPBACK, are not capped per address.
func TestConnectionsPerAddress(t *testing.T) { onEachStore(t, testConnectionsPerAddress) }

func testConnectionsPerAddress(t *testing.T, store storeFunc) {
	tests := []struct {
		name          string
		trusted       string // a trusted proxy prefix, or ""
		limitLoopback bool
		capped        bool // whether 127.0.0.1's 3rd connection is refused
	}{
		{name: "capped", limitLoopback: true, capped: true},
		{name: "trusted proxy", trusted: "127.0.0.1/32", limitLoopback: true, capped: false},
		{name: "loopback not limited", limitLoopback: false, capped: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultTestConfig()
			cfg.http.MaxConns, cfg.http.MaxConnsPerAddr = 100, 2
			cfg.svc.LimitLoopback = tc.limitLoopback
			if tc.trusted != "" {
				cfg.http.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tc.trusted)}
			}
			addr, reg := serveNode(t, store, cfg)
			for i := range 2 {
				if !servedFrom(t, "127.0.0.1", addr) {
					t.Fatalf("connection %d under the cap was not served", i)
				}
			}
			if got := servedFrom(t, "127.0.0.1", addr); got == tc.capped {
				t.Fatalf("3rd connection from one address: served %v, want %v", got, !tc.capped)
			}
			if !servedFrom(t, "127.0.0.2", addr) {
				t.Fatal("another address was not served")
			}
			want := 0.0
			if tc.capped {
				want = 1
			}
			if got := counterValue(t, reg, "tracker_http_connections_refused_total", "max_conns_per_addr"); got != want {
				t.Fatalf("max_conns_per_addr refusals: %v, want %v", got, want)
			}
		})
	}
}

// TestConnectionsPerAddressFreed: a closed connection frees its place,
// and the table forgets an address with none open.
func TestConnectionsPerAddressFreed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cl := &capListener{Listener: ln, perAddr: newAddrConns(1), exempt: func(netip.Addr) bool { return false }, opened: m.conns, refused: m.connsRefused}
	accept := func() net.Conn {
		t.Helper()
		dialFrom(t, "127.0.0.1", ln.Addr().String())
		c, err := cl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for i := range 3 {
		c := accept() // with a cap of 1, a second Accept would block on the refused one
		if n := cl.perAddr.len(); n != 1 {
			t.Fatalf("round %d: %d addresses counted, want 1", i, n)
		}
		c.Close()
		c.Close() // a second Close must not count twice
		if n := cl.perAddr.len(); n != 0 {
			t.Fatalf("round %d: %d addresses counted after the close, want 0", i, n)
		}
	}
}

func TestConnKey(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"2001:db8:0:1::1", "2001:db8:0:1:ffff::9", true}, // one /64
		{"2001:db8:0:1::1", "2001:db8:0:2::1", false},
		{"fe80::1%eth0", "fe80::2", true},
	}
	for _, tc := range tests {
		a, b := connKey(netip.MustParseAddr(tc.a)), connKey(netip.MustParseAddr(tc.b))
		if (a == b) != tc.same {
			t.Errorf("%s and %s: same key %v, want %v", tc.a, tc.b, a == b, tc.same)
		}
	}
}
