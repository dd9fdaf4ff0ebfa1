package wsapi

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

// conn is one client's socket. Its read loop (serve) is the only reader.
// swarms is used by one goroutine at a time: the handler of the message
// in hand, then, after the last one, the read loop (leave); the read loop
// waits for each message's verdict on done before it reads the next, and
// that channel orders them. Writes come from handlers and delivery
// workers, serialised by wmu (gorilla allows one writer at a time; pings
// and close frames use WriteControl, which may run concurrently).
type conn struct {
	srv     *Server
	ws      *websocket.Conn
	addr    netip.Addr
	key     netip.Addr
	wmu     sync.Mutex
	lastMsg atomic.Int64 // unix seconds of the last message read
	done    chan bool    // a worker's verdict on the message handed to it
	swarms  []member     // the peers announced on this socket
}

// serve reads messages until the socket closes, then removes the socket's
// peers from its swarms at once.
func (c *conn) serve() {
	s := c.srv
	defer s.remove(c)
	defer c.leave()
	defer c.ws.Close()
	c.ws.SetReadLimit(int64(s.cfg.MaxMessageBytes))
	wait := 2 * s.cfg.PingEvery
	c.ws.SetReadDeadline(time.Now().Add(wait))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(wait)) })
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			s.m.closed.WithLabelValues(closeReason(err)).Inc()
			return
		}
		c.ws.SetReadDeadline(time.Now().Add(wait))
		c.lastMsg.Store(time.Now().Unix())
		// A worker handles the message (parse, store round trip,
		// reply) while this goroutine waits: its stack stays as small
		// as reading frames needs, and an idle connection keeps no
		// more (a deep call here would grow it for good, or until a
		// GC shrinks it).
		s.work <- job{c, data}
		if !<-c.done {
			return
		}
	}
}

// closeReason names why a read loop ended, for the metric.
func closeReason(err error) string {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return "client"
	case errors.Is(err, websocket.ErrReadLimit):
		return "too_big"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "ping_timeout"
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
	req, err := parseMessage(data, s.cfg.MaxScrapeHashes)
	if err != nil {
		s.m.messages.WithLabelValues("invalid").Inc()
		s.m.closed.WithLabelValues("malformed").Inc()
		c.write(failureReply(nil, "", nil, err.Error()))
		c.closeWith(websocket.ClosePolicyViolation, err.Error())
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
	s.m.messages.WithLabelValues(kind).Inc()
	s.m.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
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
	res, err := s.store.Announce(c.srv.base, &a)
	if err != nil {
		c.storeFailed("announce", &ih, err)
		return
	}
	s.m.offers.WithLabelValues("local").Add(float64(res.Sent - res.Remote))
	s.m.offers.WithLabelValues("remote").Add(float64(res.Remote))
	for _, lo := range res.Local {
		(*handler)(s).Deliver(bittorrent.Signal{Kind: bittorrent.SignalOffer, To: lo.To, InfoHash: ih, From: req.peerID,
			OfferID: req.offerIDs[lo.Offer], Payload: req.offers[lo.Offer]})
	}
	if unsent := len(req.offers) - res.Sent; unsent > 0 {
		s.m.dropped.WithLabelValues("no_peer").Add(float64(unsent))
	}
	c.write(announceReply(nil, ih, int(s.cfg.ClientInterval/time.Second), res.Seeders, res.Leechers))
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
		(*handler)(s).Deliver(sig)
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

// write sends one text message; a socket that cannot take it within the
// write timeout is closed (its read loop then ends). It reports success.
func (c *conn) write(msg []byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
		c.srv.m.dropped.WithLabelValues("write_failed").Inc()
		c.ws.NetConn().Close()
		return false
	}
	return true
}

// closeWith sends a close frame (the read loop ends when the client
// answers, or at its deadline).
func (c *conn) closeWith(code int, reason string) {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
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
