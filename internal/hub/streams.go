package hub

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

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
	vals, err := mb.Link.HMGet(ctx, mb.procsKey(), fields...).Result()
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
