package link

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Bus is the pub/sub the link runs on (redisstore.LinkConn): Publish
// publishes a payload on a channel (sharded: on a Redis Cluster, at the
// shard of its slot); Subscribe subscribes to channels and, once the
// subscription is confirmed, returns receive, which waits up to timeout for
// the next message (ok false: something that is not a message came; a
// timeout is an error whose Timeout() is true), and close, which ends it.
type Bus interface {
	Publish(ctx context.Context, channel string, sharded bool, payload []byte) error
	Subscribe(ctx context.Context, sharded bool, channels ...string) (receive ReceiveFunc, close func() error, err error)
}

// ReceiveFunc waits for the next message of a subscription (Bus).
type ReceiveFunc = func(ctx context.Context, timeout time.Duration) (channel string, payload []byte, ok bool, err error)

// subscription is one subscription made on a Bus.
type subscription struct {
	receive ReceiveFunc
	close   func() error
}

// Endpoint is one side's connection to the link, the same for a node and
// the hub: it owns the process's session and sequence numbers, signs and
// publishes, subscribes with backoff, receives with soft-split detection,
// and checks what it receives for freshness. The node and the hub are
// policies on top of it: what a sign of life is, what a message means.
type Endpoint struct {
	cfg  Config
	name string
	bus  Bus
	sign func(*Message) ([]byte, error)

	session atomic.Uint64
	seqMu   sync.Mutex
	seqs    map[uint16]uint64 // by stream: the last number of the session
	alive   atomic.Int64      // unix ms of the last sign of life on the subscription
	reset   chan struct{}
}

// NewEndpoint returns the endpoint of name (a node id or the hub's name) on
// bus, which signs what it publishes with sign. It starts nothing.
func NewEndpoint(cfg Config, name string, bus Bus, sign func(*Message) ([]byte, error)) *Endpoint {
	e := &Endpoint{cfg: cfg, name: name, bus: bus, sign: sign, reset: make(chan struct{}, 1), seqs: map[uint16]uint64{}}
	e.session.Store(NewSession())
	return e
}

// NewSession returns a random session id, never 0: one per process start,
// and one more each time a process must be resynced as if it had joined.
func NewSession() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}

// Session returns the current session id.
func (e *Endpoint) Session() uint64 { return e.session.Load() }

// Publish signs a message of kind with the next sequence number of the
// session's stream (0: the control stream; p+1: partition p's updates)
// and publishes it on channel. When the publish fails, what it carried is
// lost, so the endpoint starts a new session: the receiver resyncs a
// session it has not seen, and sequence numbers stay consecutive within
// each stream of one. Publish may be called from one goroutine per
// stream at a time (the node publishes each partition from its own).
func (e *Endpoint) Publish(ctx context.Context, channel string, stream uint16, kind Kind, changes []bittorrent.PeerChange) error {
	return e.publish(ctx, channel, Version, stream, kind, changes)
}

// PublishLegacy publishes a message of kind on the control stream in the
// format before partitions (LegacyVersion): the hub's heartbeat for nodes
// that do not speak Version yet, while a network upgrades.
func (e *Endpoint) PublishLegacy(ctx context.Context, channel string, kind Kind) error {
	return e.publish(ctx, channel, LegacyVersion, 0, kind, nil)
}

// nextSeq returns the session and the next number of stream in it, read
// together: a new session started meanwhile numbers from 1.
func (e *Endpoint) nextSeq(stream uint16) (session, seq uint64) {
	e.seqMu.Lock()
	defer e.seqMu.Unlock()
	e.seqs[stream]++
	return e.session.Load(), e.seqs[stream]
}

// lastSeq returns the last number of stream in this session.
func (e *Endpoint) lastSeq(stream uint16) uint64 {
	e.seqMu.Lock()
	defer e.seqMu.Unlock()
	return e.seqs[stream]
}

func (e *Endpoint) publish(ctx context.Context, channel string, version uint8, stream uint16, kind Kind, changes []bittorrent.PeerChange) error {
	session, seq := e.nextSeq(stream)
	m := &Message{Version: version, Kind: kind, Partitions: uint16(e.cfg.PartitionCount()), Stream: stream, Node: e.name,
		Session: session, Seq: seq, Time: time.Now().UnixMilli(), Changes: changes}
	b, err := e.sign(m)
	if err != nil {
		return err
	}
	if err := e.bus.Publish(ctx, channel, e.cfg.Sharded, b); err != nil {
		e.seqMu.Lock()
		e.session.Store(NewSession())
		clear(e.seqs)
		e.seqMu.Unlock()
		return err
	}
	return nil
}

