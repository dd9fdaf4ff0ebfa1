package bittorrent

import "errors"

// WebRTC peers (the WebTorrent WebSocket protocol) meet through signalling,
// not addresses: a peer's announce carries WebRTC offers, the tracker hands
// each one to another peer of the swarm, and carries that peer's answer
// back. These are the values the WebSocket front end and the store share.

// RTCOp is what a WebRTC peer's announce does to its swarm.
type RTCOp uint8

const (
	// RTCLeecher and RTCSeeder record the peer (left > 0, left = 0).
	RTCLeecher RTCOp = iota + 1
	RTCSeeder
	// RTCStop removes the peer (event "stopped").
	RTCStop
	// RTCClose removes the peer if this process still holds its socket
	// (the socket closed; the peer may have reconnected elsewhere since).
	RTCClose
)

// OfferID identifies one offer, as the client made it (20 bytes).
type OfferID [20]byte

// MaxOffers is how many offers one WebRTC announce may carry to as many
// peers: bittorrent-tracker's client sends at most 10 (webtorrent 5),
// aquatic_ws takes 10. The front end drops those beyond; the store's
// function refuses a call with more.
const MaxOffers = 10

// RTCAnnounce is one WebRTC peer's announce with its offers.
type RTCAnnounce struct {
	InfoHash InfoHash
	PeerID   PeerID
	Op       RTCOp
	// Completed counts a completed download (event "completed").
	Completed bool
	// Offers go to as many other live peers of the swarm, one each;
	// Payloads[i] is the JSON of offer i, OfferIDs[i] its id. A
	// seeder's offers go to leechers only.
	OfferIDs []OfferID
	Payloads [][]byte
}

// RTCResult is what the store answers to an RTCAnnounce.
type RTCResult struct {
	Seeders, Leechers int
	// Sent is how many offers went to another peer; Remote how many of
	// them to a peer whose socket another process holds.
	Sent, Remote int
	// Local are the offers for peers whose socket this process holds:
	// the store did not publish them, the caller delivers them.
	Local []LocalOffer
}

// LocalOffer is offer number Offer (an index of RTCAnnounce.Payloads) for
// peer To.
type LocalOffer struct {
	To    PeerID
	Offer int
}

// SignalKind says whether a signal carries an offer or an answer.
type SignalKind byte

const (
	SignalOffer  SignalKind = 'o'
	SignalAnswer SignalKind = 'a'
)

// Signal is one offer or answer on its way to the socket of peer To of
// swarm InfoHash, from peer From.
type Signal struct {
	Kind     SignalKind
	To       PeerID
	InfoHash InfoHash
	From     PeerID
	OfferID  OfferID
	// Payload is the offer's or answer's JSON, relayed as the sender
	// wrote it (the front end bounds and checks it).
	Payload []byte
}

// signalHeader is the size of a signal's fixed part on the wire: kind, to,
// info hash, from, offer id.
const signalHeader = 1 + 4*20

// AppendSignalTail appends what follows kind and To in the wire form of s
// (the store prepends those when it picks the peer an offer goes to).
func AppendSignalTail(b []byte, s *Signal) []byte {
	b = append(b, s.InfoHash[:]...)
	b = append(b, s.From[:]...)
	b = append(b, s.OfferID[:]...)
	return append(b, s.Payload...)
}

// AppendSignal appends the wire form of s: kind, To, InfoHash, From,
// OfferID, then the payload.
func AppendSignal(b []byte, s *Signal) []byte {
	b = append(b, byte(s.Kind))
	b = append(b, s.To[:]...)
	return AppendSignalTail(b, s)
}

// ErrBadSignal is a signal whose wire form is not one.
var ErrBadSignal = errors.New("malformed signal")

// ParseSignal reads the wire form of a signal. The payload aliases msg.
func ParseSignal(msg []byte) (Signal, error) {
	var s Signal
	if len(msg) < signalHeader || (SignalKind(msg[0]) != SignalOffer && SignalKind(msg[0]) != SignalAnswer) {
		return s, ErrBadSignal
	}
	s.Kind = SignalKind(msg[0])
	copy(s.To[:], msg[1:21])
	copy(s.InfoHash[:], msg[21:41])
	copy(s.From[:], msg[41:61])
	copy(s.OfferID[:], msg[61:81])
	s.Payload = msg[signalHeader:]
	return s, nil
}

// RTCPeer is a live WebRTC peer of a swarm as the store holds it: its id,
// its class and the process (of the node) whose socket it announced on
// ("" when none is recorded).
type RTCPeer struct {
	ID      PeerID
	Seeder  bool
	Process string
}

// RTCSwarm is one swarm of WebRTC peers as read from the store: its live
// counts and, when Whole, every live peer (leechers first).
type RTCSwarm struct {
	Leechers, Seeders int
	Whole             bool
	Peers             []RTCPeer
}

// RTCRefresh is a regular re-announce of a WebRTC peer that changes
// nothing but when it was last seen (At, unix ms), written behind.
type RTCRefresh struct {
	InfoHash InfoHash
	PeerID   PeerID
	Seeder   bool
	At       int64
}

// RemoteSignal is a signal for a peer whose socket another process of
// the node holds (Process).
type RemoteSignal struct {
	Process string
	Signal  Signal
}
