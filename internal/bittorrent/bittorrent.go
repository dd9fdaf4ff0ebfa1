// Package bittorrent holds the domain of a tracker: info hashes, peers,
// announce and scrape requests and answers, and the one kind of error a
// client may see. It imports only the standard library; every other package
// of Tracklink points inward to it.
package bittorrent

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
)

// InfoHash identifies a torrent: the SHA-1 of its info dictionary (v1) or the
// SHA-256 of it truncated to 20 bytes (v2), as clients announce it.
type InfoHash [20]byte

// String returns the info hash as 40 lowercase hex digits.
func (h InfoHash) String() string { return hex.EncodeToString(h[:]) }

// InfoHashFromBytes returns b as an info hash, or a ClientError when b is
// not exactly 20 bytes long.
func InfoHashFromBytes(b []byte) (InfoHash, error) {
	var h InfoHash
	if len(b) != len(h) {
		return h, ClientError(fmt.Sprintf("info_hash must be 20 bytes, got %d", len(b)))
	}
	copy(h[:], b)
	return h, nil
}

// ParseInfoHash reads 40 hex digits.
func ParseInfoHash(s string) (InfoHash, error) {
	var h InfoHash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("info hash must be 40 hex digits, got %d characters", len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("info hash: %w", err)
	}
	return h, nil
}

// PeerID is the 20-byte id a client chooses for itself.
type PeerID [20]byte

// Peer is one client in a swarm: its id and the address it accepts
// connections on. Two peers are the same peer when all three parts match.
type Peer struct {
	ID   PeerID
	Addr netip.AddrPort
}

// Is6 reports whether the peer has an IPv6 (non-IPv4-mapped) address.
func (p Peer) Is6() bool { return !p.Addr.Addr().Is4() }

// The binary form of a peer is its address (4 or 16 bytes) and port (2
// bytes, big endian), optionally followed by its id (20 bytes): 6 or 18 bytes
// without the id, 26 or 38 with it. The length alone tells the family and
// whether the id is there. It is the member of a swarm's sorted sets in Redis
// and the peer's form on the link, so every node and the hub agree on what
// "the same peer" is.
const (
	PeerLen4       = 4 + 2
	PeerLen6       = 16 + 2
	PeerLen4WithID = PeerLen4 + 20
	PeerLen6WithID = PeerLen6 + 20
)

// AppendBinary appends the binary form of p to b, with the peer id when
// withID is set.
func (p Peer) AppendBinary(b []byte, withID bool) []byte {
	a := p.Addr.Addr().Unmap()
	if a.Is4() {
		v := a.As4()
		b = append(b, v[:]...)
	} else {
		v := a.As16()
		b = append(b, v[:]...)
	}
	port := p.Addr.Port()
	b = append(b, byte(port>>8), byte(port))
	if withID {
		b = append(b, p.ID[:]...)
	}
	return b
}

// ErrBadPeer is returned for a binary peer of the wrong length.
var ErrBadPeer = errors.New("binary peer must be 6, 18, 26 or 38 bytes")

// PeerFromBinary decodes the binary form written by AppendBinary; a peer
// stored without its id has the zero PeerID. It accepts a string so that
// Redis replies decode without a copy.
func PeerFromBinary(s string) (Peer, error) {
	var p Peer
	var ipLen int
	switch len(s) {
	case PeerLen4, PeerLen4WithID:
		ipLen = 4
	case PeerLen6, PeerLen6WithID:
		ipLen = 16
	default:
		return p, ErrBadPeer
	}
	var a netip.Addr
	if ipLen == 4 {
		var v [4]byte
		copy(v[:], s)
		a = netip.AddrFrom4(v)
	} else {
		var v [16]byte
		copy(v[:], s)
		a = netip.AddrFrom16(v)
	}
	port := uint16(s[ipLen])<<8 | uint16(s[ipLen+1])
	p.Addr = netip.AddrPortFrom(a, port)
	copy(p.ID[:], s[ipLen+2:])
	return p, nil
}

