package wsapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecodeMessage: the one-pass decoder agrees with encoding/json. It
// accepts only valid JSON, and where the two are meant to agree (keys in
// lower case: encoding/json also matches other cases; no repeated offers,
// which encoding/json merges into the earlier ones; shallow nesting) it
// accepts and refuses the same messages and reads the same fields.
func FuzzDecodeMessage(f *testing.F) {
	ih := string(appendLatin1(nil, bytes.Repeat([]byte{0xe9}, 20)))
	for _, s := range []string{
		`{"action":"announce","info_hash":` + ih + `,"peer_id":` + ih + `,"left":0,"event":"started","offers":[{"offer_id":` + ih + `,"offer":{"type":"offer","sdp":"v=0\r\n"}}]}`,
		`{"action":"announce","info_hash":` + ih + `,"peer_id":` + ih + `,"to_peer_id":` + ih + `,"offer_id":` + ih + `,"answer":{"type":"answer","sdp":"v=0"}}`,
		`{"action":"scrape","info_hash":[` + ih + `,` + ih + `]}`,
		` { "action" : "announce" , "left" : -1.5e+3 , "x" : [ true , false , null , { } , [ ] ] } `,
		`{"act\u0069on":"\ud83d\ude00","peer_id":null,"offers":[null,{"offer":"x","y":1}]}`,
		`{"action":5}`, `{"offers":{}}`, `[1]`, `"x"`, `{"a":01}`, `{"a":"\x"}`, `{"a":1,}`, `{`, ``, `{"a":"` + "\x01" + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got message
		err := decodeMessage(data, &got)
		if err == nil && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if !bytes.Equal(bytes.ToLower(data), data) || bytes.Count(data, []byte(`"offers"`)) > 1 ||
			bytes.Count(data, []byte("{"))+bytes.Count(data, []byte("[")) > 400 {
			return
		}
		var want message
		werr := json.Unmarshal(data, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: decodeMessage %v, encoding/json %v", data, err, werr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(norm(got), norm(want)) {
			t.Fatalf("%q:\n got %+v\nwant %+v", data, norm(got), norm(want))
		}
	})
}

// norm makes two decodings comparable (empty and nil raw values alike).
func norm(m message) string {
	b, _ := json.Marshal(struct {
		A          string
		I, L, Ans  string
		P, E, T, O *string
		Offers     []struct {
			ID *string
			O  string
		}
		N bool
	}{A: m.Action, I: string(m.InfoHash), L: string(m.Left), Ans: string(m.Answer), P: m.PeerID, E: m.Event, T: m.ToPeerID, O: m.OfferID,
		Offers: func() (o []struct {
			ID *string
			O  string
		}) {
			for _, x := range m.Offers {
				o = append(o, struct {
					ID *string
					O  string
				}{x.OfferID, string(x.Offer)})
			}
			return o
		}(), N: m.Offers == nil})
	return strings.ToValidUTF8(string(b), "?")
}

// BenchmarkDecodeMessage: an announce with 5 offers, as the side-by-side
// measurement sends, by this decoder and by encoding/json.
func BenchmarkDecodeMessage(b *testing.B) {
	ih := string(appendLatin1(nil, bytes.Repeat([]byte{0xe9}, 20)))
	var offers []string
	for range 5 {
		offers = append(offers, `{"offer_id":`+ih+`,"offer":{"type":"offer","sdp":"`+strings.Repeat(`a=candidate:0 1 UDP 2122252543 192.0.2.1 54321 typ host\r\n`, 5)+`"}}`)
	}
	msg := []byte(`{"action":"announce","info_hash":` + ih + `,"peer_id":` + ih + `,"left":1000,"uploaded":0,"downloaded":0,"numwant":5,"offers":[` + strings.Join(offers, ",") + `]}`)
	b.Run("decodeMessage", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			var m message
			if err := decodeMessage(msg, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			var m message
			if err := json.Unmarshal(msg, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSpecial8: the eight-byte test finds a quote, a backslash or a
// control character wherever it is, and nothing else, in words of every
// byte value.
func TestSpecial8(t *testing.T) {
	want := func(w uint64) bool {
		for i := range 8 {
			if c := byte(w >> (8 * i)); c == '"' || c == '\\' || c < 0x20 {
				return true
			}
		}
		return false
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 1 << 20 {
		var w uint64
		if n < 256*8 {
			// Each byte value at each position, among plain bytes.
			w = 0x6161616161616161&^(0xff<<(8*(n%8))) | uint64(n/8)<<(8*(n%8))
		} else {
			w = r.Uint64()
		}
		if got := special8(w); got != want(w) {
			t.Fatalf("special8(%#016x) = %v, want %v", w, got, want(w))
		}
	}
}
