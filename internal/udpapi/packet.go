package udpapi

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strconv"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// The wire format of BEP 15. Every number is big endian.
//
//	connect request   0 protocol id (8) | 8 action=0 (4) | 12 transaction id (4)            16 bytes
//	connect reply     0 action=0 | 4 transaction id | 8 connection id (8)                   16 bytes
//	announce request  0 connection id | 8 action=1 | 12 transaction id | 16 info hash (20)
//	                  36 peer id (20) | 56 downloaded (8) | 64 left (8) | 72 uploaded (8)
//	                  80 event (4) | 84 IPv4 address (4) | 88 key (4) | 92 num want (4)
//	                  96 port (2) | 98 BEP 41 options...                                     98+ bytes
//	announce reply    0 action=1 | 4 transaction id | 8 interval | 12 leechers | 16 seeders
//	                  20 peers: 6 bytes each on an IPv4 socket, 18 on an IPv6 one
//	scrape request    0 connection id | 8 action=2 | 12 transaction id | 16 info hash × n
//	scrape reply      0 action=2 | 4 transaction id | 8 (seeders, completed, leechers) × n
//	error reply       0 action=3 | 4 transaction id | 8 message
const (
	protocolID = 0x41727101980

	actionConnect  = 0
	actionAnnounce = 1
	actionScrape   = 2
	actionError    = 3

	headerLen   = 16
	announceLen = 98
	replyHead   = 8
	announceHdr = 20
)

// MaxScrapeHashes is the most info hashes one scrape may carry: what fits
// in one request datagram of readBufSize bytes.
const MaxScrapeHashes = (readBufSize - headerLen) / 20

// maxURLData bounds the BEP 41 URL data of one request; a request datagram
// is smaller anyway, but the bound is stated where it is used.
const maxURLData = 1024

// header is the first 16 bytes of every request.
type header struct {
	connID uint64 // the protocol id in a connect request
	action uint32
	txID   uint32
}

// parseHeader reads the header; ok is false for a datagram too short to
// have one (it gets no reply at all).
func parseHeader(b []byte) (h header, ok bool) {
	if len(b) < headerLen {
		return h, false
	}
	return header{
		connID: binary.BigEndian.Uint64(b[0:8]),
		action: binary.BigEndian.Uint32(b[8:12]),
		txID:   binary.BigEndian.Uint32(b[12:16]),
	}, true
}

// announcePacket is an announce as read off the wire.
type announcePacket struct {
	req bittorrent.AnnounceRequest
	// ip is the IPv4 address field (zero: "use the sender's").
	ip [4]byte
	// urlData is the BEP 41 URL data (the path and query of the tracker
	// URL the client was given, e.g. "/announce"), "" when none was sent.
	urlData string
}

// udpEvents maps BEP 15's event numbers to events. BEP 15 stops at 3;
// libtorrent sends its partial seeds' BEP 21 paused as 4, so 4 is paused.
var udpEvents = [...]bittorrent.Event{0: bittorrent.None, 1: bittorrent.Completed, 2: bittorrent.Started, 3: bittorrent.Stopped, 4: bittorrent.Paused}

// parseAnnounce reads an announce request (its header already checked).
// Every error is a ClientError, in the same words as HTTP's where the rule
// is the same.
func parseAnnounce(b []byte) (announcePacket, error) {
	var p announcePacket
	if len(b) < announceLen {
		return p, bittorrent.ClientError("malformed announce: " + strconv.Itoa(len(b)) + " bytes, at least 98 needed")
	}
	r := &p.req
	copy(r.InfoHash[:], b[16:36])
	copy(r.Peer.ID[:], b[36:56])
	r.Downloaded = binary.BigEndian.Uint64(b[56:64])
	r.Left = binary.BigEndian.Uint64(b[64:72])
	r.Uploaded = binary.BigEndian.Uint64(b[72:80])
	ev := binary.BigEndian.Uint32(b[80:84])
	if ev >= uint32(len(udpEvents)) {
		return p, bittorrent.ClientError("unknown event")
	}
	r.Event = udpEvents[ev]
	copy(p.ip[:], b[84:88])
	var key [4]byte
	copy(key[:], b[88:92])
	r.Key = hex.EncodeToString(key[:])
	r.NumWant = int(int32(binary.BigEndian.Uint32(b[92:96])))
	if r.NumWant < 0 {
		r.NumWant = -1
	}
	port := binary.BigEndian.Uint16(b[96:98])
	if port == 0 {
		return p, bittorrent.ClientError("port must be a number from 1 to 65535")
	}
	r.Peer.Addr = netip.AddrPortFrom(netip.Addr{}, port)
	r.Compact = true
	urlData, err := parseOptions(b[announceLen:])
	if err != nil {
		return p, err
	}
	p.urlData = urlData
	return p, nil
}

