package wsapi

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

// conn is one client's socket. No goroutine waits on an idle one: the
// poller (poll_linux.go) hands a readable socket to a new goroutine,
// serve, which reads and handles its messages while any are buffered, then
// ends (the socket stays in the poller); so an idle connection holds this
// struct, its socket and its index entries, and nothing else (no stack, no
// read buffer, no timer). Where there is no poller (another system, or a
// socket without a descriptor), serve reads until the socket closes.
//
// State, under mu: reading (a serve goroutine owns the socket's reads and
// swarms), again (the poller said readable while it read: it reads again
// before it ends) and dead (closed; the goroutine that ends it cleans up:
// serve if reading, else kill). swarms is used by one goroutine at a time:
// serve, then the cleanup. Writes come from serve, the delivery workers
// and the pinger, serialised by wmu.
type conn struct {
	srv      *Server
	nc       net.Conn
	addr     netip.Addr
	key      netip.Addr
	wmu      sync.Mutex
	lastMsg  atomic.Int64 // unix ms of the last message read
	lastSeen atomic.Int64 // unix ms of the last frame read (pongs too)

	mu        sync.Mutex
	reading   bool
	again     bool
	dead      bool
	reason    string // why it closed, for the metric (the first one set)
	armedOnce bool   // in the poller's set
	pollID    int32  // 0: not polled (serve reads until the end)
	rc        syscall.RawConn

	pending []byte   // read with the handshake, before the first frame
	swarms  []member // the peers announced on this socket

	// Input between two bursts, used by the one goroutine reading: the
	// bytes of an incomplete frame (nil: none) and the length of that
	// frame if known; a fragmented message's fragments so far.
	in      []byte
	need    int
	msg     []byte
	started bool

	// Output (out.go), under omu: frames not written yet (nil: none),
	// whether the socket is in its writer's list, closed for output.
	omu       sync.Mutex
	out       *[]byte
	queued    bool
	outClosed bool
	slot      uint32 // picks the writer
}

// readers is how many goroutines read readable sockets and handle their
// messages. A reader never waits on a socket (it reads what is there),
// only on the store, so a slow or silent client cannot hold one.
const readers = 128

// readBufferSize is the buffer lent to a reader: one typical announce
// with its offers fits.
const readBufferSize = 4096

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, readBufferSize); return &b }}

// serve reads what the socket has (a polled socket without waiting: the
// poller said it is readable), handles every complete message, keeps the
// bytes of an incomplete frame for next time, and arms the socket again.
// A socket with no poller is read until it closes.
func (c *conn) serve() {
	for {
		var bp *[]byte
		data := c.in
		if data == nil {
			bp = getBuf()
			data = (*bp)[:0]
		} else if cap(data)-len(data) < 512 {
			data = slices.Grow(data, readBufferSize)
		}
		spare := cap(data) - len(data)
		n, rerr := c.fill(data[len(data):cap(data)])
		data = data[:len(data)+n]
		used, err := c.frames(data)
		if rest := data[used:]; err == nil && len(rest) > 0 {
			if bp != nil || used > 0 {
				// Keep an incomplete frame (bounded by the largest
				// frame allowed) in a buffer of its own, grown as its
				// bytes arrive, not as its header claims.
				c.in = append(make([]byte, 0, min(max(c.need, len(rest)+512), len(rest)+readBufferSize)), rest...)
			} else {
				c.in = data
			}
		} else {
			c.in = nil
		}
		if bp != nil {
			*bp = data[:0]
			putBuf(bp)
		}
		switch {
		case err != nil:
			c.end(err)
			return
		case rerr != nil && rerr != errWouldBlock:
			c.end(rerr)
			return
		case c.pollID == 0, n == spare:
			continue // no poller; or more may be waiting
		}
		switch more, ok := c.idle(); {
		case !ok:
			c.end(nil) // killed meanwhile
		case more:
			continue
		}
		return
	}
}

// errWouldBlock: nothing to read now.
var errWouldBlock = errors.New("would block")

