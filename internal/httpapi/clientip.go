package httpapi

import (
	"net/http"
	"net/netip"
	"strings"
)

// ProxyHeaders lists how TRACKER_PROXY_HEADER names the header a trusted
// proxy sets: a list of hops (X-Forwarded-For, Forwarded) or any other
// header holding one address (X-Real-IP, CF-Connecting-IP, ...).
const (
	headerXFF       = "X-Forwarded-For"
	headerForwarded = "Forwarded"
)

// clientAddr returns the address of the client. The direct peer's address
// is used, unless that peer is a trusted proxy: then only the configured
// header counts (TRACKER_PROXY_HEADER; a client cannot make another one
// win). In a list of hops (X-Forwarded-For, the for= of Forwarded) it is
// the right-most entry that is not itself a trusted proxy, the nearest one
// a trusted hop vouches for; any other header holds one address. Entries
// may carry a port ("198.51.100.1:4321", "[2001:db8::1]:4321"). A trusted
// proxy's request without a usable address gives the invalid address (the
// announce is refused: recording the proxy as the client would be wrong).
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	direct := ap.Addr().Unmap()
	if !s.trusted(direct) {
		return direct
	}
	name := s.cfg.ProxyHeader
	values := r.Header.Values(name)
	if len(values) == 0 {
		return netip.Addr{}
	}
	switch http.CanonicalHeaderKey(name) {
	case headerXFF, headerForwarded:
	default:
		if len(values) != 1 {
			return netip.Addr{}
		}
		a, _ := parseHop(values[0])
		return a
	}
	hops := strings.Split(strings.Join(values, ","), ",")
	if len(hops) > 32 {
		hops = hops[len(hops)-32:]
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop := hops[i]
		if http.CanonicalHeaderKey(name) == headerForwarded {
			hop = forwardedFor(hop)
		}
		a, ok := parseHop(hop)
		if !ok {
			return netip.Addr{}
		}
		if !s.trusted(a) {
			return a
		}
	}
	return netip.Addr{}
}

// parseHop reads one address, with or without a port, IPv6 in brackets
// when it has one, optionally quoted (Forwarded).
func parseHop(v string) (netip.Addr, bool) {
	v = strings.Trim(strings.TrimSpace(v), `"`)
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return ap.Addr().Unmap(), true
	}
	v = strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// forwardedFor returns the for= parameter of one Forwarded element
// (RFC 7239), or "" when it has none.
func forwardedFor(element string) string {
	for _, pair := range strings.Split(element, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && strings.EqualFold(k, "for") {
			return v
		}
	}
	return ""
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
