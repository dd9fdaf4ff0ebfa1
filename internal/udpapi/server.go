// Package udpapi is the tracker's UDP front end: BEP 15 connect, announce,
// scrape and error, with BEP 41 URL data, on an IPv4 and an IPv6 socket.
// Like the HTTP front end it parses, asks the tracker service
// (internal/tracker) and encodes; it owns no state beyond its buffers.
//
// Each socket is served by a fixed number of workers (TRACKER_UDP_WORKERS),
// with no goroutine per packet. A worker takes a batch of datagrams in one
// system call (recvmmsg), answers it, and sends the replies in one
// (sendmmsg):
//
//	too short, too long, not a request: dropped and counted, no reply
//	connect: answered from the MAC alone
//	bad connection ID: a short error reply, never longer than the request
//	announces and scrapes: all of the batch's as one item of the store's
//	           pipeline, which sends the batches of every worker together
//	           (the announces in one script call, the scrapes in one
//	           pipeline beside it)
//
// Under load batches grow, so system calls and round trips per announce
// fall; under light load a batch is one datagram and nothing waits for a
// timer. The queue in front of the workers is the socket's receive buffer
// (TRACKER_UDP_READ_BUFFER): bounded by the kernel, which drops what does
// not fit, and every such drop is counted (SO_RXQ_OVFL). A worker owns its
// packet buffers and reuses them.
package udpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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
	// Workers is how many goroutines serve each socket, each a batch of
	// datagrams at a time (their announces share the store's round trips).
	Workers int `env:"UDP_WORKERS" envDefault:"4"`
	// ReadBuffer is the socket receive buffer in bytes: the queue of
	// datagrams waiting for a worker. The kernel drops what does not fit
	// (counted); it may cap the size (net.core.rmem_max), and the size in
	// force is logged.
	ReadBuffer int `env:"UDP_READ_BUFFER" envDefault:"4194304"`
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
	case c.Workers < 1 || c.Workers > 256:
		return errors.New("TRACKER_UDP_WORKERS must be from 1 to 256")
	case c.ReadBuffer < 4096 || c.ReadBuffer > 1<<30:
		return errors.New("TRACKER_UDP_READ_BUFFER must be from 4096 to 1073741824 bytes")
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
	return &Server{cfg: cfg, secret: secret, svc: svc, log: log, m: m, now: time.Now}, nil
}

// Listen opens the sockets synchronously, so that a taken port fails at
// once. A host-less address gives an IPv4 and an IPv6 (IPv6-only) socket
// on the same port; on a host without IPv6 only the IPv4 one (the caller
// logs the addresses it got).
func Listen(addr string) ([]*net.UDPConn, error) { return ListenWith(&net.ListenConfig{}, addr) }

// ListenWith is Listen with lc's socket options (SO_REUSEPORT for the
// replicas of a node: package reuseport).
func ListenWith(lc *net.ListenConfig, addr string) ([]*net.UDPConn, error) {
	bg := context.Background()
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
		c, err := lc.ListenPacket(bg, network, addr)
		if err != nil {
			return nil, fmt.Errorf("udp listen on %s: %w", addr, err)
		}
		return []*net.UDPConn{c.(*net.UDPConn)}, nil
	}
	// Port 0 (tests): the IPv6 socket takes the port the IPv4 one got; if
	// that port is taken for IPv6, try again with another.
	for try := 0; ; try++ {
		c4, err := lc.ListenPacket(bg, "udp4", net.JoinHostPort("0.0.0.0", port))
		if err != nil {
			return nil, fmt.Errorf("udp listen on %s (IPv4): %w", addr, err)
		}
		p := strconv.Itoa(c4.LocalAddr().(*net.UDPAddr).Port)
		c6, err := lc.ListenPacket(bg, "udp6", net.JoinHostPort("::", p))
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

// Serve serves on conns until ctx ends, then stops reading, answers the
// batches already read (their store calls bounded by the store's own
// timeout), and closes conns. It returns when all of that is done, or at
// the first socket error.
func (s *Server) Serve(ctx context.Context, conns []*net.UDPConn) error {
	socks := make([]*socket, len(conns))
	for i, c := range conns {
		sk := &socket{conn: c}
		if c.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
			sk.bc, sk.fam = ipv4.NewPacketConn(c), bittorrent.OnlyIPv4
		} else {
			sk.bc, sk.fam = ipv6.NewPacketConn(c), bittorrent.OnlyIPv6
		}
		if err := c.SetReadBuffer(s.cfg.ReadBuffer); err != nil {
			s.log.Warn("udp: read buffer not set", "addr", c.LocalAddr().String(), "err", err)
		}
		if err := countDrops(c); err != nil {
			s.log.Warn("udp: kernel drops will not be counted", "addr", c.LocalAddr().String(), "err", err)
		}
		s.log.Info("udp socket", "addr", c.LocalAddr().String(), "read_buffer", readBufferOf(c), "workers", s.cfg.Workers)
		socks[i] = sk
	}
	reqCtx := context.WithoutCancel(ctx)
	stopping := make(chan struct{})
	errc := make(chan error, len(socks)*s.cfg.Workers)
	var wg sync.WaitGroup
	for _, sk := range socks {
		for range s.cfg.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.work(reqCtx, sk, stopping); err != nil {
					errc <- err
				}
			}()
		}
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
	wg.Wait()
	for _, sk := range socks {
		sk.conn.Close()
	}
	return err
}

