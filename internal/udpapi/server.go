// Package udpapi is the tracker's UDP front end: BEP 15 connect, announce,
// scrape and error, with BEP 41 URL data, on an IPv4 and an IPv6 socket.
// Like the HTTP front end it parses, asks the tracker service
// (internal/tracker) and encodes; it owns no state beyond its queues.
//
// Packets flow through bounded stages, with no goroutine per packet:
//
//	reader (one per socket, recvmmsg batches)
//	  ├─ too short, not a request: dropped and counted, no reply
//	  ├─ connect: answered at once (a MAC, no store call)
//	  ├─ bad connection ID: a short error reply, never longer than the request
//	  └─ anything else: queued for the workers (dropped and counted when full)
//	workers (TRACKER_UDP_WORKERS): one store call each, reply queued
//	writer (one per socket, sendmmsg batches)
//
// Packet buffers come from a pool and go back to it once written.
package udpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

// Config is the UDP front end's part of the configuration.
type Config struct {
	// Addr is where UDP listens; empty turns UDP off. A host-less address
	// (":6969") listens on an IPv4 and an IPv6 socket. The default when the
	// variable is not set at all (":6969") is applied by cmd/tracker.
	Addr string `env:"UDP_ADDR"`
	// Secret keys connection IDs. Every process that serves one tracker
	// address (replicas, nodes behind one DNS name) must share it.
	Secret string `env:"UDP_SECRET"`
	// Workers bounds the requests handled at once (store calls in flight).
	Workers int `env:"UDP_WORKERS" envDefault:"128"`
	// Queue bounds the requests waiting for a worker, and the replies
	// waiting for a socket; beyond it packets are dropped and counted.
	Queue int `env:"UDP_QUEUE" envDefault:"4096"`
	// ScrapeMaxHashes bounds the info hashes of one scrape.
	ScrapeMaxHashes int `env:"UDP_SCRAPE_MAX_HASHES" envDefault:"74"`
}

// MinSecretLen is the shortest TRACKER_UDP_SECRET accepted.
const MinSecretLen = 16

// Enabled reports whether UDP is on.
func (c Config) Enabled() bool { return c.Addr != "" }

// LogValue keeps the secret out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("addr", c.Addr), slog.Bool("secret", c.Secret != ""), slog.Int("workers", c.Workers))
}

// Validate checks the settings; errors name the variable. Whether a
// secret is required is the caller's to say (it knows whether other
// processes may serve the same address).
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("TRACKER_UDP_ADDR=%q: %v", c.Addr, err)
	}
	switch {
	case c.Secret != "" && len(c.Secret) < MinSecretLen:
		return fmt.Errorf("TRACKER_UDP_SECRET must be at least %d characters", MinSecretLen)
	case c.Workers < 1 || c.Workers > 4096:
		return errors.New("TRACKER_UDP_WORKERS must be from 1 to 4096")
	case c.Queue < 1 || c.Queue > 1<<20:
		return errors.New("TRACKER_UDP_QUEUE must be from 1 to 1048576")
	case c.ScrapeMaxHashes < 1 || c.ScrapeMaxHashes > MaxScrapeHashes:
		return fmt.Errorf("TRACKER_UDP_SCRAPE_MAX_HASHES must be from 1 to %d", MaxScrapeHashes)
	}
	return nil
}

// Server serves the tracker protocol over UDP.
type Server struct {
	cfg    Config
	secret []byte
	svc    *tracker.Service
	log    *slog.Logger
	m      *metrics
	pool   sync.Pool
	now    func() time.Time
}

// New returns a server of svc whose connection IDs are keyed by secret.
// Metrics are registered on reg.
func New(cfg Config, secret []byte, svc *tracker.Service, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("udp: the connection ID secret must be at least %d bytes", MinSecretLen)
	}
	m := newMetrics()
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, secret: secret, svc: svc, log: log, m: m, now: time.Now}
	s.pool.New = func() any { return &packet{out: make([]byte, 0, 1024)} }
	return s, nil
}

