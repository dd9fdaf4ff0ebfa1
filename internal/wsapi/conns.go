package wsapi

import (
	"hash/maphash"
	"net/http"
	"net/netip"
)

// The bookkeeping of this process's connections: counts per process and
// per address, and the index of the peers announced on them.

// Status is what /ws/status shows.
type Status struct {
	Connections int64 `json:"connections"`
	// Peers are the swarm memberships (peer, torrent) of this process's
	// sockets.
	Peers int  `json:"peers"`
	Ready bool `json:"ready"`
}

// Status returns this process's counts.
func (s *Server) Status() Status {
	n := 0
	for i := range s.peers {
		sh := &s.peers[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return Status{Connections: s.open.Load(), Peers: n, Ready: s.ready.Load()}
}

// directAddr is the address of the direct peer of r.
func directAddr(r *http.Request) netip.Addr {
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	return ap.Addr().Unmap()
}

// reserve takes a connection slot for a client address, or says why
// there is none.
func (s *Server) reserve(key netip.Addr, limited bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return "shutdown"
	case s.open.Load() >= int64(s.cfg.MaxSockets):
		return "cap"
	case limited && s.perAddr[key] >= s.cfg.MaxSocketsPerAddr:
		return "per_address"
	}
	s.perAddr[key]++
	s.open.Add(1)
	s.m.conns.Inc()
	return ""
}

func (s *Server) release(key netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perAddr[key]--; s.perAddr[key] <= 0 {
		delete(s.perAddr, key)
	}
	s.open.Add(-1)
	s.m.conns.Dec()
}

func (s *Server) add(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.release(c.key)
	s.wg.Done()
}

// addrKey is what connections are counted per: an IPv4 address, or an
// IPv6 address's /64.
func addrKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (s *Server) shard(m member) *peerShard {
	return &s.peers[maphash.Comparable(s.seed, m)%peerShards]
}

// register indexes m as a peer of c (the latest socket to announce it
// wins).
func (s *Server) register(m member, c *conn) {
	sh := s.shard(m)
	sh.mu.Lock()
	sh.m[m] = c
	sh.mu.Unlock()
}

// unregister removes m from the index if c still holds it, and from the
// soft state.
func (s *Server) unregister(m member, c *conn) {
	sh := s.shard(m)
	sh.mu.Lock()
	if sh.m[m] == c {
		delete(sh.m, m)
	}
	sh.mu.Unlock()
	if s.soft != nil {
		s.soft.left(m, c)
	}
}

func (s *Server) lookup(m member) *conn {
	sh := s.shard(m)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[m]
}
