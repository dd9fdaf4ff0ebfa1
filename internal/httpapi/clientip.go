package httpapi

import (
	"net/http"
	"net/netip"
	"strings"
)

// clientAddr returns the address of the client. The direct peer's address is
// used, unless that peer is a trusted proxy: then the right-most address of
// X-Forwarded-For that is not itself a trusted proxy (the nearest one a
// trusted hop vouches for), else X-Real-IP. An unparsable header falls back
// to the direct peer.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	direct := ap.Addr().Unmap()
	if !s.trusted(direct) {
		return direct
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(strings.Join(xff, ","), ",")
		if len(hops) > 32 {
			hops = hops[len(hops)-32:]
		}
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break
			}
			a = a.Unmap()
			if !s.trusted(a) {
				return a
			}
		}
	}
	if xr := r.Header.Get("X-Real-IP"); xr != "" {
		if a, err := netip.ParseAddr(strings.TrimSpace(xr)); err == nil {
			return a.Unmap()
		}
	}
	return direct
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