// BEP 41 option types.
const (
	optEnd     = 0x0
	optNOP     = 0x1
	optURLData = 0x2
)

// parseOptions reads BEP 41 options and returns the URL data (the
// concatenation of every URL data option). End of options stops the list;
// NOP is one byte; every other type, known or not, has a length byte and is
// skipped when unknown. An option that runs past the datagram is an error.
func parseOptions(b []byte) (string, error) {
	var url []byte
	for len(b) > 0 {
		switch b[0] {
		case optEnd:
			return string(url), nil
		case optNOP:
			b = b[1:]
			continue
		}
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return "", bittorrent.ClientError("malformed BEP 41 option: it runs past the end of the packet")
		}
		typ, body := b[0], b[2:2+int(b[1])]
		b = b[2+int(b[1]):]
		if typ == optURLData {
			if len(url)+len(body) > maxURLData {
				return "", bittorrent.ClientError("BEP 41 URL data too long")
			}
			url = append(url, body...)
		}
	}
	return string(url), nil
}

// parseScrape reads the info hashes of a scrape request: at least one, at
// most max, a whole number of 20-byte hashes.
func parseScrape(b []byte, max int) ([]bittorrent.InfoHash, error) {
	body := b[headerLen:]
	switch {
	case len(body) == 0:
		return nil, bittorrent.ClientError("scrape needs at least one info_hash")
	case len(body)%20 != 0:
		return nil, bittorrent.ClientError("malformed scrape: info hashes are 20 bytes each")
	case len(body)/20 > max:
		return nil, bittorrent.ClientError("too many info hashes, at most " + strconv.Itoa(max))
	}
	hashes := make([]bittorrent.InfoHash, len(body)/20)
	for i := range hashes {
		copy(hashes[i][:], body[20*i:])
	}
	return hashes, nil
}

func appendConnectReply(b []byte, txID uint32, connID uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, actionConnect)
	b = binary.BigEndian.AppendUint32(b, txID)
	return binary.BigEndian.AppendUint64(b, connID)
}

// appendAnnounceReply writes the reply to an announce; only peers that fit
// the socket's family are written (the store was asked for that family).
func appendAnnounceReply(b []byte, txID uint32, interval int64, leechers, seeders int, peers []bittorrent.Peer, fam bittorrent.Family) []byte {
	b = binary.BigEndian.AppendUint32(b, actionAnnounce)
	b = binary.BigEndian.AppendUint32(b, txID)
	b = binary.BigEndian.AppendUint32(b, clamp32(interval))
	b = binary.BigEndian.AppendUint32(b, clamp32(int64(leechers)))
	b = binary.BigEndian.AppendUint32(b, clamp32(int64(seeders)))
	for _, p := range peers {
		if fam.Carries(p) {
			b = p.AppendBinary(b, false)
		}
	}
	return b
}

func appendScrapeReply(b []byte, txID uint32, res []bittorrent.Scrape) []byte {
	b = binary.BigEndian.AppendUint32(b, actionScrape)
	b = binary.BigEndian.AppendUint32(b, txID)
	for _, s := range res {
		b = binary.BigEndian.AppendUint32(b, clamp32(int64(s.Complete)))
		b = binary.BigEndian.AppendUint32(b, clamp32(int64(s.Downloaded)))
		b = binary.BigEndian.AppendUint32(b, clamp32(int64(s.Incomplete)))
	}
	return b
}

// appendError writes an error reply whose whole length is at most limit
// bytes (the message is cut to fit), so that an unauthenticated request
// never gets more bytes back than it sent.
func appendError(b []byte, txID uint32, msg string, limit int) []byte {
	if room := limit - replyHead; len(msg) > room {
		msg = msg[:max(room, 0)]
	}
	b = binary.BigEndian.AppendUint32(b, actionError)
	b = binary.BigEndian.AppendUint32(b, txID)
	return append(b, msg...)
}

func clamp32(n int64) uint32 {
	switch {
	case n < 0:
		return 0
	case n > 1<<31-1:
		return 1<<31 - 1
	}
	return uint32(n)
}
