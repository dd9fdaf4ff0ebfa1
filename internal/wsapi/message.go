package wsapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// MaxOffers is how many offers one announce may carry to as many peers
// (bittorrent.MaxOffers). Offers beyond it are dropped and counted.
const MaxOffers = bittorrent.MaxOffers

// message is a client's JSON message as the clients encode it: binary
// values (info_hash, peer_id, to_peer_id, offer_id) are JavaScript strings
// of 20 chars 0-255, which JSON.stringify sends as UTF-8 text (latin1 as
// code points). Fields the tracker does not use (uploaded, downloaded,
// numwant, trackerid) are ignored.
type message struct {
	Action   string          `json:"action"`
	InfoHash json.RawMessage `json:"info_hash"`
	PeerID   *string         `json:"peer_id"`
	Event    *string         `json:"event"`
	Left     json.RawMessage `json:"left"`
	Offers   []offerIn       `json:"offers"`
	Answer   json.RawMessage `json:"answer"`
	ToPeerID *string         `json:"to_peer_id"`
	OfferID  *string         `json:"offer_id"`

	// strs holds the strings the fields above point to (decodeMessage),
	// so that a message's strings are not each allocated twice (a
	// pointer and its bytes): an announce with 5 offers took 13
	// allocations for its 7 strings, now 6 (those beyond these are
	// allocated).
	strs [5 + MaxOffers]string
}

type offerIn struct {
	OfferID *string         `json:"offer_id"`
	Offer   json.RawMessage `json:"offer"`
}

// request is a message checked: every field the tracker acts on is valid.
type request struct {
	scrape   bool
	infoHash bittorrent.InfoHash
	peerID   bittorrent.PeerID
	event    bittorrent.Event
	seeder   bool
	// offers, at most MaxOffers; dropped counts those beyond.
	offerIDs []bittorrent.OfferID
	offers   [][]byte
	dropped  int
	// answer (nil: none), for the peer toPeer, to offer offerID.
	answer  []byte
	toPeer  bittorrent.PeerID
	offerID bittorrent.OfferID
	// hashes of a scrape.
	hashes []bittorrent.InfoHash
}

// malformed is a message the tracker cannot act on: it answers with the
// reason and closes the socket (a client that sends one is broken or not
// a client).
type malformed string

func (e malformed) Error() string { return string(e) }

// parseMessage reads and checks one message. maxHashes bounds a scrape.
// Every error is a malformed.
func parseMessage(data []byte, maxHashes int) (*request, error) {
	return new(parsed).parse(data, maxHashes)
}

// parsed is the memory of parsing one message, pooled (getParsed): a
// reader parses a message and handles it, then puts it back. What the
// request holds (offers, ids) is valid until then.
type parsed struct {
	m      message
	r      request
	in     [MaxOffers]offerIn
	ids    [MaxOffers]bittorrent.OfferID
	offers [MaxOffers][]byte
}

var parsedPool = sync.Pool{New: func() any { return new(parsed) }}

func getParsed() *parsed { return parsedPool.Get().(*parsed) }

// put returns p to the pool, holding nothing of the message.
func (p *parsed) put() {
	p.m, p.r = message{}, request{}
	clear(p.in[:])
	clear(p.offers[:])
	parsedPool.Put(p)
}

// parse is parseMessage in p's memory.
func (p *parsed) parse(data []byte, maxHashes int) (*request, error) {
	p.m = message{Offers: p.in[:0]}
	m := &p.m
	if err := decodeMessage(data, m); err != nil {
		return nil, malformed("invalid JSON message")
	}
	switch m.Action {
	case "announce":
		p.r = request{offerIDs: p.ids[:0], offers: p.offers[:0]}
		return parseAnnounce(m, &p.r)
	case "scrape":
		return parseScrape(m, maxHashes)
	}
	return nil, malformed(fmt.Sprintf("invalid action %q", truncate(m.Action)))
}

