// Package embedded runs an in-process, Redis-compatible store (miniredis) on
// a loopback port, for the no-setup single-node mode. The node talks to it
// through the same Redis client and the same functions (FCALL) as to a
// real Redis, so there is one store implementation; miniredis lacks Redis
// 7's functions, so this package adds them on top of its EVAL
// (functions.go).
//
// miniredis keeps key TTLs but only counts them down when told; Run is that
// clock: it advances every TTL by the real time that passed, so idle swarms
// really vanish. (Peers themselves expire by score, which needs no clock
// here.) That walk over the keys with a TTL is how this embedded store
// implements expiry, as Redis itself does internally; Tracklink's own code
// never sweeps keys, and a production node runs on Redis.
package embedded

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Server is the embedded store.
type Server struct {
	m    *miniredis.Miniredis
	tick time.Duration
}

// Open starts the store listening on addr (use "127.0.0.1:0" for a free
// port). The listener is open when Open returns.
func Open(addr string) (*Server, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded store: listen on %s: %w", addr, err)
	}
	// Nobody knows the address before Open returns: the commands are
	// there before the first client.
	s := &Server{m: m, tick: time.Second}
	if err := s.registerFunctions(); err != nil {
		m.Close()
		return nil, err
	}
	return s, nil
}

// Addr returns the host:port the store listens on.
func (s *Server) Addr() string { return s.m.Addr() }

// Run counts key TTLs down in real time until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.m.FastForward(now.Sub(last))
			last = now
		}
	}
}

// Close stops the store; its data is gone.
func (s *Server) Close() { s.m.Close() }
