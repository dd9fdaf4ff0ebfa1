package httpapi

import (
	"net/netip"
	"strconv"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Limits on what a client controls in a query string.
const (
	// MaxQueryLen bounds an announce query. A real one is under 600 bytes.
	MaxQueryLen = 4096
	// maxAnnounceParams bounds the number of parameters in an announce.
	maxAnnounceParams = 64
	// maxTextParam bounds free-text parameters (key, trackerid).
	maxTextParam = 128
)

// scanQuery calls f for each key=value pair of a raw query, both decoded as
// HTML forms encode them: %XX is a byte and '+' a space. Clients
// percent-encode a literal '+' (%2B); some (anacrolix's scrape, Python's
// urlencode) send a space byte of a binary info hash as '+'. It stops at the
// first error f returns.
func scanQuery(raw string, maxParams int, f func(k, v string) error) error {
	n := 0
	for raw != "" {
		var pair string
		if i := indexByte(raw, '&'); i >= 0 {
			pair, raw = raw[:i], raw[i+1:]
		} else {
			pair, raw = raw, ""
		}
		if pair == "" {
			continue
		}
		if n++; n > maxParams {
			return bittorrent.ClientError("too many query parameters")
		}
		k, v := pair, ""
		if i := indexByte(pair, '='); i >= 0 {
			k, v = pair[:i], pair[i+1:]
		}
		k, ok := unescape(k)
		if !ok {
			return bittorrent.ClientError("malformed percent-encoding in query")
		}
		v, ok = unescape(v)
		if !ok {
			return bittorrent.ClientError("malformed percent-encoding in " + safeName(k))
		}
		if err := f(k, v); err != nil {
			return err
		}
	}
	return nil
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// unescape decodes %XX sequences and '+'. It allocates only when there is
// one of them.
func unescape(s string) (string, bool) {
	n, plus := 0, false
	for i := 0; i < len(s); i++ {
		if s[i] == '+' {
			plus = true
		}
		if s[i] == '%' {
			n++
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return "", false
			}
			i += 2
		}
	}
	if n == 0 && !plus {
		return s, true
	}
	b := make([]byte, 0, len(s)-2*n)
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		} else if s[i] == '+' {
			b = append(b, ' ')
		} else {
			b = append(b, s[i])
		}
	}
	return string(b), true
}

func ishex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// safeName returns a parameter name fit to echo in an error message.
func safeName(k string) string {
	if len(k) > 32 {
		k = k[:32]
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c > 0x7e {
			return "a parameter"
		}
	}
	return k
}

// announceParams says how to read the parts of an announce that depend on
// where it came from.
type announceParams struct {
	// from is the client's address as the server sees it.
	from netip.Addr
	// allowIP honours the ip parameter.
	allowIP bool
}

// parseAnnounce reads and validates an announce query.
func parseAnnounce(raw string, ap announceParams) (*bittorrent.AnnounceRequest, error) {
	if len(raw) > MaxQueryLen {
		return nil, bittorrent.ClientError("query too long")
	}
	r := &bittorrent.AnnounceRequest{Compact: true, NumWant: -1}
	var have struct{ ih, pid, port, left bool }
	addr := ap.from
	err := scanQuery(raw, maxAnnounceParams, func(k, v string) error {
		switch k {
		case "info_hash":
			if have.ih {
				return bittorrent.ClientError("info_hash given twice")
			}
			ih, err := bittorrent.InfoHashFromBytes([]byte(v))
			if err != nil {
				return err
			}
			r.InfoHash, have.ih = ih, true
		case "peer_id":
			if len(v) != len(r.Peer.ID) {
				return bittorrent.ClientError("peer_id must be 20 bytes, got " + strconv.Itoa(len(v)))
			}
			copy(r.Peer.ID[:], v)
			have.pid = true
		case "port":
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil || p == 0 {
				return bittorrent.ClientError("port must be a number from 1 to 65535")
			}
			r.Peer.Addr = netip.AddrPortFrom(netip.Addr{}, uint16(p))
			have.port = true
		case "uploaded", "downloaded", "left":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return bittorrent.ClientError(k + " must be a non-negative number")
			}
			switch k {
			case "uploaded":
				r.Uploaded = n
			case "downloaded":
				r.Downloaded = n
			default:
				r.Left, have.left = n, true
			}
		case "event":
			ev, err := bittorrent.ParseEvent(v)
			if err != nil {
				return err
			}
			r.Event = ev
		case "compact":
			r.Compact = v != "0"
		case "no_peer_id":
			r.NoPeerID = v == "1"
		case "numwant":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return bittorrent.ClientError("numwant must be a number")
			}
			switch {
			case n < 0:
				r.NumWant = -1
			case n > 1<<20:
				r.NumWant = 1 << 20 // capped later; keeps the int small
			default:
				r.NumWant = int(n)
			}
		case "key":
			if len(v) > maxTextParam {
				return bittorrent.ClientError("key too long")
			}
			r.Key = v
		case "trackerid":
			if len(v) > maxTextParam {
				return bittorrent.ClientError("trackerid too long")
			}
			r.TrackerID = v
		case "ip":
			if !ap.allowIP {
				return nil
			}
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" {
				return bittorrent.ClientError("ip must be an IPv4 or IPv6 address")
			}
			if !bittorrent.Unicast(a) {
				return bittorrent.ClientError("ip must be a unicast address")
			}
			addr = a
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch {
	case !have.ih:
		return nil, bittorrent.ClientError("missing info_hash")
	case !have.pid:
		return nil, bittorrent.ClientError("missing peer_id")
	case !have.port:
		return nil, bittorrent.ClientError("missing port")
	case !have.left:
		return nil, bittorrent.ClientError("missing left")
	}
	addr = addr.Unmap()
	if !bittorrent.Unicast(addr) {
		return nil, bittorrent.ClientError("no usable client address")
	}
	r.Peer.Addr = netip.AddrPortFrom(addr, r.Peer.Addr.Port())
	r.Source = ap.from.Unmap()
	return r, nil
}

// parseScrape reads the info hashes of a scrape query; at least one, at most max.
func parseScrape(raw string, max int) ([]bittorrent.InfoHash, error) {
	if len(raw) > max*70+256 {
		return nil, bittorrent.ClientError("query too long")
	}
	var hashes []bittorrent.InfoHash
	err := scanQuery(raw, max+16, func(k, v string) error {
		if k != "info_hash" {
			return nil
		}
		if len(hashes) == max {
			return bittorrent.ClientError("too many info_hash parameters, at most " + strconv.Itoa(max))
		}
		ih, err := bittorrent.InfoHashFromBytes([]byte(v))
		if err != nil {
			return err
		}
		for _, h := range hashes {
			if h == ih {
				return nil // asked twice, answered once
			}
		}
		hashes = append(hashes, ih)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(hashes) == 0 {
		return nil, bittorrent.ClientError("scrape needs at least one info_hash (full scrapes are not served)")
	}
	return hashes, nil
}