// Unicast reports whether a is an address a peer can be reached at and so
// may be stored: not unspecified, not multicast (224.0.0.0/4, ff00::/8),
// not the IPv4 broadcast address. Loopback, private and link-local
// addresses are unicast.
func Unicast(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// ErrNotStorable is returned for a binary peer that no node would store:
// an address that is not unicast, an IPv4 address in the IPv6 form, or
// port 0.
var ErrNotStorable = errors.New("peer is not a unicast address with a port")

// CheckPeer reports whether s is the binary form of a peer a node stores
// (what a front end accepts from a client): the right length, a unicast
// address, IPv4 in its 4-byte form only, and a port other than 0. What
// another node claims, on the link or in its keyspace, is held to it.
func CheckPeer(s string) error {
	p, err := PeerFromBinary(s)
	if err != nil {
		return err
	}
	a := p.Addr.Addr()
	if !Unicast(a) || a.Is4In6() || p.Addr.Port() == 0 {
		return ErrNotStorable
	}
	return nil
}

// Event is the event parameter of an announce.
type Event uint8

// The events of BEP 3, and BEP 21's paused. None is a regular, periodic
// announce. Paused is not an event but a state: a partial seed (a peer
// that wants nothing more of the torrent, having skipped some of its
// files) sends it with every announce while it is one.
const (
	None Event = iota
	Started
	Completed
	Stopped
	Paused
)

var eventNames = [...]string{None: "", Started: "started", Completed: "completed", Stopped: "stopped", Paused: "paused"}

// String returns the event as it appears in a query string.
func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("event(%d)", e)
}

// ParseEvent reads an event parameter; "" and "empty" are None.
func ParseEvent(s string) (Event, error) {
	switch s {
	case "", "empty":
		return None, nil
	case "started":
		return Started, nil
	case "completed":
		return Completed, nil
	case "stopped":
		return Stopped, nil
	case "paused":
		return Paused, nil
	}
	return None, ClientError("unknown event")
}

// AnnounceRequest is one announce, validated.
type AnnounceRequest struct {
	InfoHash   InfoHash
	Peer       Peer
	Uploaded   uint64
	Downloaded uint64
	Left       uint64
	Event      Event
	Compact    bool
	NoPeerID   bool
	// NumWant is how many peers the client asked for; -1 when it did not say.
	NumWant   int
	Key       string
	TrackerID string
	// Family restricts the peers of the answer to one address family.
	// HTTP answers carry both (IPv6 ones in peers6); a UDP answer carries
	// the family of the socket the request came on (BEP 15).
	Family Family
	// Source is the address the request came from: the connection's, or
	// the client's as a trusted proxy vouches for it; never the client's
	// own claim (the ip parameter). Per-address limits apply to it.
	Source netip.Addr
	// NoNewSwarm: the announce may not start a swarm (the node's share of
	// new swarms for its source's prefix is spent); one for a swarm that
	// has no live peer is refused with ErrNoNewSwarms.
	NoNewSwarm bool
}

// Family says which address families of peers an answer may carry.
type Family uint8

// The families an answer may be restricted to.
const (
	BothFamilies Family = iota
	OnlyIPv4
	OnlyIPv6
)

// Carries reports whether an answer restricted to f may carry p.
func (f Family) Carries(p Peer) bool {
	switch f {
	case OnlyIPv4:
		return !p.Is6()
	case OnlyIPv6:
		return p.Is6()
	}
	return true
}

// Seeder reports whether the announcing peer has the whole torrent.
func (r *AnnounceRequest) Seeder() bool { return r.Left == 0 }

// Op is the change the announce makes to its peer: stopped, a seeder (it
// has the whole torrent, whatever the event), a partial seed (paused with
// bytes left, BEP 21) or a leecher.
func (r *AnnounceRequest) Op() ChangeOp {
	switch {
	case r.Event == Stopped:
		return OpStopped
	case r.Seeder():
		return OpSeeder
	case r.Event == Paused:
		return OpPartial
	}
	return OpLeecher
}

