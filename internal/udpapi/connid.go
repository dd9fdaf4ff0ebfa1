package udpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/netip"
	"time"
)

// Connection IDs (BEP 15) prove that a client can receive at the address
// it sends from, so that nothing but a connect is answered to a forged
// source address. Tracklink keeps no state for them: an ID is
//
//	byte 0      the low 8 bits of the time unit it was issued in
//	bytes 1..7  HMAC-SHA256(secret, unit (8 bytes) || client IP (16 bytes)), cut to 7 bytes
//
// where a unit is connIDUnit of unix time. Every node and replica that holds
// the same secret (TRACKER_UDP_SECRET) issues and accepts the same IDs, so
// a client may connect to one process and announce to another behind a load
// balancer or round-robin DNS. The client's port is not part of the MAC: a
// client may announce from another socket of the same host.
//
// Validity: an ID is accepted while the current unit is at most
// connIDMaxAge units after the unit of issue, that is for 130 to 140
// seconds after it was issued (BEP 15 promises two minutes; clients use an
// ID for one). An ID up to connIDMaxAhead units "in the future" is accepted
// too, so that nodes whose clocks differ by up to 30 s accept each other's
// IDs; a node whose clock is behind the issuer's by d accepts an ID for
// d seconds longer, one ahead by d for d seconds less (still 2 minutes for
// d up to 10 s). Forging an ID without the secret takes about 2^56 tries,
// each one a datagram.
const (
	connIDUnit     = 10 * time.Second
	connIDMaxAge   = 13
	connIDMaxAhead = 3
)

// connIDs issues and checks connection IDs. It holds one HMAC state, so
// it is not safe for concurrent use: each worker has its own.
type connIDs struct {
	mac hash.Hash
	in  [8 + 16]byte
	sum [sha256.Size]byte
}

func newConnIDs(secret []byte) *connIDs {
	return &connIDs{mac: hmac.New(sha256.New, secret)}
}

func unitOf(t time.Time) uint64 { return uint64(t.Unix()) / uint64(connIDUnit/time.Second) }

// issue returns the connection ID for a client at ip, now.
func (c *connIDs) issue(ip netip.Addr, now time.Time) uint64 {
	u := unitOf(now)
	return uint64(byte(u))<<56 | c.tag(u, ip)
}

// valid reports whether id was issued to ip within the validity window.
func (c *connIDs) valid(id uint64, ip netip.Addr, now time.Time) bool {
	u := unitOf(now)
	d := byte(u) - byte(id>>56) // how many units ago, modulo 256
	var issued uint64
	switch {
	case d <= connIDMaxAge:
		issued = u - uint64(d)
	case 256-int(d) <= connIDMaxAhead:
		issued = u + uint64(256-int(d))
	default:
		return false
	}
	var idb [8]byte
	binary.BigEndian.PutUint64(idb[:], id)
	return hmac.Equal(c.tagBytes(issued, ip), idb[1:])
}

// tag is the 7-byte MAC as the low 56 bits of a uint64.
func (c *connIDs) tag(unit uint64, ip netip.Addr) uint64 {
	var b [8]byte
	copy(b[1:], c.tagBytes(unit, ip))
	return binary.BigEndian.Uint64(b[:])
}

func (c *connIDs) tagBytes(unit uint64, ip netip.Addr) []byte {
	binary.BigEndian.PutUint64(c.in[:8], unit)
	a := ip.Unmap().As16()
	copy(c.in[8:], a[:])
	c.mac.Reset()
	c.mac.Write(c.in[:])
	return c.mac.Sum(c.sum[:0])[:7]
}
