package wsapi

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestLatin1RoundTrip: every byte value survives the tracker's encoding
// and a client's JSON.parse (here encoding/json, which reads the same
// UTF-8 text).
func TestLatin1RoundTrip(t *testing.T) {
	var all [256]byte
	for i := range all {
		all[i] = byte(i)
	}
	for i := 0; i+20 <= len(all); i += 7 {
		var id bittorrent.PeerID
		copy(id[:], all[i:i+20])
		var s string
		if err := json.Unmarshal(appendLatin1(nil, id[:]), &s); err != nil {
			t.Fatal(err)
		}
		back, err := latin1[bittorrent.PeerID](s, "peer_id")
		if err != nil || back != id {
			t.Fatalf("%x: got %x, %v", id, back, err)
		}
		// From the JSON token itself (binary20: without escapes, read
		// from its bytes; with escapes, through encoding/json).
		back, err = binary20[bittorrent.PeerID](appendLatin1(nil, id[:]), "peer_id")
		if err != nil || back != id {
			t.Fatalf("%x from its JSON: got %x, %v", id, back, err)
		}
	}
}

// FuzzParseMessage: no message makes the parser panic, and what it
// accepts is within bounds and round-trips through the tracker's own
// encoding. Corpus: testdata/fuzz/FuzzParseMessage.
func FuzzParseMessage(f *testing.F) {
	ih := string(appendLatin1(nil, bytes.Repeat([]byte{0xe9}, 20)))
	f.Add([]byte(`{"action":"announce","info_hash":` + ih + `,"peer_id":` + ih + `,"left":0,"event":"started","offers":[{"offer_id":` + ih + `,"offer":{"type":"offer","sdp":"v=0"}}]}`))
	f.Add([]byte(`{"action":"announce","info_hash":` + ih + `,"peer_id":` + ih + `,"to_peer_id":` + ih + `,"offer_id":` + ih + `,"answer":{"type":"answer","sdp":"v=0"}}`))
	f.Add([]byte(`{"action":"scrape","info_hash":[` + ih + `,` + ih + `]}`))
	f.Add([]byte(`{"action":"scrape","info_hash":` + ih + `}`))
	f.Add([]byte(`{"action":"announce"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseMessage(data, 64)
		if err != nil {
			if _, ok := err.(malformed); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if len(r.offers) > MaxOffers || len(r.offers) != len(r.offerIDs) || len(r.hashes) > 64 {
			t.Fatalf("out of bounds: %d offers, %d ids, %d hashes", len(r.offers), len(r.offerIDs), len(r.hashes))
		}
		for _, o := range r.offers {
			if !json.Valid(o) || !isObject(o) {
				t.Fatalf("offer %q is not a JSON object", o)
			}
		}
		if r.answer != nil && (!json.Valid(r.answer) || !isObject(r.answer)) {
			t.Fatalf("answer %q is not a JSON object", r.answer)
		}
		if !r.scrape {
			msg, err := signalMessage(nil, &bittorrent.Signal{Kind: bittorrent.SignalOffer, InfoHash: r.infoHash, From: r.peerID, Payload: []byte(`{"type":"offer"}`)}, false)
			if err != nil || !json.Valid(msg) {
				t.Fatalf("own encoding invalid: %s %v", msg, err)
			}
			back, err := parseMessage(bytes.Replace(msg, []byte(`"offer":{"type":"offer"}`), []byte(`"left":1`), 1), 64)
			if err != nil || back.infoHash != r.infoHash || back.peerID != r.peerID {
				t.Fatalf("round trip of %s: %+v %v", msg, back, err)
			}
		}
	})
}
