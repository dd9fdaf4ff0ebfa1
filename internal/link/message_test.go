package link

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

func sample() *Message {
	return &Message{Version: Version, Kind: KindUpdates, Partitions: 16, Node: "node1", Session: 42, Seq: 7, Time: 1764000000123, Changes: []bittorrent.PeerChange{
		{InfoHash: bittorrent.InfoHash{1}, Op: bittorrent.OpSeeder, Completion: true, Seen: 1764000000, Peer: "\x7f\x00\x00\x01\x1a\xe1"},
		{InfoHash: bittorrent.InfoHash{2}, Op: bittorrent.OpStopped, Seen: 1764000001, Peer: string(make([]byte, 18))},
		{InfoHash: bittorrent.InfoHash{3}, Op: bittorrent.OpPartial, Seen: 1764000002, Peer: "\x0a\x00\x00\x02\x1a\xe1"},
	}}
}

// Deriving keys costs an argon2id run each: the tests derive a few, once.
var (
	testKeysOnce       sync.Once
	key1, key2, keyBad Key
	hubPriv            ed25519.PrivateKey
	hubPub, otherPub   ed25519.PublicKey
)

func testKeys() {
	testKeysOnce.Do(func() {
		m, wrong := NewMaster("secret"), NewMaster("wrong")
		key1, key2 = m.NodeKey("node1"), m.NodeKey("node2")
		keyBad = wrong.NodeKey("node1")
		hubPriv, hubPub = m.HubKeys()
		_, otherPub = wrong.HubKeys()
	})
}

// keyring is the hub's view: the key of each node id it knows.
func keyring(node string) (Key, error) {
	switch node {
	case "node1":
		return key1, nil
	case "node2":
		return key2, nil
	}
	return nil, errors.New("no such node")
}

func TestRoundTripAndRejects(t *testing.T) {
	testKeys()
	if bytes.Equal(key1, key2) || bytes.Equal(key1, keyBad) {
		t.Fatal("node keys are not distinct")
	}
	b, err := EncodeUp(key1, sample())
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeUp(b, keyring)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, sample()) {
		t.Fatalf("round trip: %+v", m)
	}
	// node2's key cannot sign as node1, nor a key derived from another secret.
	asOther, _ := EncodeUp(key2, sample())
	wrongSecret, _ := EncodeUp(keyBad, sample())
	unknown := sample()
	unknown.Node = "node9"
	unknownB, _ := EncodeUp(key1, unknown)
	tampered := bytes.Clone(b)
	tampered[20] ^= 1
	old := bytes.Clone(b)
	old[0] = 1
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"signed by another node": {asOther, ErrBadMAC},
		"wrong secret":           {wrongSecret, ErrBadMAC},
		"unknown node":           {unknownB, ErrUnknownNode},
		"tampered":               {tampered, ErrBadMAC},
		"version 1":              {old, ErrVersion},
		"truncated":              {b[:10], ErrMalformed},
		"empty":                  {nil, ErrMalformed},
	} {
		if _, err := DecodeUp(tc.b, keyring); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
	// A correctly signed message with a bad peer or an op it does not
	// know (0, or past the partial seed) is malformed, not accepted.
	bad := sample()
	bad.Changes[0].Peer = "xyz"
	b, _ = EncodeUp(key1, bad)
	if _, err := DecodeUp(b, keyring); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad peer: %v", err)
	}
	for _, op := range []bittorrent.ChangeOp{0, bittorrent.OpPartial + 1, 0x7f} {
		bad = sample()
		bad.Changes[1].Op = op
		b, _ = EncodeUp(key1, bad)
		if _, err := DecodeUp(b, keyring); !errors.Is(err, ErrMalformed) {
			t.Fatalf("op %d: %v", op, err)
		}
	}
}

