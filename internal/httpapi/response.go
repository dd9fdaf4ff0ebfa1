package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/tracker"
)

// Address families in an answer: a client gets peers of both families.
// IPv4 peers go in "peers" and IPv6 peers in "peers6" (BEP 7), never mixed:
// compact strings of 6 and 18 bytes a peer (BEP 23). In the dictionary model
// (compact=0) "peers" is a list of dictionaries of IPv4 peers, and IPv6
// peers still come compact in "peers6", the only form BEP 7 defines.

type announceResponse struct {
	Complete    int    `bencode:"complete"`
	Incomplete  int    `bencode:"incomplete"`
	Interval    int64  `bencode:"interval"`
	MinInterval int64  `bencode:"min interval"`
	Peers       any    `bencode:"peers"`
	Peers6      []byte `bencode:"peers6,omitempty"`
}

type dictPeer struct {
	IP     string `bencode:"ip"`
	PeerID []byte `bencode:"peer id,omitempty"`
	Port   uint16 `bencode:"port"`
}

type scrapeResponse struct {
	Files map[string]scrapeFile `bencode:"files"`
	// Warning says that some torrents asked for are left out of files
	// because the store could not be read for them now (BEP 48: a hash
	// absent from files has no data).
	Warning string `bencode:"warning message,omitempty"`
}

// scrapeFile is BEP 48's entry, with BEP 21's downloaders (the leechers
// that are not partial seeds).
type scrapeFile struct {
	Complete    int `bencode:"complete"`
	Downloaded  int `bencode:"downloaded"`
	Downloaders int `bencode:"downloaders"`
	Incomplete  int `bencode:"incomplete"`
}

type failureResponse struct {
	Reason string `bencode:"failure reason"`
}

// answerBufs are the buffers compact answers are built in.
var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// textPlain is the Content-Type of every answer (one shared slice, never
// written to).
var textPlain = []string{"text/plain"}

func writeAnnounce(w http.ResponseWriter, req *bittorrent.AnnounceRequest, res *tracker.Answer) {
	if req.Compact {
		// The fast path, for what nearly every client asks: the answer
		// is written by hand into a pooled buffer, without reflection.
		// TestCompactAnswerAsBencode keeps it equal to the general path.
		bp := answerBufs.Get().(*[]byte)
		b := appendCompactAnswer((*bp)[:0], res)
		w.Header()["Content-Type"] = textPlain
		w.Write(b)
		*bp = b
		answerBufs.Put(bp)
		return
	}
	resp := announceResponse{
		Complete:    res.Seeders,
		Incomplete:  res.Leechers,
		Interval:    int64(res.Interval / time.Second),
		MinInterval: int64(res.MinInterval / time.Second),
	}
	var v4, v6 []byte
	for _, p := range res.Peers {
		if p.Is6() {
			v6 = p.AppendBinary(v6, false)
		}
	}
	if req.Compact {
		v4 = make([]byte, 0, bittorrent.PeerLen4*len(res.Peers))
		for _, p := range res.Peers {
			if !p.Is6() {
				v4 = p.AppendBinary(v4, false)
			}
		}
		resp.Peers = v4
	} else {
		dict := make([]dictPeer, 0, len(res.Peers))
		for _, p := range res.Peers {
			if p.Is6() {
				continue
			}
			d := dictPeer{IP: p.Addr.Addr().String(), Port: p.Addr.Port()}
			// A peer stored without its id (the default) has none to give.
			if !req.NoPeerID && p.ID != (bittorrent.PeerID{}) {
				d.PeerID = p.ID[:]
			}
			dict = append(dict, d)
		}
		resp.Peers = dict
	}
	resp.Peers6 = v6
	writeBencode(w, resp)
}

// appendCompactAnswer appends the bencoded answer of the compact model: the
// keys of announceResponse in their (sorted) order, IPv4 peers in "peers"
// and IPv6 peers in "peers6" when there are any.
func appendCompactAnswer(b []byte, res *tracker.Answer) []byte {
	b = append(b, 'd')
	b = appendInt(appendKey(b, "complete"), int64(res.Seeders))
	b = appendInt(appendKey(b, "incomplete"), int64(res.Leechers))
	b = appendInt(appendKey(b, "interval"), int64(res.Interval/time.Second))
	b = appendInt(appendKey(b, "min interval"), int64(res.MinInterval/time.Second))
	n4, n6 := 0, 0
	for _, p := range res.Peers {
		if p.Is6() {
			n6++
		} else {
			n4++
		}
	}
	b = appendKey(b, "peers")
	b = strconv.AppendInt(b, int64(n4*bittorrent.PeerLen4), 10)
	b = append(b, ':')
	for _, p := range res.Peers {
		if !p.Is6() {
			b = p.AppendBinary(b, false)
		}
	}
	if n6 > 0 {
		b = appendKey(b, "peers6")
		b = strconv.AppendInt(b, int64(n6*bittorrent.PeerLen6), 10)
		b = append(b, ':')
		for _, p := range res.Peers {
			if p.Is6() {
				b = p.AppendBinary(b, false)
			}
		}
	}
	return append(b, 'e')
}

// appendKey appends a bencoded string (a dictionary key).
func appendKey(b []byte, k string) []byte {
	b = strconv.AppendInt(b, int64(len(k)), 10)
	return append(append(b, ':'), k...)
}

// appendInt appends a bencoded integer.
func appendInt(b []byte, n int64) []byte {
	return append(strconv.AppendInt(append(b, 'i'), n, 10), 'e')
}

func writeScrape(w http.ResponseWriter, res []bittorrent.Scrape) {
	resp := scrapeResponse{Files: make(map[string]scrapeFile, len(res))}
	missing := 0
	for _, s := range res {
		if s.Unavailable {
			missing++
			continue
		}
		resp.Files[string(s.InfoHash[:])] = scrapeFile{Complete: s.Complete, Downloaded: s.Downloaded, Downloaders: s.Downloaders, Incomplete: s.Incomplete}
	}
	if missing > 0 {
		resp.Warning = fmt.Sprintf("%d of the torrents asked for are unavailable now and left out; try again later", missing)
	}
	writeBencode(w, resp)
}

// writeFailure answers with a bencoded failure reason and HTTP 200, which is
// what clients expect and show to their users.
func writeFailure(w http.ResponseWriter, err error) {
	writeBencode(w, failureResponse{Reason: err.Error()})
}

func writeBencode(w http.ResponseWriter, v any) {
	b, err := bencode.Marshal(v)
	if err != nil {
		// Only our own fixed types are marshalled; this cannot happen
		// unless a type above is broken, which the tests would show.
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header()["Content-Type"] = textPlain
	w.Write(b)
}
