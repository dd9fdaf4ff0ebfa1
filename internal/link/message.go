// Package link is the tracker link: the signed message format that nodes
// and the hub exchange over Redis pub/sub, and the node's side of it (it
// publishes the node's local peer changes and watches the hub's
// heartbeats). The hub itself is package hub.
package link

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Version is the message format version. A message of another version is
// refused (and counted) before anything else is read. Version 3 adds the
// sender's partition count and the message's stream (partition.go);
// version 2 signs with per-node keys and the hub's Ed25519 key
// (identity.go); version 1 signed with one key for all.
//
// The hub still reads version 2 from nodes (LegacyVersion: a node before
// partitions, which sends everything on the control channel), so that a
// network upgrades its hubs first and its nodes after; nodes read version 3
// only from the hub.
const Version = 3

// LegacyVersion is the version before partitions, which the hub still
// reads from nodes and writes, beside its own, while such a node is heard.
const LegacyVersion = 2

// Kind says what a message is.
type Kind uint8

// Message kinds. Nodes send Hello, Heartbeat, Updates and, at a clean
// stop, Bye up; the hub sends HubHeartbeat down. Bye came after format 3's
// first release: a hub that predates it counts one as malformed (and
// forgets the process after the node timeout, as before), so a network
// upgrades its hubs before its nodes.
const (
	KindUpdates Kind = iota + 1
	KindHello
	KindHeartbeat
	KindHubHeartbeat
	KindBye
)

// Limits on a message; a larger one is malformed.
const (
	MaxChanges = 1024
	MaxSize    = 128 << 10
	macLen     = sha256.Size
	sigLen     = ed25519.SignatureSize
	headerLen  = 2 + 1 + 8 + 8 + 8 + 2 // version, kind, node len, session, seq, time, count
	v3Extra    = 2 + 2                 // partitions, stream
)

// Message is one link message.
type Message struct {
	// Version is the format the message was read in (Version or
	// LegacyVersion); writing, 0 is Version.
	Version uint8
	Kind    Kind
	// Partitions is the sender's partition count (0: not said, as in
	// version 2); a receiver with another count refuses the message.
	Partitions uint16
	// Stream is the sequence of numbers Seq counts in: 0 the process's
	// control stream (hello, heartbeats), p+1 its updates of partition p.
	Stream  uint16
	Node    string // sender: a node id, or the hub's name
	Session uint64 // random per process start: a new one means a process joined
	Seq     uint64 // 1, 2, ... per session and stream; a gap means lost messages
	Time    int64  // unix milliseconds at the sender
	Changes []bittorrent.PeerChange
}

// Key is an HMAC key: a node's (NodeKey).
type Key []byte

// Errors of decoding; each is a reason the receiver counts.
var (
	ErrVersion     = errors.New("unknown version")
	ErrMalformed   = errors.New("malformed")
	ErrBadMAC      = errors.New("bad MAC")
	ErrUnknownNode = errors.New("unknown node")
)

// EncodeUp serialises m and signs it with the sending node's key.
func EncodeUp(key Key, m *Message) ([]byte, error) {
	b, err := encodeBody(m, macLen)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b), nil
}

// EncodeDown serialises m and signs it with the hub's private key.
func EncodeDown(priv ed25519.PrivateKey, m *Message) ([]byte, error) {
	b, err := encodeBody(m, sigLen)
	if err != nil {
		return nil, err
	}
	return append(b, ed25519.Sign(priv, b)...), nil
}

// DecodeUp checks a node's message (Version or LegacyVersion): the
// version, then the MAC (in constant time) with the key of the node the
// message names, and only then parses the rest. Of an unauthenticated
// message nothing is read but its version and the sender's name (at most
// 255 bytes), which selects the key; keyOf refuses names it has no key for
// (ErrUnknownNode).
func DecodeUp(b []byte, keyOf func(node string) (Key, error)) (*Message, error) {
	body, sum, err := split(b, macLen, LegacyVersion)
	if err != nil {
		return nil, err
	}
	node, ok := nodeName(body)
	if !ok {
		return nil, ErrMalformed
	}
	key, err := keyOf(node)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownNode, err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return nil, ErrBadMAC
	}
	return parseBody(body)
}

// DecodeDown checks the hub's message (Version only) with its public key,
// then parses.
func DecodeDown(pub ed25519.PublicKey, b []byte) (*Message, error) {
	body, sig, err := split(b, sigLen, Version)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(pub, body, sig) {
		return nil, ErrBadMAC
	}
	return parseBody(body)
}