// TestStreamsAndLegacy: a message names its stream (0, the control
// stream, or a partition's); only updates go on a partition's stream, of
// a partition the sender has. The hub still reads version 2 (no streams,
// no partition count) from nodes; nodes read version 3 only.
func TestStreamsAndLegacy(t *testing.T) {
	testKeys()
	m := sample()
	m.Stream = 16
	b, err := EncodeUp(key1, m)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeUp(b, keyring); err != nil || got.Stream != 16 || got.Partitions != 16 {
		t.Fatalf("stream 16 of 16: %v %+v", err, got)
	}
	for name, bad := range map[string]func(*Message){
		"stream past the partitions": func(m *Message) { m.Stream = 17 },
		"hello on a partition":       func(m *Message) { m.Kind, m.Stream, m.Changes = KindHello, 3, nil },
	} {
		m := sample()
		bad(m)
		b, _ := EncodeUp(key1, m)
		if _, err := DecodeUp(b, keyring); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	legacy := sample()
	legacy.Version, legacy.Partitions = LegacyVersion, 0
	b, err = EncodeUp(key1, legacy)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeUp(b, keyring); err != nil || !reflect.DeepEqual(got, legacy) {
		t.Fatalf("version 2 from a node: %v %+v", err, got)
	}
	hb := &Message{Version: LegacyVersion, Kind: KindHubHeartbeat, Node: "hub", Session: 1, Seq: 1, Time: 5}
	b, _ = EncodeDown(hubPriv, hb)
	if _, err := DecodeDown(hubPub, b); !errors.Is(err, ErrVersion) {
		t.Fatalf("version 2 from the hub: %v", err)
	}
	if Partition(bittorrent.InfoHash{0x13}, 16) != 3 || Partition(bittorrent.InfoHash{0xff}, 1) != 0 {
		t.Fatal("partition of an info hash")
	}
}

// TestHubSignature: nodes check the hub's heartbeats with its public key,
// which cannot sign; a node's key cannot make a hub message.
func TestHubSignature(t *testing.T) {
	testKeys()
	hb := &Message{Version: Version, Kind: KindHubHeartbeat, Partitions: 16, Node: "hub", Session: 1, Seq: 1, Time: 5}
	b, err := EncodeDown(hubPriv, hb)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := DecodeDown(hubPub, b); err != nil || !reflect.DeepEqual(m, hb) {
		t.Fatalf("hub heartbeat: %v %+v", err, m)
	}
	if _, err := DecodeDown(otherPub, b); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("another network's hub key accepted it: %v", err)
	}
	// What a node can sign (HMAC, its key) is no hub message.
	forged, _ := EncodeUp(key1, hb)
	if _, err := DecodeDown(hubPub, forged); err == nil {
		t.Fatal("a node's message passed as the hub's")
	}
}

func TestNodeCredentials(t *testing.T) {
	testKeys()
	c, err := NodeCredentials(Config{Password: "secret"}, "node1")
	if err != nil || !bytes.Equal(c.Node, key1) || !bytes.Equal(c.Hub, hubPub) {
		t.Fatalf("from the secret: %v", err)
	}
	printed := Config{Key: hexOf(key1), HubKey: hexOf(hubPub)}
	c, err = NodeCredentials(printed, "node1")
	if err != nil || !bytes.Equal(c.Node, key1) || !bytes.Equal(c.Hub, hubPub) {
		t.Fatalf("from the printed keys: %v", err)
	}
	for _, bad := range []Config{{Key: "abc", HubKey: hexOf(hubPub)}, {Key: hexOf(key1), HubKey: "zz"}} {
		if _, err := NodeCredentials(bad, "node1"); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func FuzzDecode(f *testing.F) {
	testKeys()
	b, _ := EncodeUp(key1, sample())
	f.Add(b)
	hb, _ := EncodeUp(key2, &Message{Kind: KindHeartbeat, Node: "node2", Session: 1, Seq: 1, Time: 1})
	f.Add(hb)
	f.Add([]byte{2, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeUp(b, keyring)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes.
		k, _ := keyring(m.Node)
		again, err := EncodeUp(k, m)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
	})
}

// FuzzDecodeSigned reaches the parser behind the MAC: the fuzzed body is
// signed with node1's key before decoding, as node1 could.
func FuzzDecodeSigned(f *testing.F) {
	testKeys()
	b, _ := EncodeUp(key1, sample())
	f.Add(b[:len(b)-macLen])
	f.Add([]byte{2, 3, 5, 'n', 'o', 'd', 'e', '1', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{2, 1, 5, 'n', 'o', 'd', 'e', '1', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		mac := hmac.New(sha256.New, key1)
		mac.Write(body)
		signed := mac.Sum(bytes.Clone(body))
		m, err := DecodeUp(signed, func(string) (Key, error) { return key1, nil })
		if err != nil {
			return
		}
		again, err := EncodeUp(key1, m)
		if err != nil || !bytes.Equal(again, signed) {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
	})
}

// BenchmarkLinkBytesPerChange reports what one peer change costs on the
// link's wire in a full message (IPv4 peers without ids; one message of
// MaxChanges).
func BenchmarkLinkBytesPerChange(b *testing.B) {
	key := NewMaster("a link password of the benchmarks").NodeKey("node1")
	changes := make([]bittorrent.PeerChange, MaxChanges)
	for i := range changes {
		var ih bittorrent.InfoHash
		ih[0], ih[1] = byte(i), byte(i>>8)
		changes[i] = bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: time.Now().UnixMilli(), Peer: string([]byte{10, 0, byte(i >> 8), byte(i), 0x1a, 0xe1})}
	}
	m := &Message{Kind: KindUpdates, Node: "node1", Session: 1, Time: time.Now().UnixMilli(), Changes: changes}
	var n int
	for i := range b.N {
		m.Seq = uint64(i + 1)
		out, err := EncodeUp(key, m)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.ReportMetric(float64(n)/MaxChanges, "bytes/change")
}
