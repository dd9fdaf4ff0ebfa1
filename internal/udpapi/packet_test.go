package udpapi

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// announceBytes builds an announce request as BEP 15 lays it out.
func announceBytes(connID uint64, txID uint32, ih, pid string, left uint64, event uint32, numWant int32, port uint16, opts []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, connID)
	b = binary.BigEndian.AppendUint32(b, actionAnnounce)
	b = binary.BigEndian.AppendUint32(b, txID)
	b = append(b, ih...)
	b = append(b, pid...)
	b = binary.BigEndian.AppendUint64(b, 7)    // downloaded
	b = binary.BigEndian.AppendUint64(b, left) // left
	b = binary.BigEndian.AppendUint64(b, 9)    // uploaded
	b = binary.BigEndian.AppendUint32(b, event)
	b = append(b, 0, 0, 0, 0)             // ip
	b = append(b, 0xde, 0xad, 0xbe, 0xef) // key
	b = binary.BigEndian.AppendUint32(b, uint32(numWant))
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, opts...)
}

var (
	testIH  = strings.Repeat("i", 20)
	testPID = strings.Repeat("p", 20)
)

func TestParseAnnounce(t *testing.T) {
	ok := announceBytes(1, 2, testIH, testPID, 100, 2, 30, 6881, nil)
	p, err := parseAnnounce(ok)
	if err != nil {
		t.Fatal(err)
	}
	r := p.req
	if string(r.InfoHash[:]) != testIH || string(r.Peer.ID[:]) != testPID || r.Downloaded != 7 || r.Left != 100 || r.Uploaded != 9 ||
		r.Event != bittorrent.Started || r.NumWant != 30 || r.Peer.Addr.Port() != 6881 || r.Key != "deadbeef" || !r.Compact || p.urlData != "" {
		t.Fatalf("parsed %+v", p)
	}
	for _, tc := range []struct {
		name    string
		b       []byte
		wantErr string
		url     string
		numWant int
		event   bittorrent.Event
	}{
		{"too short", ok[:97], "at least 98", "", 0, 0},
		{"unknown event", announceBytes(1, 2, testIH, testPID, 1, 5, -1, 1, nil), "unknown event", "", 0, 0},
		{"libtorrent's paused (4)", announceBytes(1, 2, testIH, testPID, 1, 4, -1, 1, nil), "", "", -1, bittorrent.Paused},
		{"port 0", announceBytes(1, 2, testIH, testPID, 1, 0, -1, 0, nil), "port must be", "", 0, 0},
		{"numwant -1 is the default", announceBytes(1, 2, testIH, testPID, 1, 0, -1, 1, nil), "", "", -1, bittorrent.None},
		{"numwant below -1 too", announceBytes(1, 2, testIH, testPID, 1, 3, -77, 1, nil), "", "", -1, bittorrent.Stopped},
		{"completed", announceBytes(1, 2, testIH, testPID, 0, 1, 5, 1, nil), "", "", 5, bittorrent.Completed},
		{"URL data", announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x02\x09/announce")), "", "/announce", 5, 0},
		{"URL data in two options", announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x02\x04/ann\x02\x0bounce?k=v12")), "", "/announce?k=v12", 5, 0},
		{"NOP, then end of options", announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x01\x01\x02\x02/a\x00\x02\x05never")), "", "/a", 5, 0},
		{"unknown option skipped", announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x07\x03xyz\x02\x02/b")), "", "/b", 5, 0},
		{"option past the end", announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x02\x09/ann")), "malformed BEP 41", "", 0, 0},
		{"option without its length", announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x02")), "malformed BEP 41", "", 0, 0},
		{"URL data too long", announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, bytes.Repeat([]byte("\x02\xff"+strings.Repeat("u", 255)), 5)), "too long", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseAnnounce(tc.b)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if _, ok := bittorrent.IsClientError(err); !ok {
					t.Fatalf("%v is not a client error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.urlData != tc.url || p.req.NumWant != tc.numWant || p.req.Event != tc.event {
				t.Fatalf("url %q numwant %d event %v", p.urlData, p.req.NumWant, p.req.Event)
			}
		})
	}
}

func TestParseScrape(t *testing.T) {
	head := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 1), actionScrape), 3)
	for _, tc := range []struct {
		name    string
		body    string
		max     int
		want    int
		wantErr string
	}{
		{"one", testIH, 5, 1, ""},
		{"three", strings.Repeat(testIH, 3), 5, 3, ""},
		{"none", "", 5, 0, "at least one"},
		{"partial hash", testIH + "abc", 5, 0, "20 bytes each"},
		{"over the cap", strings.Repeat(testIH, 6), 5, 0, "at most 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseScrape(append(head, tc.body...), tc.max)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.want || string(got[0][:]) != testIH {
				t.Fatalf("got %d hashes, err %v", len(got), err)
			}
		})
	}
}