// Listen opens the sockets synchronously, so that a taken port fails at
// once. A host-less address gives an IPv4 and an IPv6 (IPv6-only) socket
// on the same port; on a host without IPv6 only the IPv4 one (the caller
// logs the addresses it got).
func Listen(addr string) ([]*net.UDPConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("udp listen on %s: %w", addr, err)
	}
	if host != "" {
		ip, err := netip.ParseAddr(host)
		network := "udp"
		if err == nil {
			network = map[bool]string{true: "udp4", false: "udp6"}[ip.Unmap().Is4()]
		}
		c, err := net.ListenPacket(network, addr)
		if err != nil {
			return nil, fmt.Errorf("udp listen on %s: %w", addr, err)
		}
		return []*net.UDPConn{c.(*net.UDPConn)}, nil
	}
	// Port 0 (tests): the IPv6 socket takes the port the IPv4 one got; if
	// that port is taken for IPv6, try again with another.
	for try := 0; ; try++ {
		c4, err := net.ListenPacket("udp4", net.JoinHostPort("0.0.0.0", port))
		if err != nil {
			return nil, fmt.Errorf("udp listen on %s (IPv4): %w", addr, err)
		}
		p := strconv.Itoa(c4.LocalAddr().(*net.UDPAddr).Port)
		c6, err := net.ListenPacket("udp6", net.JoinHostPort("::", p))
		switch {
		case err == nil:
			return []*net.UDPConn{c4.(*net.UDPConn), c6.(*net.UDPConn)}, nil
		case errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL):
			return []*net.UDPConn{c4.(*net.UDPConn)}, nil
		case port == "0" && try < 10:
			c4.Close()
			continue
		}
		c4.Close()
		return nil, fmt.Errorf("udp listen on %s (IPv6): %w", addr, err)
	}
}