func parseAnnounce(m *message, r *request) (*request, error) {
	var err error
	if r.infoHash, err = binary20[bittorrent.InfoHash](m.InfoHash, "info_hash"); err != nil {
		return nil, err
	}
	if m.PeerID == nil {
		return nil, malformed("invalid peer_id")
	}
	if r.peerID, err = latin1[bittorrent.PeerID](*m.PeerID, "peer_id"); err != nil {
		return nil, err
	}
	if len(m.Answer) > 0 && string(m.Answer) != "null" {
		if !isObject(m.Answer) {
			return nil, malformed("invalid answer: not an object")
		}
		if m.ToPeerID == nil {
			return nil, malformed("invalid to_peer_id (required with answer)")
		}
		if r.toPeer, err = latin1[bittorrent.PeerID](*m.ToPeerID, "to_peer_id"); err != nil {
			return nil, err
		}
		if m.OfferID == nil {
			return nil, malformed("invalid offer_id (required with answer)")
		}
		if r.offerID, err = latin1[bittorrent.OfferID](*m.OfferID, "offer_id"); err != nil {
			return nil, err
		}
		r.answer = m.Answer
		return r, nil
	}
	if m.Event != nil {
		switch *m.Event {
		case "", "update":
		case "started":
			r.event = bittorrent.Started
		case "stopped":
			r.event = bittorrent.Stopped
		case "completed":
			r.event = bittorrent.Completed
		default:
			return nil, malformed(fmt.Sprintf("invalid event %q", truncate(*m.Event)))
		}
	}
	if r.seeder, err = parseLeft(m.Left); err != nil {
		return nil, err
	}
	if r.event == bittorrent.Stopped {
		return r, nil // a stop sends no offers
	}
	if len(m.Offers) > MaxOffers {
		r.dropped = len(m.Offers) - MaxOffers
		m.Offers = m.Offers[:MaxOffers]
	}
	for _, o := range m.Offers {
		if o.OfferID == nil {
			return nil, malformed("invalid offer_id")
		}
		id, err := latin1[bittorrent.OfferID](*o.OfferID, "offer_id")
		if err != nil {
			return nil, err
		}
		if !isObject(o.Offer) {
			return nil, malformed("invalid offer: not an object")
		}
		r.offerIDs = append(r.offerIDs, id)
		r.offers = append(r.offers, o.Offer)
	}
	return r, nil
}

// parseLeft reads left: a number (0: a seeder), or absent or null (not
// known: a leecher), as bittorrent-tracker's server reads it.
func parseLeft(raw json.RawMessage) (bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return false, nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 0 {
		return false, malformed("invalid left")
	}
	return f == 0, nil
}

func parseScrape(m *message, maxHashes int) (*request, error) {
	r := &request{scrape: true}
	if len(m.InfoHash) == 0 || string(m.InfoHash) == "null" {
		return nil, malformed("invalid info_hash: a scrape names its torrents")
	}
	if m.InfoHash[0] == '"' {
		ih, err := binary20[bittorrent.InfoHash](m.InfoHash, "info_hash")
		if err != nil {
			return nil, err
		}
		r.hashes = []bittorrent.InfoHash{ih}
		return r, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(m.InfoHash, &list); err != nil {
		return nil, malformed("invalid info_hash")
	}
	if len(list) == 0 || len(list) > maxHashes {
		return nil, malformed(fmt.Sprintf("invalid info_hash: 1 to %d torrents a scrape", maxHashes))
	}
	for _, raw := range list {
		ih, err := binary20[bittorrent.InfoHash](raw, "info_hash")
		if err != nil {
			return nil, err
		}
		r.hashes = append(r.hashes, ih)
	}
	return r, nil
}

// binary20 reads a JSON string of 20 chars 0-255.
func binary20[T ~[20]byte](raw json.RawMessage, field string) (T, error) {
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		// No escape: the string's UTF-8 is between the quotes (the
		// decoder checked the token).
		return latin1Bytes[T](raw[1:len(raw)-1], field)
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return T{}, malformed("invalid " + field)
	}
	return latin1[T](s, field)
}

// latin1 turns a string of 20 code points 0-255 into its 20 bytes.
func latin1[T ~[20]byte](s, field string) (T, error) {
	var out T
	n := 0
	for _, r := range s {
		if n == len(out) || r > 0xff || r == utf8.RuneError {
			return T{}, malformed("invalid " + field)
		}
		out[n] = byte(r)
		n++
	}
	if n != len(out) {
		return T{}, malformed("invalid " + field)
	}
	return out, nil
}

// latin1Bytes is latin1 of UTF-8 bytes (invalid UTF-8 is refused).
func latin1Bytes[T ~[20]byte](b []byte, field string) (T, error) {
	var out T
	n := 0
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if n == len(out) || r > 0xff || r == utf8.RuneError {
			return T{}, malformed("invalid " + field)
		}
		out[n] = byte(r)
		n++
		b = b[size:]
	}
	if n != len(out) {
		return T{}, malformed("invalid " + field)
	}
	return out, nil
}

