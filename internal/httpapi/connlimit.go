package httpapi

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// capListener bounds the connections open at once (TRACKER_HTTP_MAX_CONNS).
// A connection accepted beyond the cap is closed at once and counted: the
// client learns immediately and retries later, instead of waiting in the
// kernel's backlog, and the node's memory and descriptors stay bounded
// whatever clients hold open (idle keep-alive connections included).
type capListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	opened  prometheus.Gauge
	refused prometheus.Counter
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Inc()
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset: no TIME_WAIT on our side
			}
			c.Close()
			continue
		}
		l.opened.Inc()
		return &capConn{Conn: c, l: l}, nil
	}
}

type capConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *capConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1); c.l.opened.Dec() })
	return c.Conn.Close()
}
