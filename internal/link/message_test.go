package link

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

func sample() *Message {
	return &Message{Kind: KindUpdates, Node: "node1", Session: 42, Seq: 7, Time: 1764000000123, Changes: []bittorrent.PeerChange{
		{InfoHash: bittorrent.InfoHash{1}, Op: bittorrent.OpSeeder, Completion: true, Seen: 1764000000, Peer: "\x7f\x00\x00\x01\x1a\xe1"},
		{InfoHash: bittorrent.InfoHash{2}, Op: bittorrent.OpStopped, Seen: 1764000001, Peer: string(make([]byte, 18))},
	}}
}

func TestRoundTripAndRejects(t *testing.T) {
	up, down := Keys("secret")
	if bytes.Equal(up, down) {
		t.Fatal("direction keys are equal")
	}
	b, err := Encode(up, sample())
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(up, b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, sample()) {
		t.Fatalf("round trip: %+v", m)
	}
	otherUp, _ := Keys("wrong")
	tampered := bytes.Clone(b)
	tampered[20] ^= 1
	future := bytes.Clone(b)
	future[0] = 2
	for name, tc := range map[string]struct {
		key  Key
		b    []byte
		want error
	}{
		"wrong password":  {otherUp, b, ErrBadMAC},
		"wrong direction": {down, b, ErrBadMAC},
		"tampered":        {up, tampered, ErrBadMAC},
		"version":         {up, future, ErrVersion},
		"truncated":       {up, b[:10], ErrMalformed},
		"empty":           {up, nil, ErrMalformed},
	} {
		if _, err := Decode(tc.key, tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
	// A correctly signed message with a bad peer is malformed, not accepted.
	bad := sample()
	bad.Changes[0].Peer = "xyz"
	b, _ = Encode(up, bad)
	if _, err := Decode(up, b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad peer: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	up, _ := Keys("fuzz")
	b, _ := Encode(up, sample())
	f.Add(b)
	hb, _ := Encode(up, &Message{Kind: KindHeartbeat, Node: "n", Session: 1, Seq: 1, Time: 1})
	f.Add(hb)
	f.Add([]byte{1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(up, b)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes.
		again, err := Encode(up, m)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
	})
}

// FuzzDecodeSigned reaches the parser behind the MAC: the fuzzed body is
// signed with the right key before decoding, as a node holding the
// password could.
func FuzzDecodeSigned(f *testing.F) {
	up, _ := Keys("fuzz")
	b, _ := Encode(up, sample())
	f.Add(b[:len(b)-macLen])
	f.Add([]byte{1, 3, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{1, 1, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		mac := hmac.New(sha256.New, up)
		mac.Write(body)
		signed := mac.Sum(bytes.Clone(body))
		m, err := Decode(up, signed)
		if err != nil {
			return
		}
		again, err := Encode(up, m)
		if err != nil || !bytes.Equal(again, signed) {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
	})
}
