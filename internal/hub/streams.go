package hub

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Each process has streams (link.Message.Stream): its control stream,
// which every hub hears, and one per partition, which only the hub
// relaying the partition hears. Each is numbered on its own, and checked
// on its own against replays and gaps (seqWindow).

// seqWindow is the replay and gap state of one stream of a process: the
// highest number accepted, the numbers below it that have not arrived
// (bit i: last-1-i; ReorderWindow bits), since when the oldest of those
// is missing, and when the stream was last heard.
type seqWindow struct {
	last      uint64
	missing   uint64
	holeSince time.Time
	heard     time.Time
	dirty     bool // a partition's: changed since written to the registry
}

// window returns the window of stream (0: control), or nil if none was
// heard.
func (st *procState) window(stream uint16) *seqWindow {
	if stream == 0 {
		if st.ctl.last == 0 {
			return nil
		}
		return &st.ctl
	}
	return st.streams[stream]
}

// newWindow starts the window of stream at seq.
func (st *procState) newWindow(stream uint16, seq uint64, now time.Time) {
	if stream == 0 {
		st.ctl = seqWindow{last: seq, heard: now}
		return
	}
	if st.streams == nil {
		st.streams = map[uint16]*seqWindow{}
	}
	st.streams[stream] = &seqWindow{last: seq, heard: now}
}

// advance takes seq, above last: the numbers skipped become missing.
// It reports a gap when numbers still missing fall out of the window.
func (w *seqWindow) advance(seq uint64, now time.Time) (gap bool) {
	shift := seq - w.last // ≥ 1; the old last arrived, shift-1 were skipped
	w.last = seq
	skipped := ^uint64(0)
	if shift-1 < ReorderWindow {
		skipped = 1<<(shift-1) - 1
	}
	if shift >= ReorderWindow {
		gap = w.missing != 0 || shift-1 > ReorderWindow
		w.missing = skipped
	} else {
		gap = w.missing>>(ReorderWindow-shift) != 0
		w.missing = w.missing<<shift | skipped
	}
	if w.missing == 0 {
		w.holeSince = time.Time{}
	} else if w.holeSince.IsZero() {
		w.holeSince = now
	}
	return gap
}

// fill takes a late number, d below last: true if it was missing (it is
// not any more), false for a replay or a number beyond the window.
func (w *seqWindow) fill(d uint64) bool {
	if d == 0 || d > ReorderWindow {
		return false
	}
	bit := uint64(1) << (d - 1)
	if w.missing&bit == 0 {
		return false
	}
	w.missing &^= bit
	if w.missing == 0 {
		w.holeSince = time.Time{}
	}
	return true
}

// overdue reports a gap when numbers have been missing for longer than
// wait; they are then given up (the resync covers them) and a late one is
// refused as a replay.
func (w *seqWindow) overdue(now time.Time, wait time.Duration) bool {
	if w.missing == 0 || now.Sub(w.holeSince) <= wait {
		return false
	}
	w.missing, w.holeSince = 0, time.Time{}
	return true
}

// overdue reports whether any stream of the process has numbers missing
// for longer than wait (giving them up).
func (st *procState) overdue(now time.Time, wait time.Duration) bool {
	gap := st.ctl.overdue(now, wait)
	for _, w := range st.streams {
		gap = w.overdue(now, wait) || gap
	}
	return gap
}

// A partition's streams are relayed by one hub at a time, so their replay
// state is kept in the member's registry of processes by the hub that
// relays the partition (persist, each heartbeat), and read by the hub that
// takes it, before it listens: a message captured before a restart or a
// takeover is refused as a replay there too. What was accepted in the last
// heartbeat before a crash may be accepted once more (relaying is
// idempotent); a stream whose state cannot be read starts afresh at its
// first message.

// streamField names a process's partition stream in the registry.
func streamField(k procKey, stream uint16) string {
	return k.field() + "/" + strconv.Itoa(int(stream))
}

// parseStreamField reads a stream's field: its process and stream (1 to
// parts).
func parseStreamField(field string, parts int) (procKey, uint16, bool) {
	i := strings.LastIndexByte(field, '/')
	if i < 0 {
		return procKey{}, 0, false
	}
	stream, err := strconv.Atoi(field[i+1:])
	node, sess, ok := strings.Cut(field[:i], "/")
	if err != nil || stream < 1 || stream > parts || !ok || len(sess) != 16 {
		return procKey{}, 0, false
	}
	session, err := strconv.ParseUint(sess, 16, 64)
	if err != nil {
		return procKey{}, 0, false
	}
	return procKey{node, session}, uint16(stream), true
}

// loadStreams reads, from mb's registry, the state of partition p's
// stream of each process the hub knows on mb, and takes what it has no
// state of yet. A value is another operator's input: one that does not
// parse, or claims a time ahead of the hub's clock beyond the skew, is
// ignored (the stream then starts afresh).
func (h *Hub) loadStreams(ctx context.Context, mb *member, p int) error {
	stream := uint16(p + 1)
	h.mu.Lock()
	var keys []procKey
	h.eachProc(func(k procKey, st *procState) {
		if st.member == mb {
			keys = append(keys, k)
		}
	})
	h.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	fields := make([]string, len(keys))
	for i, k := range keys {
		fields[i] = streamField(k, stream)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	vals, err := mb.procs.Get(ctx, fields...)
	if err != nil {
		return err
	}
	ahead := time.Now().Add(h.cfg.Link.MaxSkew).UnixMilli()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var last uint64
		var heard int64
		if n, err := fmt.Sscanf(s, "%d %d", &last, &heard); err != nil || n != 2 || last == 0 || heard < 0 || heard > ahead {
			continue
		}
		st := h.proc(keys[i])
		if st == nil || st.member != mb || st.streams[stream] != nil {
			continue
		}
		if st.streams == nil {
			st.streams = map[uint16]*seqWindow{}
		}
		st.streams[stream] = &seqWindow{last: last, heard: time.UnixMilli(heard)}
	}
	return nil
}
