package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// What the WebSocket front end's soft state needs of the store (see
// wsapi's soft.go and docs/soft-state.md): a plain read of a small swarm of
// WebRTC peers with the process of each, refreshes written behind, and
// signals published to other processes without a script.

//go:embed rtc_read.lua
var rtcReadSrc string

//go:embed rtc_refresh.lua
var rtcRefreshSrc string

// maxRTCRefresh bounds the refreshes of one rtc_refresh call
// (MAXRTCREFRESH in the prelude); RefreshRTC splits larger groups.
const maxRTCRefresh = 256

// ReadRTCSwarms reads the live WebRTC peers of each swarm of hashes, with
// the process holding each one's socket, in one pipeline: a swarm of more
// than max live peers (or none) is counted, not read (Whole false).
func (r *RTC) ReadRTCSwarms(ctx context.Context, hashes []bittorrent.InfoHash, max int) ([]bittorrent.RTCSwarm, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rg := r.ranges()
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(hashes))
	for i, ih := range hashes {
		k := r.ks.RTC(ih)
		cmds[i] = pipe.FCall(ctx, library.rtcRead, []string{k.Peers, k.Owners}, rg[3], rg[4], rg[5], rg[6], max)
	}
	pipe.Exec(ctx) // each command carries its own error
	out := make([]bittorrent.RTCSwarm, len(hashes))
	for i, cmd := range cmds {
		v, err := cmd.Slice()
		if err != nil {
			return nil, fmt.Errorf("rtc read: %w", err)
		}
		if err := decodeRTCSwarm(v, max, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeRTCSwarm reads rtc_read.lua's reply: the two counts, then pairs
// of a peer and its process, leechers first. A reply is input: bounded by
// max and checked.
func decodeRTCSwarm(v []any, max int, sw *bittorrent.RTCSwarm) error {
	if len(v) < 2 || len(v)%2 != 0 {
		return fmt.Errorf("rtc read: %d values in the reply", len(v))
	}
	l, ok1 := v[0].(int64)
	s, ok2 := v[1].(int64)
	if !ok1 || !ok2 || l < 0 || s < 0 {
		return errors.New("rtc read: a count is not an integer")
	}
	sw.Leechers, sw.Seeders = int(l), int(s)
	n := (len(v) - 2) / 2
	if n == 0 {
		return nil
	}
	if int64(n) != l+s || n > max {
		return fmt.Errorf("rtc read: %d peers for counts %d and %d", n, l, s)
	}
	sw.Whole = true
	sw.Peers = make([]bittorrent.RTCPeer, n)
	for j := range n {
		id, ok1 := v[2+2*j].(string)
		proc, ok2 := v[3+2*j].(string)
		if !ok1 || !ok2 || len(id) != 20 || len(proc) > 64 {
			return errors.New("rtc read: a peer is malformed")
		}
		p := &sw.Peers[j]
		copy(p.ID[:], id)
		p.Seeder, p.Process = int64(j) >= l, proc
	}
	return nil
}

// RefreshRTC writes refreshes of WebRTC peers whose sockets this process
// holds, at most maxRTCRefresh per call and all calls in one pipeline.
// A refresh is applied only to a peer still recorded, held by this
// process, in the same class, with an older time (rtc_refresh.lua): it
// never brings back a peer that stopped or left. gone are the refreshes
// of peers no longer recorded or held by another process; on an error,
// none of the failed calls' refreshes is known to be applied.
func (r *RTC) RefreshRTC(ctx context.Context, rs []bittorrent.RTCRefresh) (gone []bittorrent.RTCRefresh, err error) {
	if len(rs) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rg := r.ranges()
	groups := make(map[bittorrent.InfoHash][]int)
	for i := range rs {
		groups[rs[i].InfoHash] = append(groups[rs[i].InfoHash], i)
	}
	type call struct {
		idx []int
		cmd *redis.Cmd
	}
	pipe := r.rdb.Pipeline()
	var calls []call
	for ih, idx := range groups {
		k := r.ks.RTC(ih)
		for len(idx) > 0 {
			part := idx[:min(len(idx), maxRTCRefresh)]
			idx = idx[len(part):]
			args := make([]any, 0, 5+3*len(part))
			args = append(args, r.proc, r.lifetimeMs, rg[0], rg[1], rg[2])
			for _, i := range part {
				cls := bittorrent.OpLeecher
				if rs[i].Seeder {
					cls = bittorrent.OpSeeder
				}
				args = append(args, string(rs[i].PeerID[:]), PeerScore(cls, rs[i].At), classBand(cls))
			}
			calls = append(calls, call{part, pipe.FCall(ctx, library.rtcRefresh, []string{k.Peers, k.Owners}, args...)})
		}
	}
	pipe.Exec(ctx) // each command carries its own error
	for _, c := range calls {
		v, cerr := c.cmd.Slice()
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("rtc refresh: %w", cerr))
			for _, i := range c.idx {
				gone = append(gone, rs[i])
			}
			continue
		}
		for _, x := range v {
			id, ok := x.(string)
			if !ok || len(id) != 20 {
				continue
			}
			for _, i := range c.idx {
				if string(rs[i].PeerID[:]) == id {
					gone = append(gone, rs[i])
					break
				}
			}
		}
	}
	return gone, err
}

// Publish sends signals to the processes holding their peers' sockets, in
// one pipeline and without a script: the caller knows (from a read at
// most its cache age old) which process holds each peer; a signal for a
// peer that left meanwhile is dropped by that process.
func (r *RTC) Publish(ctx context.Context, sigs []bittorrent.RemoteSignal) error {
	if len(sigs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	var buf []byte
	for i := range sigs {
		buf = bittorrent.AppendSignal(buf[:0], &sigs[i].Signal)
		pipe.Publish(ctx, r.chanPrefix+sigs[i].Process, string(buf))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("rtc publish: %w", err)
	}
	return nil
}
