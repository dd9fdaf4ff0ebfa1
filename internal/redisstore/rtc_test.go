package redisstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// newRTCPair starts a Redis with the function library and returns two
// processes of node n1 on it, whose clock is what clock holds.
func newRTCPair(t *testing.T, clock *time.Time) (rdb *redis.Client, a, b *RTC) {
	t.Helper()
	rdb = testkit.StartRedis(t).Client(t)
	cfg := RTCConfig{Prefix: "tl", NodeID: "n1", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: time.Second}
	a, err := NewRTC(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = NewRTC(rdb, cfg)
	if err := LoadFunctions(context.Background(), rdb); err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return *clock }
	b.now = a.now
	return rdb, a, b
}

// TestRTCPeers: WebRTC peers expire by score, a closed socket's leave
// removes a peer only from the process that holds it, offers go to live
// peers only, and the keys carry TTLs.
func TestRTCPeers(t *testing.T) {
	now := time.Now()
	rdb, a, b := newRTCPair(t, &now)
	ctx := context.Background()
	ih := bittorrent.InfoHash{1}
	p1, p2 := bittorrent.PeerID{1}, bittorrent.PeerID{2}
	if _, err := a.Announce(ctx, &bittorrent.RTCAnnounce{InfoHash: ih, PeerID: p1, Op: bittorrent.RTCLeecher}); err != nil {
		t.Fatal(err)
	}
	res, err := b.Announce(ctx, &bittorrent.RTCAnnounce{InfoHash: ih, PeerID: p2, Op: bittorrent.RTCSeeder,
		OfferIDs: []bittorrent.OfferID{{9}}, Payloads: [][]byte{[]byte(`{"type":"offer"}`)}})
	if err != nil || res.Leechers != 1 || res.Seeders != 1 || res.Sent != 1 || res.Remote != 1 || len(res.Local) != 0 {
		t.Fatalf("b's announce: %+v %v", res, err)
	}
	keys := a.ks.RTC(ih)
	if ttl := rdb.PTTL(ctx, keys.Peers).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("peers' TTL %s", ttl)
	}
	// b's leave of p1 (held by a) removes nothing.
	if err := b.Leave(ctx, []bittorrent.InfoHash{ih}, []bittorrent.PeerID{p1}); err != nil {
		t.Fatal(err)
	}
	if s, _ := a.Scrape(ctx, []bittorrent.InfoHash{ih}); s[0].Incomplete != 1 {
		t.Fatalf("after another process's leave: %+v", s[0])
	}
	// An offer from a to a peer of its own is returned, not published.
	res, _ = a.Announce(ctx, &bittorrent.RTCAnnounce{InfoHash: ih, PeerID: bittorrent.PeerID{3}, Op: bittorrent.RTCLeecher,
		OfferIDs: []bittorrent.OfferID{{7}, {8}}, Payloads: [][]byte{[]byte(`{}`), []byte(`{}`)}})
	if res.Sent != 2 || res.Remote != 1 || len(res.Local) != 1 || res.Local[0].To != p1 {
		t.Fatalf("offers from a: %+v", res)
	}
	// A minute later, without announces, nobody is live.
	now = now.Add(time.Minute + time.Second)
	if s, _ := a.Scrape(ctx, []bittorrent.InfoHash{ih}); s[0].Incomplete != 0 || s[0].Complete != 0 {
		t.Fatalf("after the lifetime: %+v", s[0])
	}
	sent, _, err := a.Signal(ctx, &bittorrent.Signal{Kind: bittorrent.SignalAnswer, To: p2, InfoHash: ih, From: p1, Payload: []byte(`{}`)})
	if err != nil || sent {
		t.Fatalf("answer to an expired peer: sent=%v %v", sent, err)
	}
	// The next write trims the expired peers and their owners.
	res, _ = a.Announce(ctx, &bittorrent.RTCAnnounce{InfoHash: ih, PeerID: p1, Op: bittorrent.RTCLeecher, Completed: true,
		OfferIDs: []bittorrent.OfferID{{5}}, Payloads: [][]byte{[]byte(`{}`)}})
	if res.Leechers != 1 || res.Sent != 0 {
		t.Fatalf("after trimming: %+v", res)
	}
	if n := rdb.ZCard(ctx, keys.Peers).Val(); n != 1 {
		t.Fatalf("%d members after trimming, want 1", n)
	}
	if n := rdb.HLen(ctx, keys.Owners).Val(); n != 1 {
		t.Fatalf("%d owners after trimming, want 1", n)
	}
	if s, _ := a.Scrape(ctx, []bittorrent.InfoHash{ih}); s[0].Downloaded != 1 {
		t.Fatalf("completed: %+v", s[0])
	}
	// A stop removes it; a's leave of it then is a no-op.
	a.Announce(ctx, &bittorrent.RTCAnnounce{InfoHash: ih, PeerID: p1, Op: bittorrent.RTCStop})
	if n := rdb.ZCard(ctx, keys.Peers).Val(); n != 0 {
		t.Fatalf("%d members after the stop", n)
	}
}

// TestRTCFunctionRefusesTooManyOffers: a node's user may call the store's
// functions with any arguments; an announce with more offers than any
// client sends is refused before it writes anything.
func TestRTCFunctionRefusesTooManyOffers(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	ctx := context.Background()
	if err := LoadFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	r, err := NewRTC(rdb, RTCConfig{Prefix: "tl", NodeID: "n1", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a := &bittorrent.RTCAnnounce{InfoHash: bittorrent.InfoHash{9}, Op: bittorrent.RTCLeecher}
	for range bittorrent.MaxOffers + 1 {
		a.Payloads = append(a.Payloads, []byte("{}"))
		a.OfferIDs = append(a.OfferIDs, bittorrent.OfferID{})
	}
	if err := r.announceCmd(ctx, rdb, a).Err(); err == nil || !strings.Contains(err.Error(), "offers") {
		t.Fatalf("an announce of %d offers: %v", len(a.Payloads), err)
	}
	if n := rdb.Exists(ctx, r.ks.RTC(a.InfoHash).Peers).Val(); n != 0 {
		t.Fatal("a refused call wrote the swarm")
	}
}
