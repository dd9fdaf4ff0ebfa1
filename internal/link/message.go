// Package link is the tracker link: the signed message format that nodes
// and the hub exchange over Redis pub/sub, and the node's side of it (it
// publishes the node's local peer changes and watches the hub's
// heartbeats). The hub itself is package hub.
package link

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Version is the message format version. A message of another version is
// refused (and counted) before anything else is read.
const Version = 1

// Kind says what a message is.
type Kind uint8

// Message kinds. Nodes send Hello, Heartbeat and Updates up; the hub sends
// HubHeartbeat down.
const (
	KindUpdates Kind = iota + 1
	KindHello
	KindHeartbeat
	KindHubHeartbeat
)

// Limits on a message; a larger one is malformed.
const (
	MaxChanges = 1024
	MaxSize    = 128 << 10
	macLen     = sha256.Size
	headerLen  = 2 + 1 + 8 + 8 + 8 + 2 // version, kind, node len, session, seq, time, count
)

// Message is one link message.
type Message struct {
	Kind    Kind
	Node    string // sender: a node id, or the hub's name
	Session uint64 // random per process start: a new one means a (re)join
	Seq     uint64 // 1, 2, ... per session; a gap means lost messages
	Time    int64  // unix milliseconds at the sender
	Changes []bittorrent.PeerChange
}

// Key is an HMAC key for one direction of the link.
type Key []byte

// Keys derives the two direction keys from the link password. Separate keys
// mean a node's message can never be replayed as the hub's, or the reverse.
func Keys(password string) (up, down Key) {
	derive := func(dir string) Key {
		m := hmac.New(sha256.New, []byte(password))
		m.Write([]byte("tracklink link v1 " + dir))
		return m.Sum(nil)
	}
	return derive("node->hub"), derive("hub->node")
}

// Errors of Decode; each is a reason the receiver counts.
var (
	ErrVersion   = errors.New("unknown version")
	ErrMalformed = errors.New("malformed")
	ErrBadMAC    = errors.New("bad MAC")
)

// Encode serialises and signs m.
func Encode(key Key, m *Message) ([]byte, error) {
	if len(m.Node) == 0 || len(m.Node) > 255 {
		return nil, fmt.Errorf("link encode: node name of %d bytes", len(m.Node))
	}
	if len(m.Changes) > MaxChanges {
		return nil, fmt.Errorf("link encode: %d changes, at most %d", len(m.Changes), MaxChanges)
	}
	b := make([]byte, 0, headerLen+len(m.Node)+len(m.Changes)*70+macLen)
	b = append(b, Version, byte(m.Kind), byte(len(m.Node)))
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
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	b = mac.Sum(b)
	if len(b) > MaxSize {
		return nil, fmt.Errorf("link encode: %d bytes, at most %d", len(b), MaxSize)
	}
	return b, nil
}

// Decode checks the version, then the MAC (in constant time), and only then
// parses. Nothing of an unauthenticated message is read beyond its version.
func Decode(key Key, b []byte) (*Message, error) {
	if len(b) == 0 {
		return nil, ErrMalformed
	}
	if b[0] != Version {
		return nil, ErrVersion
	}
	if len(b) > MaxSize || len(b) < headerLen+1+macLen {
		return nil, ErrMalformed
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return nil, ErrBadMAC
	}
	r := reader{b: body[1:]}
	m := &Message{Kind: Kind(r.byte())}
	m.Node = string(r.bytes(int(r.byte())))
	m.Session = r.u64()
	m.Seq = r.u64()
	m.Time = int64(r.u64())
	n := int(r.u16())
	if r.err || m.Node == "" || m.Kind < KindUpdates || m.Kind > KindHubHeartbeat || n > MaxChanges {
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
		if r.err || c.Op < bittorrent.OpLeecher || c.Op > bittorrent.OpStopped {
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