// AnnounceResult is what the store answers to an announce.
type AnnounceResult struct {
	// Seeders have the whole torrent; Leechers are the rest, partial
	// seeds included (BEP 21's "incomplete").
	Seeders, Leechers int
	// Peers is a random sample of at most the asked number of peers, never
	// the announcing peer, and no seeders for a seeder.
	Peers []Peer
	// Change is what the store wrote, described by the store: the peer in
	// its stored form, its op, the time recorded and whether a completed
	// download was counted. The link publishes it as it is.
	Change PeerChange
	// NewSwarm: the announce started the swarm (it had no live peer).
	NewSwarm bool
}

// Scrape is the state of one swarm as BEP 48 reports it.
type Scrape struct {
	InfoHash   InfoHash
	Complete   int // seeders
	Incomplete int // leechers, partial seeds included
	Downloaded int // completed downloads counted so far
	// Downloaders are the leechers that are not partial seeds (BEP 21);
	// Incomplete - Downloaders is the number of partial seeds.
	Downloaders int
	// Unavailable: the store could not be read for this swarm now (under
	// Redis Cluster, its shard is down); the counts are not known.
	Unavailable bool
}

// StoreBatch is what a store answers together: a front end's batch of
// announces and scrapes (a UDP worker's datagrams). Each request's answer
// and error go at its index: AnnounceResults and AnnounceErrs as long as
// Announces (NumWant too), ScrapeResults and ScrapeErrs as long as
// Scrapes, each scrape answered as a store's Scrape answers one.
type StoreBatch struct {
	Announces       []*AnnounceRequest
	NumWant         []int
	AnnounceResults []AnnounceResult
	AnnounceErrs    []error
	Scrapes         [][]InfoHash
	ScrapeResults   [][]Scrape
	ScrapeErrs      []error
}

// ClientError is the only kind of error a client may see: its text becomes
// the bencoded failure reason. Every other error is logged, and the client
// sees a generic message.
type ClientError string

func (e ClientError) Error() string { return string(e) }

// ErrNoNewSwarms is the failure reason of an announce that would start a
// new swarm while the node is at its cap on new swarms.
const ErrNoNewSwarms = ClientError("this tracker takes no new torrents right now; try again later")

// ErrKeyMismatch is the failure reason of a change sent for a live peer
// with another key (or none) than the one the peer announced with.
const ErrKeyMismatch = ClientError("key does not match the key this peer announced with")

// IsClientError reports whether err is, or wraps, a ClientError, and returns it.
func IsClientError(err error) (ClientError, bool) {
	var ce ClientError
	ok := errors.As(err, &ce)
	return ce, ok
}

// ChangeOp is what happened to a peer.
type ChangeOp uint8

// The ops of a PeerChange.
const (
	OpLeecher ChangeOp = iota + 1 // announced with bytes left
	OpSeeder                      // announced complete
	OpStopped                     // left the swarm
	OpPartial                     // a partial seed (BEP 21): bytes left, wants no more
)

// Valid reports whether op is one of the ops above.
func (op ChangeOp) Valid() bool { return op >= OpLeecher && op <= OpPartial }

// KeyCheck asks a store whether an announce that carries Key may refresh
// peer Peer (binary form, see AppendBinary) of swarm InfoHash without
// going through the store's announce: whether the store binds the peer to
// that key, or binds it to none and the announce carries none. Any other
// answer means the announce would change or be refused by the binding.
type KeyCheck struct {
	InfoHash InfoHash
	Peer     string
	Key      string
}

// PeerChange is one peer's change in one swarm, as the link carries it from
// the node that saw it to the other nodes.
type PeerChange struct {
	InfoHash InfoHash
	Op       ChangeOp
	// Completion marks a change that counted a completed download at its
	// origin. It is counted once at each other node too, however often it
	// is applied.
	Completion bool
	// Seen is when the origin saw the peer, unix milliseconds. A relayed
	// peer keeps it, so it expires everywhere at the same moment; it also
	// orders the changes of one peer.
	Seen int64
	// Peer is the peer's binary form (see AppendBinary).
	Peer string
}