// Status is what /udp/status shows.
type Status struct {
	// Requests counts requests by action, then by outcome.
	Requests map[string]map[string]uint64 `json:"requests"`
	// Dropped counts datagrams that got no reply, by reason.
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
	oob  [64]byte
	n    int
	from netip.AddrPort
	out  []byte
	ua   net.UDPAddr
	ip   [16]byte
	// h is the request's header, read once by triage.
	h header
	// req is the parsed announce, when the packet is one.
	req bittorrent.AnnounceRequest
}

// socket is one listening socket.
type socket struct {
	conn *net.UDPConn
	bc   batchConn
	fam  bittorrent.Family
	// kernelDrops is the highest count of drops the kernel reported for
	// this socket (SO_RXQ_OVFL is cumulative).
	kernelDrops atomic.Uint64
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share: batched
// reads and writes (recvmmsg/sendmmsg on Linux, one datagram elsewhere).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// worker is one goroutine's state: its packets, messages and batch.
type worker struct {
	ids   *connIDs
	pkts  [batchSize]*packet
	rmsgs [batchSize]ipv4.Message
	wmsgs [batchSize]ipv4.Message
	anns  []*packet
	scrs  []*packet
	batch tracker.Batch
}

// work reads, answers and writes batches from one socket until stopping
// is closed.
func (s *Server) work(ctx context.Context, sk *socket, stopping <-chan struct{}) error {
	w := &worker{ids: newConnIDs(s.secret)}
	for i := range w.pkts {
		p := &packet{out: make([]byte, 0, 1024)}
		w.pkts[i] = p
		w.rmsgs[i].Buffers = [][]byte{p.buf[:]}
		w.rmsgs[i].OOB = p.oob[:]
		w.wmsgs[i].Buffers = make([][]byte, 1)
	}
	for {
		n, err := sk.bc.ReadBatch(w.rmsgs[:], 0)
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
		s.answer(ctx, sk, w, n)
		s.send(sk, w, n)
	}
}

// answer fills the reply (p.out) of each of the first n packets of w, or
// leaves it empty for no reply.
func (s *Server) answer(ctx context.Context, sk *socket, w *worker, n int) {
	now := s.now()
	w.anns, w.scrs = w.anns[:0], w.scrs[:0]
	w.batch.Reset()
	for i := range n {
		p, m := w.pkts[i], &w.rmsgs[i]
		p.n, p.out = m.N, p.out[:0]
		if m.NN > 0 {
			s.kernelDropped(sk, m.OOB[:m.NN])
		}
		ua, ok := m.Addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		p.from = ua.AddrPort()
		p.from = netip.AddrPortFrom(p.from.Addr().Unmap(), p.from.Port())
		if s.triage(p, w.ids, now) {
			s.prepare(sk, w, p)
		}
	}
	if len(w.anns) == 0 && len(w.scrs) == 0 {
		return
	}
	start := time.Now()
	s.svc.AnswerBatch(ctx, &w.batch)
	took := time.Since(start)
	for j, p := range w.scrs {
		err := w.batch.ScrapeErrs[j]
		res := w.batch.ScrapeAnswers[j]
		// A BEP 15 reply has an entry for every hash, in order, with
		// nothing to say that one is unknown: a scrape touching a swarm
		// the store cannot read now is refused whole, as HTTP refuses one
		// that reads none.
		if err == nil && slices.ContainsFunc(res, func(s bittorrent.Scrape) bool { return s.Unavailable }) {
			err = tracker.ErrUnavailable
		}
		s.m.request(actScrape, outcomeOf(tracker.Outcome(err)))
		s.m.observe(actScrape, took)
		if err != nil {
			p.out = appendError(p.out[:0], p.h.txID, tracker.ClientMessage(err), 1<<16)
			continue
		}
		p.out = appendScrapeReply(p.out[:0], p.h.txID, res)
	}
	for j, p := range w.anns {
		err := w.batch.Errs[j]
		s.m.request(actAnnounce, outcomeOf(tracker.Outcome(err)))
		s.m.observe(actAnnounce, took)
		if err != nil {
			p.out = appendError(p.out[:0], p.h.txID, tracker.ClientMessage(err), 1<<16)
			continue
		}
		ans := &w.batch.Answers[j]
		p.out = appendAnnounceReply(p.out[:0], p.h.txID, int64(ans.Interval/time.Second), ans.Leechers, ans.Seeders, ans.Peers, sk.fam)
	}
}

// triage answers what needs no store (connect, bad connection IDs, junk)
// and reports whether p is an authenticated request for the store.
func (s *Server) triage(p *packet, ids *connIDs, now time.Time) bool {
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
	p.h = h
	if h.action == actionConnect {
		if h.connID != protocolID {
			s.m.drop(dropBadProtocol)
			return false
		}
		p.out = appendConnectReply(p.out[:0], h.txID, ids.issue(p.from.Addr(), now))
		s.m.request(actConnect, outOK)
		return false
	}
	if !ids.valid(h.connID, p.from.Addr(), now) {
		// Unauthenticated: the reply is cut to the request's length, so a
		// forged source address gains an attacker nothing.
		p.out = appendError(p.out[:0], h.txID, "connection ID expired or invalid; connect again", p.n)
		s.m.request(actionOf(h.action), outBadConnID)
		return false
	}
	return true
}

// prepare handles an authenticated request: an announce or a scrape
// joins the batch, anything else is answered at once.
func (s *Server) prepare(sk *socket, w *worker, p *packet) {
	b, h := p.buf[:p.n], p.h
	var err error
	act := actionOf(h.action)
	switch h.action {
	case actionAnnounce:
		if err = s.parseAnnounce(sk, p, b); err == nil {
			w.anns = append(w.anns, p)
			w.batch.Add(&p.req)
			return
		}
	case actionScrape:
		var hashes []bittorrent.InfoHash
		if hashes, err = parseScrape(b, s.cfg.ScrapeMaxHashes); err == nil {
			w.scrs = append(w.scrs, p)
			w.batch.AddScrape(p.from.Addr(), hashes)
			return
		}
	default:
		err = bittorrent.ClientError("unknown action " + strconv.FormatUint(uint64(h.action), 10))
	}
	s.m.request(act, outcomeOf(tracker.Outcome(err)))
	if err != nil {
		p.out = appendError(p.out[:0], h.txID, tracker.ClientMessage(err), 1<<16)
	}
}

// parseAnnounce reads an announce into p.req, with the sender's address.
func (s *Server) parseAnnounce(sk *socket, p *packet, b []byte) error {
	ap, err := parseAnnounce(b)
	if err != nil {
		return err
	}
	addr := p.from.Addr()
	if s.svc.Config().AllowIPParam && ap.ip != [4]byte{} && sk.fam == bittorrent.OnlyIPv4 {
		addr = netip.AddrFrom4(ap.ip)
		if !bittorrent.Unicast(addr) {
			return bittorrent.ClientError("ip must be a unicast address")
		}
	}
	if !bittorrent.Unicast(addr) {
		return bittorrent.ClientError("no usable client address")
	}
	p.req = ap.req
	p.req.Peer.Addr = netip.AddrPortFrom(addr, ap.req.Peer.Addr.Port())
	p.req.Family = sk.fam
	p.req.Source = p.from.Addr()
	return nil
}

// send writes the replies of the first n packets of w in one system call
// (more only when the kernel takes part of the batch).
func (s *Server) send(sk *socket, w *worker, n int) {
	k := 0
	for i := range n {
		p := w.pkts[i]
		if len(p.out) == 0 {
			continue
		}
		w.wmsgs[k].Buffers[0] = p.out
		w.wmsgs[k].Addr = p.udpAddr()
		k++
	}
	for sent := 0; sent < k; {
		m, err := sk.bc.WriteBatch(w.wmsgs[sent:k], 0)
		if err != nil {
			// The datagram at the head failed (a route, a full buffer):
			// count it and go on with the rest.
			s.m.drop(dropSendError)
			m = 1
		}
		sent += m
	}
	for i := range k {
		w.wmsgs[i].Addr = nil
	}
}

// kernelDropped reads the kernel's cumulative drop count of the socket
// from a datagram's control message and counts what is new.
func (s *Server) kernelDropped(sk *socket, oob []byte) {
	total, ok := dropCount(oob)
	if !ok {
		return
	}
	for {
		seen := sk.kernelDrops.Load()
		if total <= seen {
			return
		}
		if sk.kernelDrops.CompareAndSwap(seen, total) {
			s.m.dropN(dropReceiveBuffer, total-seen)
			return
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