// Serve serves on conns until ctx ends, then stops reading, lets the
// requests already read finish through the store and their replies go out,
// and closes conns. It returns when all of that is done.
func (s *Server) Serve(ctx context.Context, conns []*net.UDPConn) error {
	work := make(chan *packet, s.cfg.Queue)
	socks := make([]*socket, len(conns))
	var readers, workers, writers sync.WaitGroup
	errc := make(chan error, len(conns))
	for i, c := range conns {
		sk := &socket{conn: c, out: make(chan *packet, s.cfg.Queue)}
		if c.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
			sk.bc, sk.fam = ipv4.NewPacketConn(c), bittorrent.OnlyIPv4
		} else {
			sk.bc, sk.fam = ipv6.NewPacketConn(c), bittorrent.OnlyIPv6
		}
		socks[i] = sk
		writers.Add(1)
		go func() { defer writers.Done(); s.write(sk) }()
	}
	// Requests already read are answered even while shutting down: the
	// store bounds each call with its own timeout.
	reqCtx := context.WithoutCancel(ctx)
	for range s.cfg.Workers {
		workers.Add(1)
		go func() { defer workers.Done(); s.work(reqCtx, work) }()
	}
	stopping := make(chan struct{})
	for _, sk := range socks {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := s.read(sk, work, stopping); err != nil {
				errc <- err
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	close(stopping)
	for _, sk := range socks {
		sk.conn.SetReadDeadline(time.Now())
	}
	readers.Wait()
	close(work)
	workers.Wait()
	for _, sk := range socks {
		close(sk.out)
	}
	writers.Wait()
	for _, sk := range socks {
		sk.conn.Close()
	}
	return err
}

// Status is what /status shows of UDP.
type Status struct {
	// Requests counts requests by action, then by outcome.
	Requests map[string]map[string]uint64 `json:"requests"`
	// Dropped counts packets that got no reply, by reason.
	Dropped map[string]uint64 `json:"dropped"`
}

// Status returns the counts so far.
func (s *Server) Status() Status { return s.m.status() }

// readBufSize is the largest request read whole; a longer datagram is
// dropped (the read buffer is one byte longer to tell).
const readBufSize = 2048

// batchSize is how many datagrams one recvmmsg or sendmmsg call moves.
const batchSize = 32

// packet is one request and, once handled, its reply.
type packet struct {
	buf  [readBufSize + 1]byte
	n    int
	from netip.AddrPort
	sock *socket
	out  []byte
	ua   net.UDPAddr
	ip   [16]byte
}

// socket is one listening socket with its reply queue.
type socket struct {
	conn *net.UDPConn
	bc   batchConn
	fam  bittorrent.Family
	out  chan *packet
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share: batched
// reads and writes (recvmmsg/sendmmsg on Linux, one datagram elsewhere).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func (s *Server) get() *packet { return s.pool.Get().(*packet) }

func (s *Server) put(p *packet) {
	if cap(p.out) > 64<<10 {
		p.out = make([]byte, 0, 1024)
	}
	p.out, p.sock = p.out[:0], nil
	s.pool.Put(p)
}

// read reads batches from one socket until stopping is closed, answers
// what needs no store, and queues the rest for the workers.
func (s *Server) read(sk *socket, work chan<- *packet, stopping <-chan struct{}) error {
	ids := newConnIDs(s.secret)
	pkts := make([]*packet, batchSize)
	msgs := make([]ipv4.Message, batchSize)
	for i := range pkts {
		pkts[i] = s.get()
		msgs[i].Buffers = [][]byte{pkts[i].buf[:]}
	}
	defer func() {
		for _, p := range pkts {
			s.put(p)
		}
	}()
	for {
		n, err := sk.bc.ReadBatch(msgs, 0)
		if err != nil {
			select {
			case <-stopping:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("udp read: %w", err)
		}
		now := s.now()
		for i := range n {
			p := pkts[i]
			p.n, p.sock = msgs[i].N, sk
			ua, ok := msgs[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			p.from = ua.AddrPort()
			p.from = netip.AddrPortFrom(p.from.Addr().Unmap(), p.from.Port())
			if s.triage(p, ids, now, work) {
				pkts[i] = s.get()
				msgs[i].Buffers[0] = pkts[i].buf[:]
			}
		}
	}
}

// triage decides what a datagram gets; it returns true when it handed p
// on (to the workers or the writer), false when p may be reused.
func (s *Server) triage(p *packet, ids *connIDs, now time.Time, work chan<- *packet) bool {
	if p.n > readBufSize {
		s.m.drop(dropTooLong)
		return false
	}
	b := p.buf[:p.n]
	h, ok := parseHeader(b)
	if !ok {
		s.m.drop(dropShort)
		return false
	}
	if h.action == actionConnect {
		if h.connID != protocolID {
			s.m.drop(dropBadProtocol)
			return false
		}
		p.out = appendConnectReply(p.out[:0], h.txID, ids.issue(p.from.Addr(), now))
		s.m.request(actConnect, outOK)
		return s.reply(p)
	}
	act := actionOf(h.action)
	if !ids.valid(h.connID, p.from.Addr(), now) {
		// Unauthenticated: the reply is cut to the request's length, so a
		// forged source address gains an attacker nothing.
		p.out = appendError(p.out[:0], h.txID, "connection ID expired or invalid; connect again", p.n)
		s.m.request(act, outBadConnID)
		return s.reply(p)
	}
	select {
	case work <- p:
		return true
	default:
		s.m.drop(dropQueueFull)
		return false
	}
}

// reply queues p's reply for its socket's writer.
func (s *Server) reply(p *packet) bool {
	select {
	case p.sock.out <- p:
		return true
	default:
		s.m.drop(dropSendQueueFull)
		return false
	}
}

// work handles authenticated requests until work is closed.
func (s *Server) work(ctx context.Context, work <-chan *packet) {
	for p := range work {
		s.handle(ctx, p)
		if !s.reply(p) {
			s.put(p)
		}
	}
}

// handle answers one authenticated request into p.out.
func (s *Server) handle(ctx context.Context, p *packet) {
	b := p.buf[:p.n]
	h, _ := parseHeader(b)
	start := time.Now()
	var err error
	act := actionOf(h.action)
	switch h.action {
	case actionAnnounce:
		err = s.announce(ctx, p, h, b)
	case actionScrape:
		err = s.scrape(ctx, p, h, b)
	default:
		err = bittorrent.ClientError("unknown action " + strconv.FormatUint(uint64(h.action), 10))
	}
	outcome := tracker.Outcome(err)
	s.m.request(act, outcomeOf(outcome))
	if act != actUnknown {
		s.m.observe(act, time.Since(start))
	}
	if err != nil {
		p.out = appendError(p.out[:0], h.txID, tracker.ClientMessage(err), 1<<16)
	}
}

func (s *Server) announce(ctx context.Context, p *packet, h header, b []byte) error {
	ap, err := parseAnnounce(b)
	if err != nil {
		return err
	}
	req := &ap.req
	addr := p.from.Addr()
	if s.svc.Config().AllowIPParam && ap.ip != [4]byte{} && p.sock.fam == bittorrent.OnlyIPv4 {
		addr = netip.AddrFrom4(ap.ip)
	}
	if !addr.IsValid() || addr.IsUnspecified() {
		return bittorrent.ClientError("no usable client address")
	}
	req.Peer.Addr = netip.AddrPortFrom(addr, req.Peer.Addr.Port())
	req.Family = p.sock.fam
	ans, err := s.svc.Announce(ctx, req)
	if err != nil {
		return err
	}
	p.out = appendAnnounceReply(p.out[:0], h.txID, int64(ans.Interval/time.Second), ans.Leechers, ans.Seeders, ans.Peers, p.sock.fam)
	return nil
}

func (s *Server) scrape(ctx context.Context, p *packet, h header, b []byte) error {
	hashes, err := parseScrape(b, s.cfg.ScrapeMaxHashes)
	if err != nil {
		return err
	}
	res, err := s.svc.Scrape(ctx, hashes)
	if err != nil {
		return err
	}
	p.out = appendScrapeReply(p.out[:0], h.txID, res)
	return nil
}

// write sends the replies queued for one socket, in batches, until its
// queue is closed.
func (s *Server) write(sk *socket) {
	msgs := make([]ipv4.Message, batchSize)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	pending := make([]*packet, 0, batchSize)
	for p := range sk.out {
		pending = append(pending[:0], p)
	fill:
		for len(pending) < batchSize {
			select {
			case q, ok := <-sk.out:
				if !ok {
					break fill
				}
				pending = append(pending, q)
			default:
				break fill
			}
		}
		for i, q := range pending {
			msgs[i].Buffers[0] = q.out
			msgs[i].Addr = q.udpAddr()
		}
		for sent := 0; sent < len(pending); {
			n, err := sk.bc.WriteBatch(msgs[sent:len(pending)], 0)
			if err != nil {
				// The datagram at the head failed (a route, a full
				// buffer): count it and go on with the rest.
				s.m.drop(dropSendError)
				n = 1
			}
			sent += n
		}
		for i, q := range pending {
			msgs[i].Addr = nil
			s.put(q)
		}
	}
}

// udpAddr returns the sender's address as a *net.UDPAddr without
// allocating (the packet owns it).
func (p *packet) udpAddr() *net.UDPAddr {
	a := p.from.Addr()
	if a.Is4() {
		v := a.As4()
		p.ua.IP = append(p.ip[:0], v[:]...)
	} else {
		v := a.As16()
		p.ua.IP = append(p.ip[:0], v[:]...)
	}
	p.ua.Port = int(p.from.Port())
	p.ua.Zone = ""
	return &p.ua
}
