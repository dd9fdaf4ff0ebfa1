package allowed

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// hybrid returns a hybrid (v1 + v2) torrent and its two announced hashes.
func hybrid(t *testing.T) ([]byte, bittorrent.InfoHash, bittorrent.InfoHash) {
	t.Helper()
	b, err := bencode.Marshal(map[string]any{"info": map[string]any{
		"name": "h", "piece length": 16384, "meta version": 2, "length": 10, "pieces": strings.Repeat("p", 20),
		"file tree": map[string]any{"h": map[string]any{"": map[string]any{"length": 10}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := torrentfile.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	h1, _ := f.InfoHashV1()
	h2, _ := f.InfoHashV2()
	var t2 bittorrent.InfoHash
	copy(t2[:], h2[:20])
	return b, h1, t2
}

func TestSetCarriesBothHashesAndAgreesInRedis(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	dir := t.TempDir()
	b, v1, v2 := hybrid(t)
	os.WriteFile(filepath.Join(dir, "h.torrent"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "junk.torrent"), []byte("nonsense"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(redisstore.NewAllowedKeys(rdb, "allowtest", "n1"), dir, time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	s.OnChange = func() { changes++ }
	ctx := context.Background()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.Carries(v1) || !s.Carries(v2) || len(s.List()) != 2 || changes != 1 {
		t.Fatalf("carries v1 %v v2 %v, list %v, changes %d", s.Carries(v1), s.Carries(v2), s.List(), changes)
	}
	// A second replica reading the same keyspace agrees; so does the hub.
	if n := rdb.SCard(ctx, redisstore.AllowedKey("allowtest", "n1")).Val(); n != 2 {
		t.Fatalf("redis set holds %d", n)
	}
	c := NewCarrier(redisstore.NewCarriedSets(rdb, "allowtest"), time.Minute)
	if !c.Carries(ctx, "n1", v2) || c.Carries(ctx, "n1", bittorrent.InfoHash{1}) || !c.Carries(ctx, "not-in-mode", bittorrent.InfoHash{1}) {
		t.Fatal("carrier disagrees")
	}
	if got, err := s.File(v2); err != nil || string(got) != string(b) {
		t.Fatalf("file by v2 hash: %v", err)
	}
	if err := s.Remove(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if s.Carries(v1) || s.Carries(v2) || changes != 2 {
		t.Fatal("still carried after removal")
	}
	if _, err := s.Add(ctx, []byte("d4:infoi1ee")); err == nil {
		t.Fatal("invalid upload accepted")
	}
	if _, err := New(redisstore.NewAllowedKeys(rdb, "allowtest", "n1"), filepath.Join(dir, "missing"), time.Second, log); err == nil {
		t.Fatal("missing directory accepted")
	}
}

// TestShareCopiesValidOffersAndRefusesInvalid: the hub's half copies an
// offered torrent into the inbox of each accepting node that lacks it, in
// that node's own Redis (another member's here), and counts (without
// copying) an offer that is not a valid torrent.
func TestShareCopiesValidOffersAndRefusesInvalid(t *testing.T) {
	// Node b is another member's: its keys are on a Redis of their own.
	rdb, other := testkit.SharedRedis(t).Client(t), testkit.StartRedis(t).Client(t)
	ctx := context.Background()
	const p = "sharetest"
	b, v1, _ := hybrid(t)
	good := hex.EncodeToString(v1[:])
	bad := strings.Repeat("ab", 20)
	rdb.HSet(ctx, redisstore.CatalogKey(p, "a"), good, b, bad, "not a torrent")
	other.Set(ctx, redisstore.AcceptKey(p, "b"), "1", time.Minute)
	rdb.SAdd(ctx, redisstore.AllowedKey(p, "c"), string(v1[:]))
	rdb.Set(ctx, redisstore.AcceptKey(p, "c"), "1", time.Minute)
	here, there := Place{Keys: redisstore.NewSharing(rdb, p), Member: "A", ShareTo: []string{"B"}}, Place{Keys: redisstore.NewSharing(other, p), Member: "B"}
	rep, err := Share(ctx, map[string]Place{"a": here, "b": there, "c": here, "d": here}, DefaultShareLimits)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Copied != 1 || rep.Refused[RefusedInvalid] != 1 {
		t.Fatalf("copied %d refused %v, want 1 and 1 invalid", rep.Copied, rep.Refused)
	}
	if rdb.Exists(ctx, redisstore.InboxKey(p, "b")).Val() != 0 {
		t.Fatal("b's inbox was written into a's Redis")
	}
	if got, _ := other.HGet(ctx, redisstore.InboxKey(p, "b"), good).Bytes(); string(got) != string(b) {
		t.Fatal("accepting node b did not get the valid offer")
	}
	for _, n := range []string{"b", "c", "d"} {
		if rdb.HExists(ctx, redisstore.InboxKey(p, n), bad).Val() {
			t.Fatalf("invalid offer copied to %s", n)
		}
	}
	if rdb.Exists(ctx, redisstore.InboxKey(p, "c"), redisstore.InboxKey(p, "d")).Val() != 0 {
		t.Fatal("copied to a node that carries the torrent or does not accept shares")
	}
}

// TestCarrierKeepsLastSetWhenUnreadable: when a node's set cannot be read
// (its Redis down), the set last read stands; a node never read carries
// nothing.
func TestCarrierKeepsLastSetWhenUnreadable(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	in, out := bittorrent.InfoHash{1}, bittorrent.InfoHash{2}
	rdb.Set(ctx, redisstore.AllowedModeKey("carry", "a"), "1", time.Minute)
	rdb.SAdd(ctx, redisstore.AllowedKey("carry", "a"), string(in[:]))
	c := NewCarrier(redisstore.NewCarriedSets(rdb, "carry"), time.Millisecond)
	if !c.Carries(ctx, "a", in) || c.Carries(ctx, "a", out) {
		t.Fatal("set read wrong")
	}
	srv.Stop()
	time.Sleep(5 * time.Millisecond) // past refresh: read again in the background, and fail
	before := c.nodes["a"]
	c.Carries(ctx, "a", in)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		done := c.nodes["a"] != before
		c.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background read did not end")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !c.Carries(ctx, "a", in) || c.Carries(ctx, "a", out) {
		t.Fatal("the last set read does not stand while Redis is down")
	}
	if c.Carries(ctx, "b", in) {
		t.Fatal("a node never read carries a torrent")
	}
}

// TestTorrentsListsNamesAndWhatWasShared: the panel's list has each carried
// torrent's name and size, and when a shared one was received.
func TestTorrentsListsNamesAndWhatWasShared(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	const p = "listtest"
	s, err := New(redisstore.NewAllowedKeys(rdb, p, "n"), t.TempDir(), time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Share(ShareOptions{Accept: true})
	b, v1, _ := hybrid(t)
	ih := hex.EncodeToString(v1[:])
	rdb.HSet(ctx, redisstore.InboxKey(p, "n"), ih, b)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ts, err := s.Torrents(ctx)
	if err != nil || len(ts) != 1 || ts[0].InfoHash != ih || ts[0].Name == "" || ts[0].Size == 0 || ts[0].Received.IsZero() {
		t.Fatalf("torrents %+v, %v", ts, err)
	}
	if err := s.Remove(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if rdb.HExists(ctx, redisstore.ReceivedKey(p, "n"), ih).Val() {
		t.Fatal("a removed torrent is still recorded as received")
	}
	if _, err := s.Add(ctx, b); err != nil {
		t.Fatal(err)
	}
	if ts, _ := s.Torrents(ctx); len(ts) != 1 || !ts[0].Received.IsZero() {
		t.Fatalf("an uploaded torrent listed as received: %+v", ts)
	}
}

// TestRescanReadsOnlyChangedFiles: a file whose name, size and time are
// as at the last scan is not read again (its content replaced behind the
// scan's back does not change what is carried), a changed one is, and a
// refused one is logged once, not at every rescan.
func TestRescanReadsOnlyChangedFiles(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	dir := t.TempDir()
	var logged strings.Builder
	s, err := New(redisstore.NewAllowedKeys(rdb, "rescan", "n"), dir, time.Minute, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b, ih := v1(t, "kept", 0)
	path := filepath.Join(dir, "kept.torrent")
	os.WriteFile(path, b, 0o644)
	os.WriteFile(filepath.Join(dir, "junk.torrent"), []byte("junk"), 0o644)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var h bittorrent.InfoHash
	copy(h[:], mustHex(t, ih))
	st, _ := os.Stat(path)
	// Same size, same time, other bytes: not read again.
	garbage := []byte(strings.Repeat("x", len(b)))
	os.WriteFile(path, garbage, 0o644)
	os.Chtimes(path, st.ModTime(), st.ModTime())
	for range 3 {
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !s.Carries(h) {
		t.Fatal("an unchanged file was read again")
	}
	if n := strings.Count(logged.String(), "torrent file refused"); n != 1 {
		t.Fatalf("a bad file logged %d times in 4 scans, want once", n)
	}
	// Changed time: read again, and refused.
	os.Chtimes(path, st.ModTime().Add(time.Second), st.ModTime().Add(time.Second))
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Carries(h) {
		t.Fatal("a changed file was not read again")
	}
}

// TestCarrierBoundsWhatItReads: a node's carried set is its own to write;
// one larger than the bound is not read, and the node carries nothing for
// the hub (its relays dropped, counted by the hub) until it is within
// bounds. Listed tells a torrent of the node's own list from one it
// carries because it carries everything.
func TestCarrierBoundsWhatItReads(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	const prefix = "carrybound"
	rdb.Set(ctx, redisstore.AllowedModeKey(prefix, "big"), "1", 0)
	for i := range 20 {
		rdb.SAdd(ctx, redisstore.AllowedKey(prefix, "big"), string(make([]byte, 19))+string(rune(i)))
	}
	c := NewCarrier(redisstore.NewCarriedSets(rdb, prefix), time.Minute)
	c.max = 10
	listed := bittorrent.InfoHash{}
	if c.Carries(ctx, "big", listed) || c.Listed(ctx, "big", listed) {
		t.Fatal("a set beyond the bound was read")
	}
	rdb.Set(ctx, redisstore.AllowedModeKey(prefix, "small"), "1", 0)
	rdb.SAdd(ctx, redisstore.AllowedKey(prefix, "small"), string(listed[:]))
	if !c.Carries(ctx, "small", listed) || !c.Listed(ctx, "small", listed) {
		t.Fatal("a node's own listed torrent: not carried or not listed")
	}
	if !c.Carries(ctx, "open", listed) || c.Listed(ctx, "open", listed) {
		t.Fatal("a node without the mode flag: not carrying, or listing")
	}
}