// fill reads what the socket has into p: a polled socket without waiting
// (errWouldBlock: nothing), another one waiting until the ping timeout.
func (c *conn) fill(p []byte) (int, error) {
	if c.pending != nil {
		n := copy(p, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	if c.pollID == 0 {
		c.nc.SetReadDeadline(time.Now().Add(2 * c.srv.cfg.PingEvery))
		return c.nc.Read(p)
	}
	op := readOps.Get().(*readOp)
	op.p = p
	cerr := c.rc.Read(op.fn)
	n, err := op.n, op.err
	op.p, op.err = nil, nil
	readOps.Put(op)
	if cerr != nil {
		return 0, cerr
	}
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOp is a raw read's function and its results, pooled: a closure
// made at each read escapes (RawConn.Read keeps no promise about it), and
// took three allocations a read, about half of those left a message.
type readOp struct {
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

var readOps = sync.Pool{New: func() any {
	op := new(readOp)
	op.fn = func(fd uintptr) bool {
		op.n, op.err = syscall.Read(int(fd), op.p)
		return true
	}
	return op
}}

// frames handles the complete frames at the start of data and returns how
// many bytes they took. Control frames are answered; data frames are
// joined into messages (fragments kept in c.msg), each handled when
// complete. c.need is the length of the incomplete frame that follows, if
// its header is there.
func (c *conn) frames(data []byte) (int, error) {
	maxMsg := int64(c.srv.cfg.MaxMessageBytes)
	off := 0
	c.need = 0
	// The clock is read once for the frames of one read, not twice a
	// message (about 0.5 % of the process's CPU under the side-by-side
	// load); a message handled later in the burst is stamped as read
	// when the burst was (ms, for the idle and ping timeouts).
	var now int64
	for {
		h, hlen, err := parseHeader(data[off:])
		if err != nil || hlen == 0 {
			return off, err
		}
		if h.op < opClose && int64(len(c.msg))+h.length > maxMsg {
			return off, &closeError{closeTooBig, "message too big", "too_big"}
		}
		total := hlen + int(h.length)
		if len(data)-off < total {
			c.need = total
			return off, nil
		}
		p := data[off+hlen : off+total]
		off += total
		unmask(p, h.mask, 0)
		if now == 0 {
			now = time.Now().UnixMilli()
		}
		c.lastSeen.Store(now)
		switch h.op {
		case opPing:
			c.send(opPong, p)
			continue
		case opPong:
			continue
		case opClose:
			code := closeNoStatus
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			if len(p) == 1 || (len(p) >= 2 && !validCloseCode(code)) {
				return off, protocolError("invalid close frame")
			}
			if code == closeNoStatus {
				code = closeNormal
			}
			c.send(opClose, closePayload(code, ""))
			return off, errPeerClosed
		case opText, opBinary:
			if c.started {
				return off, protocolError("a new message before the last one ended")
			}
			if !h.fin {
				c.started = true
				c.msg = append([]byte(nil), p...)
				continue
			}
		case opContinuation:
			if !c.started {
				return off, protocolError("a continuation frame with no message")
			}
			c.msg = append(c.msg, p...)
			if !h.fin {
				continue
			}
			p, c.msg, c.started = c.msg, nil, false
		}
		c.lastMsg.Store(now)
		if !c.handle(p) {
			return off, errHandled
		}
	}
}

// errHandled: a message closed the socket (its reason is set).
var errHandled = errors.New("closed by the handler")

// idle ends a burst of reads: the socket waits in the poller (added to
// it the first time). ok false: it was killed meanwhile; more: the poller
// said readable while it was read (bytes that came after the last read),
// so the caller reads again instead.
func (c *conn) idle() (more, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return false, false
	}
	if err := c.srv.poll.arm(c); err != nil {
		c.setReason("error")
		return false, false
	}
	if c.again {
		c.again = false
		return true, true
	}
	c.reading = false
	return false, true
}

// wake is the poller's: the socket is readable. If a serve goroutine is
// reading it, that one reads again before it ends (the poller reports
// new bytes once, edge-triggered, poll_linux.go).
func (c *conn) wake() {
	c.mu.Lock()
	if c.dead || c.reading {
		c.again = c.reading
		c.mu.Unlock()
		return
	}
	c.reading = true
	c.mu.Unlock()
	c.srv.readable <- c
}

// end closes the socket from its serve goroutine (err: why reading ended,
// nil: a reason is set) and cleans up.
func (c *conn) end(err error) {
	c.mu.Lock()
	if err == errHandled {
		err = nil
	}
	if err != nil {
		var ce *closeError
		if errors.As(err, &ce) {
			if ce != errPeerClosed {
				c.send(opClose, closePayload(ce.code, ce.reason))
			}
			c.setReason(ce.label)
		} else {
			c.setReason(closeReason(err))
		}
	}
	c.dead, c.reading = true, false
	c.mu.Unlock()
	c.cleanup()
}

// kill closes the socket from outside (pinger, shutdown, a failed write):
// a serve goroutine that reads it then ends and cleans up; if none does,
// kill starts the cleanup.
func (c *conn) kill(reason string) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.setReason(reason)
	reading := c.reading
	c.mu.Unlock()
	if reading {
		c.nc.Close()
		return
	}
	// On a goroutine of its own: the pinger and the shutdown kill many
	// sockets in a row, and each one's peers leave the store (a round
	// trip, up to the store's timeout when Redis is down).
	go c.cleanup()
}

// setReason records why the socket closes, unless a reason is set. It
// runs with c.mu held.
func (c *conn) setReason(r string) {
	if c.reason == "" {
		c.reason = r
	}
}

// cleanup runs once, when the socket is dead and nothing reads it: out of
// the poller, closed, its peers out of their swarms, out of the server.
func (c *conn) cleanup() {
	s := c.srv
	s.poll.remove(c)
	c.closeOutput()
	c.nc.Close()
	s.m.closed.WithLabelValues(c.reason).Inc()
	c.leave()
	s.remove(c)
}

// closeReason names why reading ended, for the metric.
func closeReason(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return "ping_timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "client"
	}
	return "error"
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// handle acts on one message; false closes the socket.
func (c *conn) handle(data []byte) bool {
	s := c.srv
	p := getParsed()
	defer p.put()
	req, err := p.parse(data, s.cfg.MaxScrapeHashes)
	if err != nil {
		s.m.messages.WithLabelValues("invalid").Inc()
		c.write(failureReply(nil, "", nil, err.Error()))
		c.closeWith(closePolicyViolation, err.Error(), "malformed")
		return false
	}
	start := time.Now()
	kind := "announce"
	switch {
	case req.scrape:
		kind = "scrape"
		c.scrape(req)
	case req.answer != nil:
		kind = "answer"
		c.answer(req)
	default:
		c.announce(req)
	}
	if kind == "announce" {
		s.m.announces.Inc()
		s.m.announceTime.Observe(time.Since(start).Seconds())
	} else {
		s.m.messages.WithLabelValues(kind).Inc()
		s.m.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	}
	return true
}

func (c *conn) announce(req *request) {
	s := c.srv
	ih := req.infoHash
	if err := s.admit.Allow(c.addr, ih); err != nil {
		c.refuse("announce", &ih, err)
		return
	}
	m := member{ih, req.peerID}
	a := bittorrent.RTCAnnounce{InfoHash: ih, PeerID: req.peerID, Op: bittorrent.RTCLeecher,
		Completed: req.event == bittorrent.Completed, OfferIDs: req.offerIDs, Payloads: req.offers}
	if req.seeder {
		a.Op = bittorrent.RTCSeeder
	}
	if req.dropped > 0 {
		s.m.dropped.WithLabelValues("offers_over_cap").Add(float64(req.dropped))
	}
	if req.event == bittorrent.Stopped {
		a.Op = bittorrent.RTCStop
		if i := slices.Index(c.swarms, m); i >= 0 {
			c.swarms = slices.Delete(c.swarms, i, i+1)
			s.unregister(m, c)
		}
	} else if s.soft != nil && req.event == bittorrent.None && slices.Contains(c.swarms, m) && c.refresh(req, m) {
		return
	} else if !slices.Contains(c.swarms, m) {
		if len(c.swarms) >= maxSwarmsPerConn {
			s.m.dropped.WithLabelValues("swarms_per_conn").Inc()
			c.write(failureReply(nil, "announce", &ih, "too many torrents on one connection"))
			return
		}
		// Indexed before the store knows it: an offer for the peer may
		// arrive as soon as the script has run.
		c.swarms = append(c.swarms, m)
		s.register(m, c)
	} else {
		s.register(m, c) // another socket of this process may have taken it
	}
	res, err := s.announceBatched(&a)
	if err != nil {
		c.storeFailed("announce", &ih, err)
		return
	}
	if s.soft != nil && a.Op != bittorrent.RTCStop && s.lookup(m) == c {
		s.soft.joined(m, c, req.seeder)
	}
	s.m.offers.WithLabelValues("local").Add(float64(res.Sent - res.Remote))
	s.m.offers.WithLabelValues("remote").Add(float64(res.Remote))
	for _, lo := range res.Local {
		s.deliver(&bittorrent.Signal{Kind: bittorrent.SignalOffer, To: lo.To, InfoHash: ih, From: req.peerID,
			OfferID: req.offerIDs[lo.Offer], Payload: req.offers[lo.Offer]}, true)
	}
	if unsent := len(req.offers) - res.Sent; unsent > 0 {
		s.m.dropped.WithLabelValues("no_peer").Add(float64(unsent))
	}
	var reply [replySize]byte
	c.write(announceReply(reply[:0], ih, int(s.cfg.ClientInterval/time.Second), res.Seeders, res.Leechers))
}

// answer carries an answer to the peer whose offer it answers. The
// answering peer must have announced in the swarm on this socket, and
// the peer it answers must be a live peer of the same swarm: a peer's
// signals reach only its own swarm.
func (c *conn) answer(req *request) {
	s := c.srv
	ih := req.infoHash
	if err := s.admit.Allow(c.addr, ih); err != nil {
		c.refuse("announce", &ih, err)
		return
	}
	if !slices.Contains(c.swarms, member{ih, req.peerID}) {
		s.m.dropped.WithLabelValues("not_in_swarm").Inc()
		c.write(failureReply(nil, "announce", &ih, "answer from a peer that did not announce on this connection"))
		return
	}
	sig := bittorrent.Signal{Kind: bittorrent.SignalAnswer, To: req.toPeer, InfoHash: ih, From: req.peerID, OfferID: req.offerID, Payload: req.answer}
	if to := (member{ih, req.toPeer}); s.soft != nil && s.soft.holds(to, s.lookup(to)) {
		// The peer answered is on a socket of this process, in this
		// swarm, and this process wrote it there lately: no need to ask
		// the store.
		s.m.answers.WithLabelValues("local").Inc()
		s.deliver(&sig, true)
		return
	}
	sent, remote, err := s.store.Signal(c.srv.base, &sig)
	if err != nil {
		c.storeFailed("signal", &ih, err)
		return
	}
	switch {
	case !sent:
		s.m.dropped.WithLabelValues("no_peer").Inc()
	case remote:
		s.m.answers.WithLabelValues("remote").Inc()
	default:
		s.m.answers.WithLabelValues("local").Inc()
		s.deliver(&sig, true)
	}
}

func (c *conn) scrape(req *request) {
	s := c.srv
	if err := s.admit.Allow(c.addr, req.hashes...); err != nil {
		c.refuse("scrape", nil, err)
		return
	}
	res, err := s.store.Scrape(c.srv.base, req.hashes)
	if err != nil {
		c.storeFailed("scrape", nil, err)
		return
	}
	c.write(scrapeReply(nil, res, int(s.cfg.ClientInterval/time.Second)))
}

// refuse answers a message the node's rules refused; the socket stays.
func (c *conn) refuse(action string, ih *bittorrent.InfoHash, err error) {
	c.write(failureReply(nil, action, ih, tracker.ClientMessage(err)))
}

// storeFailed answers a message the store could not carry out: the client
// sees the generic reason, the log a sampled line.
func (c *conn) storeFailed(op string, ih *bittorrent.InfoHash, err error) {
	s := c.srv
	s.m.storeErrors.WithLabelValues(op).Inc()
	s.errLog.Log(slog.LevelError, "websocket "+op+" failed", "err", err)
	action := "announce"
	if op == "scrape" {
		action = "scrape"
	}
	c.write(failureReply(nil, action, ih, tracker.Unavailable))
}

// replySize holds an announce's reply (about 120 bytes, its info hash of
// up to 40), built on the stack: send copies it into the output, and a
// reply grown from nil took about two allocations.
const replySize = 192

// write queues one text message (out.go). It reports success.
func (c *conn) write(msg []byte) bool { return c.send(opText, msg) }

// closeWith sends a close frame; label is the metric's reason for the
// close, unless one is set.
func (c *conn) closeWith(code int, reason, label string) {
	c.mu.Lock()
	c.setReason(label)
	c.mu.Unlock()
	c.send(opClose, closePayload(code, reason))
}

// leave removes the socket's peers from this process's index and from
// their swarms, in one round trip.
func (c *conn) leave() {
	if len(c.swarms) == 0 {
		return
	}
	s := c.srv
	ihs := make([]bittorrent.InfoHash, len(c.swarms))
	peers := make([]bittorrent.PeerID, len(c.swarms))
	for i, m := range c.swarms {
		s.unregister(m, c)
		ihs[i], peers[i] = m.ih, m.peer
	}
	c.swarms = nil
	if err := s.store.Leave(c.srv.base, ihs, peers); err != nil {
		s.m.storeErrors.WithLabelValues("leave").Inc()
		s.errLog.Log(slog.LevelError, "websocket leave failed; the peers expire by time", "err", err)
	}
}