func encodeBody(m *Message, trailer int) ([]byte, error) {
	if len(m.Node) == 0 || len(m.Node) > 255 {
		return nil, fmt.Errorf("link encode: node name of %d bytes", len(m.Node))
	}
	if len(m.Changes) > MaxChanges {
		return nil, fmt.Errorf("link encode: %d changes, at most %d", len(m.Changes), MaxChanges)
	}
	b := make([]byte, 0, headerLen+v3Extra+len(m.Node)+len(m.Changes)*70+trailer)
	switch m.Version {
	case 0, Version:
		b = append(b, Version, byte(m.Kind))
		b = binary.BigEndian.AppendUint16(b, m.Partitions)
		b = binary.BigEndian.AppendUint16(b, m.Stream)
	case LegacyVersion:
		if m.Stream != 0 {
			return nil, errors.New("link encode: version 2 has no streams")
		}
		b = append(b, LegacyVersion, byte(m.Kind))
	default:
		return nil, fmt.Errorf("link encode: version %d", m.Version)
	}
	b = append(b, byte(len(m.Node)))
	b = append(b, m.Node...)
	b = binary.BigEndian.AppendUint64(b, m.Session)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Changes)))
	for _, c := range m.Changes {
		if len(c.Peer) > 255 {
			return nil, errors.New("link encode: peer too long")
		}
		b = append(b, c.InfoHash[:]...)
		op := byte(c.Op)
		if c.Completion {
			op |= 0x80
		}
		b = append(b, op)
		b = binary.BigEndian.AppendUint64(b, uint64(c.Seen))
		b = append(b, byte(len(c.Peer)))
		b = append(b, c.Peer...)
	}
	if len(b)+trailer > MaxSize {
		return nil, fmt.Errorf("link encode: %d bytes, at most %d", len(b)+trailer, MaxSize)
	}
	return b, nil
}

// split checks the version (Version, or also legacy when it is not 0) and
// the size, and cuts off the trailer (MAC or signature).
func split(b []byte, trailer int, legacy uint8) (body, sum []byte, err error) {
	if len(b) == 0 {
		return nil, nil, ErrMalformed
	}
	if b[0] != Version && b[0] != legacy {
		return nil, nil, ErrVersion
	}
	if len(b) > MaxSize || len(b) < headerLen+1+trailer {
		return nil, nil, ErrMalformed
	}
	return b[:len(b)-trailer], b[len(b)-trailer:], nil
}

// nameAt is where the node name's length byte lies in a body.
func nameAt(body []byte) int {
	if body[0] == LegacyVersion {
		return 2
	}
	return 2 + v3Extra
}

// nodeName reads the sender's name from an unauthenticated body.
func nodeName(body []byte) (string, bool) {
	at := nameAt(body)
	if len(body) <= at || len(body) < at+1+int(body[at]) || body[at] == 0 {
		return "", false
	}
	return string(body[at+1 : at+1+int(body[at])]), true
}

func parseBody(body []byte) (*Message, error) {
	r := reader{b: body[1:]}
	m := &Message{Version: body[0], Kind: Kind(r.byte())}
	if m.Version == Version {
		m.Partitions, m.Stream = r.u16(), r.u16()
	}
	m.Node = string(r.bytes(int(r.byte())))
	m.Session = r.u64()
	m.Seq = r.u64()
	m.Time = int64(r.u64())
	n := int(r.u16())
	if r.err || m.Node == "" || m.Kind < KindUpdates || m.Kind > KindBye || n > MaxChanges {
		return nil, ErrMalformed
	}
	// Only updates go on a partition's stream, and only of a partition
	// the sender has.
	if m.Stream != 0 && (m.Kind != KindUpdates || m.Stream > m.Partitions) {
		return nil, ErrMalformed
	}
	if n > 0 {
		m.Changes = make([]bittorrent.PeerChange, 0, min(n, len(r.b)/30+1))
	}
	for i := 0; i < n; i++ {
		var c bittorrent.PeerChange
		copy(c.InfoHash[:], r.bytes(20))
		op := r.byte()
		c.Op, c.Completion = bittorrent.ChangeOp(op&0x7f), op&0x80 != 0
		c.Seen = int64(r.u64())
		c.Peer = string(r.bytes(int(r.byte())))
		if r.err || !c.Op.Valid() {
			return nil, ErrMalformed
		}
		if _, err := bittorrent.PeerFromBinary(c.Peer); err != nil {
			return nil, ErrMalformed
		}
		m.Changes = append(m.Changes, c)
	}
	if len(r.b) != 0 {
		return nil, ErrMalformed
	}
	return m, nil
}

// reader reads big-endian fields; past the end it sets err and returns zeros.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) bytes(n int) []byte {
	if n > len(r.b) {
		r.err = true
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}