func TestReplies(t *testing.T) {
	if b := appendConnectReply(nil, 5, 0x1122334455667788); len(b) != 16 || binary.BigEndian.Uint32(b[4:]) != 5 || binary.BigEndian.Uint64(b[8:]) != 0x1122334455667788 {
		t.Fatalf("connect reply %x", b)
	}
	msg := "connection ID expired or invalid; connect again"
	if b := appendError(nil, 9, msg, 16); len(b) != 16 || string(b[8:]) != msg[:8] || binary.BigEndian.Uint32(b) != actionError {
		t.Fatalf("error reply cut to 16 bytes: %q", b)
	}
	if b := appendError(nil, 9, msg, 1<<16); string(b[8:]) != msg {
		t.Fatalf("error reply %q", b)
	}
	v4 := bittorrent.Peer{Addr: netip.MustParseAddrPort("192.0.2.1:80")}
	v6 := bittorrent.Peer{Addr: netip.MustParseAddrPort("[2001:db8::1]:81")}
	b := appendAnnounceReply(nil, 1, 1800, 3, 4, []bittorrent.Peer{v4, v6}, bittorrent.OnlyIPv4)
	if len(b) != 20+6 || binary.BigEndian.Uint32(b[8:]) != 1800 || binary.BigEndian.Uint32(b[12:]) != 3 || binary.BigEndian.Uint32(b[16:]) != 4 {
		t.Fatalf("IPv4 announce reply %x", b)
	}
	if b := appendAnnounceReply(nil, 1, 1800, 3, 4, []bittorrent.Peer{v4, v6}, bittorrent.OnlyIPv6); len(b) != 20+18 {
		t.Fatalf("IPv6 announce reply %x", b)
	}
	sc := appendScrapeReply(nil, 2, []bittorrent.Scrape{{Complete: 1, Downloaded: 2, Incomplete: 3}})
	if len(sc) != 20 || binary.BigEndian.Uint32(sc[8:]) != 1 || binary.BigEndian.Uint32(sc[12:]) != 2 || binary.BigEndian.Uint32(sc[16:]) != 3 {
		t.Fatalf("scrape reply %x", sc)
	}
}

// FuzzTriage feeds any datagram to the reader's triage and the workers'
// parsers: nothing panics, a datagram shorter than a header gets no reply,
// and nothing but a valid connect gets more bytes back than it sent.
func FuzzTriage(f *testing.F) {
	f.Add([]byte{})
	f.Add(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, protocolID), 0), 1))
	f.Add(announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x02\x09/announce")))
	f.Add(announceBytes(1, 2, testIH, testPID, 1, 0, 5, 1, []byte("\x02\x09/ann")))
	f.Add(append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 1), 2), 3), testIH...))
	s := &Server{cfg: Config{ScrapeMaxHashes: 74}, m: newMetrics(), now: time.Now}
	ids := newConnIDs([]byte("fuzz-secret-0123456789"))
	from := netip.MustParseAddrPort("192.0.2.7:5000")
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > readBufSize+1 {
			b = b[:readBufSize+1]
		}
		// Whatever the header says, the parsers must hold.
		if len(b) >= headerLen {
			parseAnnounce(b)
			parseScrape(b, 74)
		}
		p := &packet{n: len(b), from: from}
		copy(p.buf[:], b)
		if s.triage(p, ids, time.Now()) {
			// A forged connection ID that passed would land here: with a
			// 56-bit MAC the fuzzer will not find one.
			t.Fatalf("unauthenticated request %x passed triage", b)
		}
		if len(p.out) == 0 {
			return
		}
		if len(b) < headerLen {
			t.Fatalf("%d-byte datagram got a reply", len(b))
		}
		h, _ := parseHeader(b)
		validConnect := h.action == actionConnect && h.connID == protocolID
		if !validConnect && len(p.out) > len(b) {
			t.Fatalf("%d-byte unauthenticated request got %d bytes", len(b), len(p.out))
		}
	})
}
