package httpapi

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// capListener bounds the connections open at once: in all
// (TRACKER_HTTP_MAX_CONNS) and from one address (an IPv4 address, an IPv6
// /64: TRACKER_HTTP_MAX_CONNS_PER_ADDR). A connection accepted beyond
// either cap is closed at once and counted by reason: the client learns
// immediately and retries later, instead of waiting in the kernel's
// backlog, and the node's memory and descriptors stay bounded whatever
// clients hold open (idle keep-alive connections included). The cap per
// address keeps one address from taking the whole total and shutting
// everyone else out.
//
// The address is the TCP peer's: a trusted proxy (TRACKER_TRUSTED_PROXIES)
// carries many clients on its connections, so its addresses are not
// capped per address (only by the total), and neither is loopback unless
// TRACKER_LIMIT_LOOPBACK (see exempt).
type capListener struct {
	net.Listener
	max     int64 // 0: no total cap
	open    atomic.Int64
	perAddr *addrConns // nil: no cap per address
	// exempt reports whether an address is not capped per address.
	exempt  func(netip.Addr) bool
	opened  prometheus.Gauge
	refused *prometheus.CounterVec // by reason: max_conns, max_conns_per_addr
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.max > 0 && l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.reject(c, "max_conns")
			continue
		}
		var key netip.Addr
		if l.perAddr != nil {
			if a, ok := tcpAddr(c); ok && !l.exempt(a) {
				key = connKey(a)
				if !l.perAddr.take(key) {
					if l.max > 0 {
						l.open.Add(-1)
					}
					l.reject(c, "max_conns_per_addr")
					continue
				}
			}
		}
		l.opened.Inc()
		return &capConn{Conn: c, l: l, key: key}, nil
	}
}

// reject closes c with a reset (no TIME_WAIT on our side) and counts it.
func (l *capListener) reject(c net.Conn, reason string) {
	l.refused.WithLabelValues(reason).Inc()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

type capConn struct {
	net.Conn
	l    *capListener
	key  netip.Addr // the address's entry in perAddr; invalid: none
	once sync.Once
}

func (c *capConn) Close() error {
	c.once.Do(func() {
		if c.l.max > 0 {
			c.l.open.Add(-1)
		}
		if c.key.IsValid() {
			c.l.perAddr.give(c.key)
		}
		c.l.opened.Dec()
	})
	return c.Conn.Close()
}

var _ syscall.Conn = (*capConn)(nil)

// SyscallConn is the socket's: the WebSocket front end waits for the
// connections it takes over in its own poller (wsapi).
func (c *capConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// addrConns counts the open connections of each address. An entry lives
// only while its address has a connection open (it is deleted at zero),
// so the table holds at most as many entries as connections are open:
// TRACKER_HTTP_MAX_CONNS at most (about 60 bytes each), or, without a
// total cap, the process's descriptors. Counts are exact: no address is
// ever refused for another's connections.
type addrConns struct {
	max int32
	mu  sync.Mutex
	n   map[netip.Addr]int32
}

func newAddrConns(max int) *addrConns {
	return &addrConns{max: int32(max), n: map[netip.Addr]int32{}}
}

// take counts one more connection of key, unless it has max open.
func (a *addrConns) take(key netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[key] >= a.max {
		return false
	}
	a.n[key]++
	return true
}

// give counts one connection of key fewer.
func (a *addrConns) give(key netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[key] <= 1 {
		delete(a.n, key)
		return
	}
	a.n[key]--
}

// len is the number of addresses with a connection open.
func (a *addrConns) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.n)
}

// tcpAddr is c's peer address, IPv4-mapped IPv6 ones as IPv4.
func tcpAddr(c net.Conn) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// connKey is the unit a cap per address counts in: an IPv4 address, or
// the /64 of an IPv6 one (what one subscriber usually holds), as the
// announce rate limit counts.
func connKey(a netip.Addr) netip.Addr {
	if a.Is4() {
		return a
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.Addr()
}
