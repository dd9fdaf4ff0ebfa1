package redisstore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestRTCSoft: a small swarm is read whole with the process of each peer
// (a large one only counted); a refresh moves a peer's last seen forward
// and its keys' TTL, and never adds back a peer that stopped or left,
// never takes one from another process, never changes its class, never
// goes back in time; Publish reaches the process named.
func TestRTCSoft(t *testing.T) {
	now := time.Now()
	rdb, a, b := newRTCPair(t, &now)
	ctx := context.Background()
	ih, big := bittorrent.InfoHash{1}, bittorrent.InfoHash{2}
	p1, p2, p3, p4 := bittorrent.PeerID{1}, bittorrent.PeerID{2}, bittorrent.PeerID{3}, bittorrent.PeerID{4}
	announce := func(r *RTC, ih bittorrent.InfoHash, p bittorrent.PeerID, op bittorrent.RTCOp) {
		t.Helper()
		if _, err := r.Announce(ctx, &bittorrent.RTCAnnounce{InfoHash: ih, PeerID: p, Op: op}); err != nil {
			t.Fatal(err)
		}
	}
	announce(a, ih, p1, bittorrent.RTCLeecher)
	announce(a, ih, p2, bittorrent.RTCSeeder)
	announce(b, ih, p3, bittorrent.RTCLeecher)
	for i := range 5 {
		announce(a, big, bittorrent.PeerID{byte(i)}, bittorrent.RTCLeecher)
	}

	sws, err := a.ReadRTCSwarms(ctx, []bittorrent.InfoHash{ih, big, {3}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	sw := sws[0]
	if !sw.Whole || sw.Leechers != 2 || sw.Seeders != 1 || len(sw.Peers) != 3 {
		t.Fatalf("read: %+v", sw)
	}
	procs := map[bittorrent.PeerID]bittorrent.RTCPeer{}
	for _, p := range sw.Peers {
		procs[p.ID] = p
	}
	if procs[p1].Process != a.Process() || procs[p1].Seeder || procs[p3].Process != b.Process() || !procs[p2].Seeder {
		t.Fatalf("read peers: %+v", sw.Peers)
	}
	if sws[1].Whole || sws[1].Leechers != 5 || len(sws[1].Peers) != 0 {
		t.Fatalf("a swarm over the bound: %+v", sws[1])
	}
	if sws[2].Whole || sws[2].Leechers != 0 {
		t.Fatalf("no swarm: %+v", sws[2])
	}

	keys := a.ks.RTC(ih)
	score := func(p bittorrent.PeerID) float64 {
		t.Helper()
		return rdb.ZScore(ctx, keys.Peers, string(p[:])).Val()
	}
	at := now.Add(10 * time.Second).UnixMilli()
	rdb.PExpire(ctx, keys.Peers, time.Second)
	gone, err := a.RefreshRTC(ctx, []bittorrent.RTCRefresh{
		{InfoHash: ih, PeerID: p1, At: at},                // applied
		{InfoHash: ih, PeerID: p2, Seeder: false, At: at}, // another class: not applied, returned
		{InfoHash: ih, PeerID: p3, At: at},                // b's: gone for a
		{InfoHash: ih, PeerID: p4, At: at},                // never joined: gone, not added
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range gone {
		ids = append(ids, string(g.PeerID[:]))
	}
	slices.Sort(ids)
	want := []string{string(p2[:]), string(p3[:]), string(p4[:])}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("returned %q, want p2 (another class), p3 (b's) and p4 (never joined): %q", ids, want)
	}
	if s := score(p1); s != PeerScore(bittorrent.OpLeecher, at) {
		t.Fatalf("p1's score %v after its refresh, want %v", s, PeerScore(bittorrent.OpLeecher, at))
	}
	if s := score(p2); s != PeerScore(bittorrent.OpSeeder, now.UnixMilli()) {
		t.Fatalf("p2 (a seeder) moved by a leecher's refresh: %v", s)
	}
	if s := score(p3); s != PeerScore(bittorrent.OpLeecher, now.UnixMilli()) {
		t.Fatalf("b's p3 moved by a's refresh: %v", s)
	}
	if rdb.ZScore(ctx, keys.Peers, string(p4[:])).Err() == nil {
		t.Fatal("a refresh added a peer that never joined")
	}
	if ttl := rdb.PTTL(ctx, keys.Peers).Val(); ttl < 30*time.Second {
		t.Fatalf("peers' TTL %s after a refresh", ttl)
	}
	// An older refresh (written late) does not go back in time.
	if _, err := a.RefreshRTC(ctx, []bittorrent.RTCRefresh{{InfoHash: ih, PeerID: p1, At: at - 5000}}); err != nil {
		t.Fatal(err)
	}
	if s := score(p1); s != PeerScore(bittorrent.OpLeecher, at) {
		t.Fatalf("p1 went back in time: %v", s)
	}
	// A stopped peer's refresh, written after its stop, does not bring it back.
	announce(a, ih, p1, bittorrent.RTCStop)
	gone, err = a.RefreshRTC(ctx, []bittorrent.RTCRefresh{{InfoHash: ih, PeerID: p1, At: at + 1000}})
	if err != nil || len(gone) != 1 {
		t.Fatalf("refresh after a stop: gone %+v, %v", gone, err)
	}
	if rdb.ZScore(ctx, keys.Peers, string(p1[:])).Err() == nil {
		t.Fatal("a refresh brought back a stopped peer")
	}

	// Publish reaches b's channel.
	ps := rdb.Subscribe(ctx, b.channel)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	sig := bittorrent.Signal{Kind: bittorrent.SignalOffer, To: p3, InfoHash: ih, From: p2, OfferID: bittorrent.OfferID{7}, Payload: []byte(`{"type":"offer"}`)}
	if err := a.Publish(ctx, []bittorrent.RemoteSignal{{Process: b.Process(), Signal: sig}}); err != nil {
		t.Fatal(err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := bittorrent.ParseSignal([]byte(msg.Payload))
	if err != nil || got.To != p3 || got.From != p2 || got.OfferID != sig.OfferID || string(got.Payload) != string(sig.Payload) {
		t.Fatalf("published %+v %v", got, err)
	}
}

// TestRTCRefreshFunctionBounds: a call with more refreshes than the
// store makes, or malformed, is refused before it writes.
func TestRTCRefreshFunctionBounds(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	ctx := context.Background()
	if err := LoadFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	keys := []string{"tl:{n1:x}w", "tl:{n1:x}wo"}
	const id = "01234567890123456789"
	cutoff := int64(1_700_000_000_000)
	seeders := classBand(bittorrent.OpSeeder)
	header := func() []any { return []any{"proc", 60000, cutoff, seeders, seeders + cutoff} }
	refresh := []any{id, PeerScore(bittorrent.OpLeecher, cutoff+5), classBand(bittorrent.OpLeecher)}
	call := func(args ...any) error { return rdb.FCall(ctx, library.rtcRefresh, keys, args...).Err() }
	// A live peer held by another process, which a refused call must not
	// trim.
	rdb.ZAdd(ctx, keys[0], redis.Z{Score: float64(PeerScore(bittorrent.OpLeecher, cutoff+10)), Member: "live"})
	if err := call(append(header(), refresh...)...); err != nil {
		t.Fatalf("a well-formed refresh was refused: %v", err)
	}
	many := header()
	for range maxRTCRefresh + 1 {
		many = append(many, refresh...)
	}
	for name, args := range map[string][]any{
		"too many refreshes":           many,
		"fewer than five arguments":    {"proc", 60000},
		"a refresh cut short":          append(header(), id, 1),
		"a TTL of 0":                   append([]any{"proc", 0, cutoff, seeders, seeders + cutoff}, refresh...),
		"a cutoff past the band":       append([]any{"proc", 60000, band + 5, seeders, seeders + band + 5}, refresh...),
		"cutoffs that disagree":        append([]any{"proc", 60000, cutoff, seeders, seeders + cutoff + 1}, refresh...),
		"a short id":                   append(header(), "short", refresh[1], refresh[2]),
		"a score that is not a number": append(header(), id, "x", refresh[2]),
		"a band start off a band":      append(header(), id, refresh[1], 5),
	} {
		if err := call(args...); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
	if rdb.ZScore(ctx, keys[0], "live").Err() != nil {
		t.Fatal("a refused call trimmed a live peer")
	}
	if err := rdb.FCall(ctx, library.rtcRead, keys, "(0", "(1", "(2", "(3").Err(); err == nil {
		t.Error("rtc_read without its limit: taken")
	}
	if err := rdb.FCall(ctx, library.rtcRead, keys, "(0", "(1", "(2", "(3", maxWant+1).Err(); err == nil {
		t.Error("rtc_read with a limit past maxWant: taken")
	}
}