// Fresh reports whether a message's time lies within the allowed skew of
// now; the receiver refuses other messages as stale.
func (e *Endpoint) Fresh(m *Message, now time.Time) bool {
	d := now.UnixMilli() - m.Time
	skew := e.cfg.MaxSkew.Milliseconds()
	return d <= skew && -d <= skew
}

// Alive records a sign of life on the subscription (the policy says what
// counts: a valid hub heartbeat for a node, anything at all for the hub).
func (e *Endpoint) Alive() { e.alive.Store(time.Now().UnixMilli()) }

// LastAlive returns when the last sign of life was seen.
func (e *Endpoint) LastAlive() time.Time { return time.UnixMilli(e.alive.Load()) }

// Reset drops the subscription and makes it anew (the old "Reset Tracker
// Link").
func (e *Endpoint) Reset() {
	select {
	case e.reset <- struct{}{}:
	default:
	}
}

// Listener is what a policy does with the subscription.
type Listener struct {
	// Handle is called with every message received, in order.
	Handle func(channel string, payload []byte)
	// Down is called when a subscription fails or cannot be made.
	Down func(err error)
	// Subscribed is called each time a subscription is made; first is
	// true for the first one.
	Subscribed func(first bool)
	// Lost is called when a subscription is dropped (a soft split, an
	// error, a reset), with the reason.
	Lost func(reason string)
}

// Listen subscribes to channels and hands each message to l until ctx
// ends. A subscription with no sign of life (Alive) for three heartbeats
// since it was made or since the last sign is a soft split: it is dropped
// and made anew, as it is on error or Reset.
func (e *Endpoint) Listen(ctx context.Context, l Listener, channels ...string) {
	first := true
	for ctx.Err() == nil {
		ps := subscribe(ctx, e.bus, e.cfg.Sharded, l.Down, channels...)
		if ps == nil {
			return
		}
		l.Subscribed(first)
		first = false
		reason := e.receive(ctx, ps, time.Now(), l)
		ps.close()
		if ctx.Err() != nil {
			return
		}
		l.Lost(reason)
	}
}

// Follow subscribes to one channel and hands each message to handle until
// ctx ends: a partition's channel, which may be quiet for long, so silence
// is no split here (the control channel's Listen watches the link). A
// failed subscription is made anew with backoff, and subscribed is called
// each time one is made (first true for the first), so that the policy
// resyncs what flowed meanwhile.
func (e *Endpoint) Follow(ctx context.Context, channel string, handle func(payload []byte), down func(error), subscribed func(first bool)) {
	first := true
	for ctx.Err() == nil {
		ps := subscribe(ctx, e.bus, e.cfg.Sharded, down, channel)
		if ps == nil {
			return
		}
		subscribed(first)
		first = false
		for {
			_, payload, ok, err := ps.receive(ctx, e.cfg.Heartbeat)
			if ctx.Err() != nil {
				break
			}
			if err != nil {
				var ne interface{ Timeout() bool }
				if !errors.As(err, &ne) || !ne.Timeout() {
					down(err)
					break
				}
			}
			if ok {
				handle(payload)
			}
		}
		ps.close()
	}
}

func (e *Endpoint) receive(ctx context.Context, ps *subscription, subscribed time.Time, l Listener) string {
	for {
		select {
		case <-e.reset:
			return "reset by operator"
		default:
		}
		channel, payload, ok, err := ps.receive(ctx, e.cfg.Heartbeat)
		if ctx.Err() != nil {
			return "stopping"
		}
		if err != nil {
			var ne interface{ Timeout() bool }
			if !errors.As(err, &ne) || !ne.Timeout() {
				l.Down(err)
				return "subscription error: " + err.Error()
			}
		}
		if ok {
			l.Handle(channel, payload)
		}
		last := max(e.alive.Load(), subscribed.UnixMilli())
		if time.Since(time.UnixMilli(last)) > 3*e.cfg.Heartbeat {
			return "soft split: no sign of life for 3 heartbeats"
		}
	}
}

// subscribe subscribes to channels (sharded: with SSUBSCRIBE, at the shard
// that owns their slot), retrying with backoff (100 ms doubling to 1 s,
// each failure reported to failed) until it succeeds or ctx ends (then it
// returns nil). One attempt a second costs a Redis that is down nothing,
// and the link is back within a second of Redis (after a restart, or a
// Redis Cluster's failover).
func subscribe(ctx context.Context, bus Bus, sharded bool, failed func(error), channels ...string) *subscription {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		receive, close, err := bus.Subscribe(ctx, sharded, channels...)
		if err == nil {
			return &subscription{receive: receive, close: close}
		}
		if ctx.Err() != nil {
			break
		}
		failed(err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	return nil
}
