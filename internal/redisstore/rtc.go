package redisstore

import (
	"context"
	crand "crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// RTC keeps a node's WebRTC (WebSocket) peers and carries their signalling
// between the node's processes. Each swarm's WebRTC peers are a sorted set
// of peer ids scored like BitTorrent peers (class band + last seen) and a
// hash of the process that holds each one's socket (keys.go: RTC); each
// process listens on its own channel (RTCChannel), and an offer or answer
// for a peer is published, inside the script that picks the peer, to the
// channel of the process that holds its socket. So one announce with its
// offers is one round trip, whichever processes the offers go to, and a
// process never needs to know the others.
//
// WebRTC peers are not relayed over the link: a signal would have to
// reach a socket held by another tracker, through the hub and back, and a
// peer that the link planted in another node's swarm could not be
// answered. They stay among the replicas of one node (see
// docs/architecture.md).
type RTC struct {
	rdb          redis.UniversalClient
	ks           Keyspace
	prefix, node string
	proc         string
	channel      string // RTCChannel of this process
	chanPrefix   string // RTCChannel without the process id
	lifetimeMs   int64
	completedTTL int64 // seconds
	timeout      time.Duration
	now          func() time.Time
}

//go:embed rtc_announce.lua
var rtcAnnounceSrc string

//go:embed rtc_signal.lua
var rtcSignalSrc string

// RTCConfig is what RTC needs to know.
type RTCConfig struct {
	Prefix, NodeID string
	// PeerLifetime is how long a WebRTC peer counts after its last
	// announce (its socket's close removes it at once; this bounds a peer
	// whose process died).
	PeerLifetime, CompletedTTL time.Duration
	Timeout                    time.Duration
}

// NewRTC returns the WebRTC peers of a node, for one process, which it
// names with a random id. It does not talk to Redis.
func NewRTC(rdb redis.UniversalClient, cfg RTCConfig) (*RTC, error) {
	ks, err := NewKeyspace(cfg.Prefix, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	if cfg.PeerLifetime < time.Second || cfg.CompletedTTL < cfg.PeerLifetime || cfg.Timeout <= 0 {
		return nil, errors.New("rtc: peer lifetime ≥ 1s, completed TTL ≥ lifetime and a positive timeout are required")
	}
	var id [8]byte
	if _, err := crand.Read(id[:]); err != nil {
		return nil, err
	}
	proc := hex.EncodeToString(id[:])
	return &RTC{rdb: rdb, ks: ks, prefix: cfg.Prefix, node: cfg.NodeID, proc: proc,
		channel: RTCChannel(cfg.Prefix, cfg.NodeID, proc), chanPrefix: RTCChannel(cfg.Prefix, cfg.NodeID, ""),
		lifetimeMs: ceilSeconds(cfg.PeerLifetime) * 1000, completedTTL: ceilSeconds(cfg.CompletedTTL),
		timeout: cfg.Timeout, now: time.Now}, nil
}

// Process is this process's id, as its channel and the owners hash name it.
func (r *RTC) Process() string { return r.proc }

// ranges are the score bounds both scripts take: expired leechers' max,
// seeders' band start, expired seeders' max, then the live ranges of
// leechers and seeders.
func (r *RTC) ranges() []any {
	cutoff := r.now().UnixMilli() - r.lifetimeMs
	lmin, lmax := liveRange(bittorrent.OpLeecher, cutoff)
	smin, smax := liveRange(bittorrent.OpSeeder, cutoff)
	return []any{cutoff, classBand(bittorrent.OpSeeder), classBand(bittorrent.OpSeeder) + cutoff, lmin, lmax, smin, smax}
}

// Announce records (or removes) a WebRTC peer and sends its offers to
// other live peers of its swarm, in one atomic script.
func (r *RTC) Announce(ctx context.Context, a *bittorrent.RTCAnnounce) (bittorrent.RTCResult, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	cmd := r.announceCmd(ctx, r.rdb, a)
	return decodeRTC(cmd, len(a.Payloads))
}

// AnnounceBatch is Announce for several announces in one pipeline: one
// round trip, each announce still its own atomic script call. out and
// errs get each one's result.
func (r *RTC) AnnounceBatch(ctx context.Context, as []*bittorrent.RTCAnnounce, out []bittorrent.RTCResult, errs []error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(as))
	for i, a := range as {
		cmds[i] = r.announceCmd(ctx, pipe, a)
	}
	pipe.Exec(ctx) // each command carries its own error
	for i, cmd := range cmds {
		out[i], errs[i] = decodeRTC(cmd, len(as[i].Payloads))
	}
}

// fcaller is a client or a pipeline: what calls a function.
type fcaller interface {
	FCall(ctx context.Context, function string, keys []string, args ...any) *redis.Cmd
}

func (r *RTC) announceCmd(ctx context.Context, c fcaller, a *bittorrent.RTCAnnounce) *redis.Cmd {
	keys := r.ks.RTC(a.InfoHash)
	op, cls := "l", bittorrent.OpLeecher
	switch a.Op {
	case bittorrent.RTCSeeder:
		op, cls = "s", bittorrent.OpSeeder
	case bittorrent.RTCStop:
		op = "x"
	case bittorrent.RTCClose:
		op = "c"
	}
	completed := "0"
	if a.Completed {
		completed = "1"
	}
	args := make([]any, 0, 16+len(a.Payloads))
	args = append(args, string(a.PeerID[:]), op, r.proc, PeerScore(cls, r.now().UnixMilli()), r.lifetimeMs,
		r.chanPrefix, rand.Uint32(), completed, r.completedTTL)
	args = append(args, r.ranges()...)
	var buf []byte
	for i, p := range a.Payloads {
		s := bittorrent.Signal{InfoHash: a.InfoHash, From: a.PeerID, OfferID: a.OfferIDs[i], Payload: p}
		buf = bittorrent.AppendSignalTail(buf[:0], &s)
		args = append(args, string(buf))
	}
	return c.FCall(ctx, library.rtcAnnounce, []string{keys.Peers, keys.Owners, keys.Completed}, args...)
}

// decodeRTC reads rtc_announce.lua's reply: four counts, then pairs of a
// peer of this process and the number of the offer for it.
func decodeRTC(cmd *redis.Cmd, offers int) (bittorrent.RTCResult, error) {
	v, err := cmd.Slice()
	if err != nil {
		return bittorrent.RTCResult{}, fmt.Errorf("rtc announce: %w", err)
	}
	if len(v) < 4 || len(v)%2 != 0 || (len(v)-4)/2 > offers {
		return bittorrent.RTCResult{}, fmt.Errorf("rtc announce: %d values in the reply", len(v))
	}
	var n [4]int64
	for i := range n {
		x, ok := v[i].(int64)
		if !ok {
			return bittorrent.RTCResult{}, errors.New("rtc announce: a count is not an integer")
		}
		n[i] = x
	}
	res := bittorrent.RTCResult{Leechers: int(n[0]), Seeders: int(n[1]), Sent: int(n[2]), Remote: int(n[3])}
	for i := 4; i < len(v); i += 2 {
		to, ok1 := v[i].(string)
		k, ok2 := v[i+1].(int64)
		if !ok1 || !ok2 || len(to) != 20 || k < 1 || int(k) > offers {
			return bittorrent.RTCResult{}, errors.New("rtc announce: a local offer is malformed")
		}
		var lo bittorrent.LocalOffer
		copy(lo.To[:], to)
		lo.Offer = int(k) - 1
		res.Local = append(res.Local, lo)
	}
	return res, nil
}

// Leave removes WebRTC peers whose socket this process held (closed), each
// only if no other process holds it since, in one pipeline.
func (r *RTC) Leave(ctx context.Context, ih []bittorrent.InfoHash, peers []bittorrent.PeerID) error {
	if len(ih) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	for i := range ih {
		r.announceCmd(ctx, pipe, &bittorrent.RTCAnnounce{InfoHash: ih[i], PeerID: peers[i], Op: bittorrent.RTCClose})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("rtc leave: %w", err)
	}
	return nil
}

// Signal carries s (an answer) to the process that holds the socket of
// s.To, if s.To is a live WebRTC peer of the swarm. It reports whether
// s.To is such a peer, and whether another process holds it (then s was
// published to it; if this process does, the caller delivers s).
func (r *RTC) Signal(ctx context.Context, s *bittorrent.Signal) (sent, remote bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	keys := r.ks.RTC(s.InfoHash)
	args := append([]any{string(s.To[:]), string(bittorrent.AppendSignal(nil, s)), r.chanPrefix, r.proc}, r.ranges()[:3]...)
	n, err := r.rdb.FCall(ctx, library.rtcSignal, []string{keys.Peers, keys.Owners}, args...).Int()
	if err != nil {
		return false, false, fmt.Errorf("rtc signal: %w", err)
	}
	return n > 0, n == 2, nil
}

// Scrape counts the live WebRTC peers of each swarm and their completed
// downloads, in one pipeline.
func (r *RTC) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rg := r.ranges()
	pipe := r.rdb.Pipeline()
	type counts struct {
		l, s *redis.IntCmd
		c    *redis.StringCmd
	}
	cmds := make([]counts, len(hashes))
	for i, ih := range hashes {
		k := r.ks.RTC(ih)
		cmds[i] = counts{pipe.ZCount(ctx, k.Peers, rg[3].(string), rg[4].(string)), pipe.ZCount(ctx, k.Peers, rg[5].(string), rg[6].(string)), pipe.Get(ctx, k.Completed)}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("rtc scrape: %w", err)
	}
	out := make([]bittorrent.Scrape, len(hashes))
	for i, ih := range hashes {
		done, _ := strconv.Atoi(cmds[i].c.Val())
		out[i] = bittorrent.Scrape{InfoHash: ih, Incomplete: int(cmds[i].l.Val()), Complete: int(cmds[i].s.Val()), Downloaded: done, Downloaders: int(cmds[i].l.Val())}
	}
	return out, nil
}

// SignalHandler receives what Listen hears.
type SignalHandler interface {
	// Ready: the subscription is confirmed (again after each
	// resubscription).
	Ready()
	// Deliver a signal. It must not block for long: it runs on the one
	// receiving goroutine.
	Deliver(s bittorrent.Signal)
	// Bad: a message that is not a signal (dropped).
	Bad()
	// Lost: the subscription failed; Listen subscribes again after a
	// backoff.
	Lost(err error)
}

// Listen subscribes to this process's channel and hands every signal that
// arrives to h, until ctx ends.
func (r *RTC) Listen(ctx context.Context, h SignalHandler) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, h)
		if ctx.Err() != nil {
			return nil
		}
		h.Lost(err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

func (r *RTC) listenOnce(ctx context.Context, h SignalHandler) error {
	ps := r.rdb.Subscribe(ctx, r.channel)
	defer ps.Close()
	// go-redis does not end a blocked Receive when ctx ends; closing the
	// subscription does.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				h.Ready()
			}
		case *redis.Message:
			s, err := bittorrent.ParseSignal([]byte(m.Payload))
			if err != nil {
				h.Bad()
				continue
			}
			h.Deliver(s)
		}
	}
}
