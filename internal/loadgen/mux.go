package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// The multiplexed UDP mode (Config.Mux): the measured phase drives the
// clients from a few sockets, each shared by its clients and served by one
// goroutine that sends a client's next announce as soon as its reply is
// in. Each client still has one request in flight at a time, as in the
// plain mode, but a request costs the load generator two system calls
// and no goroutine switch, so the load generator can drive a faster
// server from the same core (scripts/bench-udp.sh measures how much).
// Clients are told apart by the transaction id: its high bits are the
// client's number on its socket, its low bits a sequence number.

// muxSeqBits is how many low bits of a transaction id count the client's
// requests.
const muxSeqBits = 20

// muxResult is what one socket's clients measured.
type muxResult struct {
	lat               []time.Duration
	failures, refused int64
	first             string
}

// measureMux runs the measured phase in the multiplexed mode until end and
// returns each socket's results.
func measureMux(ctx context.Context, host string, cfg Config, end time.Time) ([]muxResult, error) {
	socks := cfg.Mux
	out := make([]muxResult, socks)
	errs := make(chan error, socks)
	for s := range socks {
		n := cfg.Conns / socks
		if s < cfg.Conns%socks {
			n++
		}
		go func() { errs <- muxSocket(ctx, host, cfg, s, n, end, &out[s]) }()
	}
	var first error
	for range socks {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return out, first
}

// muxClient is one client of a shared socket.
type muxClient struct {
	seq  uint32
	sent time.Time
}

// muxSocket serves n clients from one socket until end.
func muxSocket(ctx context.Context, host string, cfg Config, s, n int, end time.Time, out *muxResult) error {
	var d net.Dialer
	if ip := cfg.source(s); ip != nil {
		d.LocalAddr = &net.UDPAddr{IP: ip}
	}
	conn, err := d.DialContext(ctx, "udp", host)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &udpClient{conn: conn, cfg: cfg, req: make([]byte, 0, 128), rep: make([]byte, 4096), timeout: 2 * time.Second}
	if err := c.connect(ctx); err != nil {
		return fmt.Errorf("mux socket %d: %w", s, err)
	}
	rng := rand.New(rand.NewPCG(uint64(s), 43))
	clients := make([]muxClient, n)
	req := make([]byte, 0, 128)
	send := func(k int) {
		cl := &clients[k]
		cl.seq = (cl.seq + 1) & (1<<muxSeqBits - 1)
		req = appendUDPAnnounce(req[:0], cfg, c.connID, uint32(k)<<muxSeqBits|cl.seq, rng.IntN(cfg.Torrents), rng.IntN(cfg.Peers), 0, int32(cfg.NumWant))
		cl.sent = time.Now()
		conn.Write(req) // a lost datagram is a timeout below
	}
	for k := range clients {
		send(k)
	}
	out.lat = make([]time.Duration, 0, 1<<16)
	var deadline time.Time
	for {
		now := time.Now()
		if !now.Before(end) || ctx.Err() != nil {
			return nil
		}
		if now.After(deadline.Add(-400 * time.Millisecond)) {
			// A deadline set once in a while, not per read: the timer
			// costs about as much as the read.
			deadline = now.Add(500 * time.Millisecond)
			conn.SetReadDeadline(deadline)
		}
		m, err := conn.Read(c.rep)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			// Clients whose request got no answer within 2 s fail it and
			// send the next.
			for k := range clients {
				if now := time.Now(); now.Sub(clients[k].sent) > c.timeout && now.Before(end) {
					out.failures++
					if out.first == "" {
						out.first = errTimeout.Error()
					}
					send(k)
				}
			}
			continue
		}
		rep := c.rep[:m]
		if m < 8 {
			continue
		}
		tx := binary.BigEndian.Uint32(rep[4:])
		k := int(tx >> muxSeqBits)
		if k >= len(clients) || tx&(1<<muxSeqBits-1) != clients[k].seq {
			continue // a late reply to a request that timed out
		}
		took := time.Since(clients[k].sent)
		if !time.Now().Before(end) {
			return nil // cut off by the end of the run: not counted
		}
		switch binary.BigEndian.Uint32(rep) {
		case udpAnnounce:
			if m < 20 {
				out.failures++
				out.first = fmt.Sprintf("short announce reply of %d bytes", m)
			}
		case udpError:
			out.failures++
			out.refused++
			if out.first == "" {
				out.first = fmt.Sprintf("%v: %q", errFailure, rep[8:])
			}
		default:
			out.failures++
		}
		out.lat = append(out.lat, took)
		send(k)
	}
}