func isObject(raw json.RawMessage) bool { return len(raw) >= 2 && raw[0] == '{' }

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// errNotObject guards appendRaw's callers.
var errNotObject = errors.New("not a JSON object")

// The tracker's messages are written by hand: they are few and small, and
// binary values must be latin1 strings as the clients read them.

// appendLatin1 appends b as a JSON string of code points 0-255.
func appendLatin1(dst []byte, b []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for len(b) > 0 {
		// A run of bytes written as they are, appended at once.
		n := 0
		for n < len(b) && b[n] >= 0x20 && b[n] < 0x80 && b[n] != '"' && b[n] != '\\' {
			n++
		}
		dst = append(dst, b[:n]...)
		if n == len(b) {
			break
		}
		c := b[n]
		b = b[n+1:]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		case c < 0x80:
			dst = append(dst, c)
		default:
			dst = utf8.AppendRune(dst, rune(c))
		}
	}
	return append(dst, '"')
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s)
	return append(dst, b...)
}

// announceReply is the answer to an announce.
func announceReply(dst []byte, ih bittorrent.InfoHash, interval int, complete, incomplete int) []byte {
	dst = append(dst, `{"action":"announce","interval":`...)
	dst = strconv.AppendInt(dst, int64(interval), 10)
	dst = append(dst, `,"info_hash":`...)
	dst = appendLatin1(dst, ih[:])
	dst = append(dst, `,"complete":`...)
	dst = strconv.AppendInt(dst, int64(complete), 10)
	dst = append(dst, `,"incomplete":`...)
	dst = strconv.AppendInt(dst, int64(incomplete), 10)
	return append(dst, '}')
}

// signalMessage is an offer or answer as the peer it is for receives it.
// parsed: the payload is known valid JSON (parsed from a client's message
// by this process); otherwise (from the store) it is checked.
func signalMessage(dst []byte, s *bittorrent.Signal, parsed bool) ([]byte, error) {
	if !isObject(s.Payload) || (!parsed && !json.Valid(s.Payload)) {
		return dst, errNotObject
	}
	dst = append(dst, `{"action":"announce",`...)
	if s.Kind == bittorrent.SignalOffer {
		dst = append(dst, `"offer":`...)
	} else {
		dst = append(dst, `"answer":`...)
	}
	dst = append(dst, s.Payload...)
	dst = append(dst, `,"offer_id":`...)
	dst = appendLatin1(dst, s.OfferID[:])
	dst = append(dst, `,"peer_id":`...)
	dst = appendLatin1(dst, s.From[:])
	dst = append(dst, `,"info_hash":`...)
	dst = appendLatin1(dst, s.InfoHash[:])
	return append(dst, '}'), nil
}

// scrapeReply is the answer to a scrape.
func scrapeReply(dst []byte, res []bittorrent.Scrape, minInterval int) []byte {
	dst = append(dst, `{"action":"scrape","files":{`...)
	for i, s := range res {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendLatin1(dst, s.InfoHash[:])
		dst = append(dst, `:{"complete":`...)
		dst = strconv.AppendInt(dst, int64(s.Complete), 10)
		dst = append(dst, `,"incomplete":`...)
		dst = strconv.AppendInt(dst, int64(s.Incomplete), 10)
		dst = append(dst, `,"downloaded":`...)
		dst = strconv.AppendInt(dst, int64(s.Downloaded), 10)
		dst = append(dst, '}')
	}
	dst = append(dst, `},"flags":{"min_request_interval":`...)
	dst = strconv.AppendInt(dst, int64(minInterval), 10)
	return append(dst, `}}`...)
}

// failureReply is a refusal. ih (nil: none) lets a client that shares one
// socket between torrents tell whose announce it is for (bittorrent-tracker's
// client ignores an announce reply without its info hash).
func failureReply(dst []byte, action string, ih *bittorrent.InfoHash, reason string) []byte {
	dst = append(dst, '{')
	if action != "" {
		dst = append(dst, `"action":`...)
		dst = appendString(dst, action)
		dst = append(dst, ',')
	}
	if ih != nil {
		dst = append(dst, `"info_hash":`...)
		dst = appendLatin1(dst, ih[:])
		dst = append(dst, ',')
	}
	dst = append(dst, `"failure reason":`...)
	dst = appendString(dst, reason)
	return append(dst, '}')
}
