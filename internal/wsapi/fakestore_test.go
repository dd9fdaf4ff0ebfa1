package wsapi

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// fakeRTC is one node's WebRTC peers in memory, shared by its processes
// (fakeRTCProc): an in-memory Store and Listener, so that the front end's
// unit tests need no Redis. It keeps the rules the front end can see
// (redisstore.RTC's, which the same tests check on real Redis): a peer
// belongs to the process that announced it last, a stop removes it, a
// socket's close removes it only if that process still holds it, an offer
// goes to another live peer (a seeder's to leechers only), delivered by
// the caller when this process holds the target (Local) and through the
// target process's listener otherwise (Remote), and an answer reaches a
// live peer of the swarm only. Peers never expire here.
type fakeRTC struct {
	mu        sync.Mutex
	swarms    map[bittorrent.InfoHash]map[bittorrent.PeerID]*fakeRTCPeer
	completed map[bittorrent.InfoHash]int
}

type fakeRTCPeer struct {
	seeder bool
	owner  *fakeRTCProc
}

// fakeRTCProc is one process's view of a fakeRTC.
type fakeRTCProc struct {
	net   *fakeRTC
	inbox chan bittorrent.Signal // what other processes sent to this one's peers
}

var (
	_ Store    = (*fakeRTCProc)(nil)
	_ Listener = (*fakeRTCProc)(nil)
)

// process returns a new process of the node.
func (n *fakeRTC) process() *fakeRTCProc {
	return &fakeRTCProc{net: n, inbox: make(chan bittorrent.Signal, 1024)}
}

func (n *fakeRTC) swarm(ih bittorrent.InfoHash) map[bittorrent.PeerID]*fakeRTCPeer {
	if n.swarms == nil {
		n.swarms = map[bittorrent.InfoHash]map[bittorrent.PeerID]*fakeRTCPeer{}
		n.completed = map[bittorrent.InfoHash]int{}
	}
	sw := n.swarms[ih]
	if sw == nil {
		sw = map[bittorrent.PeerID]*fakeRTCPeer{}
		n.swarms[ih] = sw
	}
	return sw
}

func counts(sw map[bittorrent.PeerID]*fakeRTCPeer) (seeders, leechers int) {
	for _, p := range sw {
		if p.seeder {
			seeders++
		} else {
			leechers++
		}
	}
	return seeders, leechers
}

// send queues s for its target's process; a full inbox drops it, as a
// lost publish would.
func (p *fakeRTCProc) send(s bittorrent.Signal) {
	select {
	case p.inbox <- s:
	default:
	}
}

// AnnounceBatch answers each announce of the batch in turn, as the store's
// pipeline does.
func (p *fakeRTCProc) AnnounceBatch(ctx context.Context, as []*bittorrent.RTCAnnounce, out []bittorrent.RTCResult, errs []error) {
	for i, a := range as {
		out[i], errs[i] = p.Announce(ctx, a)
	}
}

func (p *fakeRTCProc) Announce(ctx context.Context, a *bittorrent.RTCAnnounce) (bittorrent.RTCResult, error) {
	var res bittorrent.RTCResult
	if len(a.Payloads) > bittorrent.MaxOffers || len(a.Payloads) != len(a.OfferIDs) {
		return res, errors.New("fake rtc announce: too many offers, or offers without ids")
	}
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	sw := p.net.swarm(a.InfoHash)
	switch a.Op {
	case bittorrent.RTCStop:
		delete(sw, a.PeerID)
	case bittorrent.RTCClose:
		if me := sw[a.PeerID]; me != nil && me.owner == p {
			delete(sw, a.PeerID)
		}
	case bittorrent.RTCLeecher, bittorrent.RTCSeeder:
		sw[a.PeerID] = &fakeRTCPeer{seeder: a.Op == bittorrent.RTCSeeder, owner: p}
	}
	if a.Completed {
		p.net.completed[a.InfoHash]++
	}
	res.Seeders, res.Leechers = counts(sw)
	var targets []bittorrent.PeerID
	for id, peer := range sw {
		if id != a.PeerID && (a.Op != bittorrent.RTCSeeder || !peer.seeder) {
			targets = append(targets, id)
		}
	}
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	for i, to := range targets[:min(len(targets), len(a.Payloads))] {
		res.Sent++
		owner := sw[to].owner
		if owner == p {
			res.Local = append(res.Local, bittorrent.LocalOffer{To: to, Offer: i})
			continue
		}
		res.Remote++
		owner.send(bittorrent.Signal{Kind: bittorrent.SignalOffer, To: to, InfoHash: a.InfoHash, From: a.PeerID, OfferID: a.OfferIDs[i], Payload: a.Payloads[i]})
	}
	return res, nil
}

func (p *fakeRTCProc) Signal(ctx context.Context, s *bittorrent.Signal) (sent, remote bool, err error) {
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	to := p.net.swarm(s.InfoHash)[s.To]
	if to == nil {
		return false, false, nil
	}
	if to.owner == p {
		return true, false, nil
	}
	to.owner.send(*s)
	return true, true, nil
}

func (p *fakeRTCProc) Leave(ctx context.Context, ih []bittorrent.InfoHash, peers []bittorrent.PeerID) error {
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	for i := range ih {
		sw := p.net.swarm(ih[i])
		if me := sw[peers[i]]; me != nil && me.owner == p {
			delete(sw, peers[i])
		}
	}
	return nil
}

func (p *fakeRTCProc) Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	out := make([]bittorrent.Scrape, len(hashes))
	for i, ih := range hashes {
		s, l := counts(p.net.swarm(ih))
		out[i] = bittorrent.Scrape{InfoHash: ih, Complete: s, Incomplete: l, Downloaders: l, Downloaded: p.net.completed[ih]}
	}
	return out, nil
}

// Listen is ready at once and delivers what other processes send, until
// ctx ends.
func (p *fakeRTCProc) Listen(ctx context.Context, h redisstore.SignalHandler) error {
	h.Ready()
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-p.inbox:
			h.Deliver(s)
		}
	}
}
