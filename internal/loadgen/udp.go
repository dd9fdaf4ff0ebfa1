package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// udpClient is one simulated UDP client: a socket of its own that connects
// once (again after a minute, as BEP 15 asks of clients) and then
// announces, waiting for each reply before the next request, like a
// keep-alive HTTP connection.
type udpClient struct {
	conn    net.Conn
	cfg     Config
	connID  uint64
	issued  time.Time
	txID    uint32
	req     []byte
	rep     []byte
	timeout time.Duration
}

// BEP 15 numbers the load generator uses.
const (
	udpProtocolID = 0x41727101980
	udpConnect    = 0
	udpAnnounce   = 1
	udpError      = 3
	udpStarted    = 2
)

func dialUDP(ctx context.Context, host string, cfg Config, src net.IP) (*udpClient, error) {
	var d net.Dialer
	if src != nil {
		d.LocalAddr = &net.UDPAddr{IP: src}
	}
	conn, err := d.DialContext(ctx, "udp", host)
	if err != nil {
		return nil, err
	}
	return &udpClient{conn: conn, cfg: cfg, req: make([]byte, 0, 128), rep: make([]byte, 4096), timeout: 2 * time.Second}, nil
}

func (c *udpClient) Close() { c.conn.Close() }

func (c *udpClient) Announce(ctx context.Context, torrent, peer int, fill bool) error {
	if c.issued.IsZero() || time.Since(c.issued) > time.Minute {
		if err := c.connect(ctx); err != nil {
			return err
		}
	}
	event, numWant := uint32(0), int32(c.cfg.NumWant)
	if fill {
		event, numWant = udpStarted, 0
	}
	c.txID++
	b := appendUDPAnnounce(c.req[:0], c.cfg, c.connID, c.txID, torrent, peer, event, numWant)
	c.req = b
	rep, err := c.roundTrip(ctx, b, udpAnnounce)
	if err != nil {
		return err
	}
	if len(rep) < 20 {
		return fmt.Errorf("short announce reply of %d bytes", len(rep))
	}
	return nil
}

func (c *udpClient) connect(ctx context.Context) error {
	c.txID++
	b := binary.BigEndian.AppendUint64(c.req[:0], udpProtocolID)
	b = binary.BigEndian.AppendUint32(b, udpConnect)
	b = binary.BigEndian.AppendUint32(b, c.txID)
	rep, err := c.roundTrip(ctx, b, udpConnect)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if len(rep) != 16 {
		return fmt.Errorf("connect reply of %d bytes", len(rep))
	}
	c.connID, c.issued = binary.BigEndian.Uint64(rep[8:]), time.Now()
	return nil
}

var errTimeout = errors.New("no reply within 2s")

// roundTrip sends b and waits for the reply with the same transaction id
// (late replies to earlier requests are skipped).
func (c *udpClient) roundTrip(ctx context.Context, b []byte, action uint32) ([]byte, error) {
	if _, err := c.conn.Write(b); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.conn.SetReadDeadline(deadline)
	for {
		n, err := c.conn.Read(c.rep)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, errTimeout
			}
			return nil, err
		}
		rep := c.rep[:n]
		if n < 8 || binary.BigEndian.Uint32(rep[4:]) != c.txID {
			continue
		}
		switch binary.BigEndian.Uint32(rep) {
		case action:
			return rep, nil
		case udpError:
			c.issued = time.Time{} // connect again next time
			return nil, fmt.Errorf("%w: %q", errFailure, rep[8:])
		default:
			return nil, fmt.Errorf("reply action %d to action %d", binary.BigEndian.Uint32(rep), action)
		}
	}
}

// appendUDPAnnounce appends a BEP 15 announce of peer of torrent.
func appendUDPAnnounce(b []byte, cfg Config, connID uint64, tx uint32, torrent, peer int, event uint32, numWant int32) []byte {
	b = binary.BigEndian.AppendUint64(b, connID)
	b = binary.BigEndian.AppendUint32(b, udpAnnounce)
	b = binary.BigEndian.AppendUint32(b, tx)
	b = appendID(b, 't', torrent)
	b = appendID(b, 'p', torrent*cfg.Peers+peer)
	b = binary.BigEndian.AppendUint64(b, 0) // downloaded
	// Half of the peers are seeders, as in the HTTP mode.
	b = binary.BigEndian.AppendUint64(b, uint64(peer%2)) // left
	b = binary.BigEndian.AppendUint64(b, 0)              // uploaded
	b = binary.BigEndian.AppendUint32(b, event)
	b = binary.BigEndian.AppendUint32(b, 0) // ip: the sender's
	b = binary.BigEndian.AppendUint32(b, uint32(torrent*cfg.Peers+peer))
	b = binary.BigEndian.AppendUint32(b, uint32(numWant))
	b = binary.BigEndian.AppendUint16(b, uint16(1024+peer))
	b = append(b, 2, 9)
	return append(b, "/announce"...) // BEP 41 URL data, as clients send it
}
