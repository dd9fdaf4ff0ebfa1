package allowed

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// v1 returns a small v1 torrent named name, and its info hash in hex.
func v1(t *testing.T, name string, pad int) ([]byte, string) {
	t.Helper()
	b, err := bencode.Marshal(map[string]any{"info": map[string]any{
		"name": name, "piece length": 16384, "length": 10, "pieces": strings.Repeat("p", 20),
	}, "comment": strings.Repeat("c", pad)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := torrentfile.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := f.InfoHashV1()
	return b, bittorrent.InfoHash(h).String()
}

// nestedTorrent is the catalog value that crashed the hub: an info value
// of depth lists inside each other.
func nestedTorrent(depth int) string {
	return "d4:info" + strings.Repeat("l", depth) + strings.Repeat("e", depth) + "e"
}

// TestShareNeedsTheOfferingMembersConsent: what a member's nodes offer
// reaches its own nodes, and another member's only when the hub's
// operator wrote that member (or "*") into its share_to; a receiving node
// raising its accept flag does not widen it.
func TestShareNeedsTheOfferingMembersConsent(t *testing.T) {
	rdbA, rdbB := testkit.StartRedis(t).Client(t), testkit.StartRedis(t).Client(t)
	ctx := context.Background()
	const p = "consent"
	b, ih := v1(t, "private", 0)
	rdbA.HSet(ctx, redisstore.CatalogKey(p, "a1"), ih, b)
	rdbA.Set(ctx, redisstore.AcceptKey(p, "a2"), "1", time.Minute)
	rdbB.Set(ctx, redisstore.AcceptKey(p, "b1"), "1", time.Minute)
	inbox := func(rdb *redis.Client, node string) bool {
		return rdb.HExists(ctx, redisstore.InboxKey(p, node), ih).Val()
	}
	for _, tc := range []struct {
		shareTo []string
		toB     bool
	}{{nil, false}, {[]string{"C"}, false}, {[]string{"B"}, true}, {[]string{"*"}, true}} {
		rdbA.Del(ctx, redisstore.InboxKey(p, "a2"))
		rdbB.Del(ctx, redisstore.InboxKey(p, "b1"))
		nodes := map[string]Place{
			"a1": {Keys: redisstore.NewSharing(rdbA, p), Member: "A", ShareTo: tc.shareTo},
			"a2": {Keys: redisstore.NewSharing(rdbA, p), Member: "A", ShareTo: tc.shareTo},
			"b1": {Keys: redisstore.NewSharing(rdbB, p), Member: "B"},
		}
		if _, err := Share(ctx, nodes, DefaultShareLimits); err != nil {
			t.Fatal(err)
		}
		if !inbox(rdbA, "a2") {
			t.Fatalf("share_to %v: a node of the offering member did not get it", tc.shareTo)
		}
		if inbox(rdbB, "b1") != tc.toB {
			t.Fatalf("share_to %v: member B got it: %v, want %v", tc.shareTo, inbox(rdbB, "b1"), tc.toB)
		}
	}
}

// TestShareBoundsWhatAMemberSends: one resync copies at most the caps of
// torrents and bytes from one member (the rest waits), reads no torrent
// larger than MaxSize (the 8 MB nested value that crashed the hub is
// refused by its size, unread; a 2 MB one by the check, at once), refuses
// a torrent filed under another torrent's info hash, and reads no catalog
// longer than MaxCatalog.
func TestShareBoundsWhatAMemberSends(t *testing.T) {
	rdbA, rdbB := testkit.StartRedis(t).Client(t), testkit.StartRedis(t).Client(t)
	ctx := context.Background()
	const p = "caps"
	var want []string
	for i := range 5 {
		b, ih := v1(t, fmt.Sprint("t", i), 1000)
		rdbA.HSet(ctx, redisstore.CatalogKey(p, "a1"), ih, b)
		want = append(want, ih)
	}
	other, _ := v1(t, "another", 0)
	rdbA.HSet(ctx, redisstore.CatalogKey(p, "a2"),
		strings.Repeat("ff", 20), other, // filed under a name not its own
		strings.Repeat("ee", 20), nestedTorrent(4_000_000), // 8 MB
		strings.Repeat("dd", 20), nestedTorrent(1_000_000)) // 2 MB
	rdbB.Set(ctx, redisstore.AcceptKey(p, "b1"), "1", time.Minute)
	nodes := map[string]Place{
		"a1": {Keys: redisstore.NewSharing(rdbA, p), Member: "A", ShareTo: []string{"B"}},
		"a2": {Keys: redisstore.NewSharing(rdbA, p), Member: "A", ShareTo: []string{"B"}},
		"b1": {Keys: redisstore.NewSharing(rdbB, p), Member: "B"},
	}
	start := time.Now()
	rep, err := Share(ctx, nodes, ShareLimits{MaxTorrents: 100, MaxBytes: 32 << 20, MaxSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("share took %s", took)
	}
	if rep.Copied != 5 || rep.Refused[RefusedWrongName] != 1 || rep.Refused[RefusedTooLarge] != 1 || rep.Refused[RefusedInvalid] != 1 {
		t.Fatalf("copied %d, refused %v", rep.Copied, rep.Refused)
	}
	got := rdbB.HKeys(ctx, redisstore.InboxKey(p, "b1")).Val()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("b1's inbox holds %v, want %v", got, want)
	}

	// Caps: two torrents, or 2,500 bytes (two of these), per resync.
	for _, lim := range []ShareLimits{{MaxTorrents: 2, MaxBytes: 1 << 20, MaxSize: 1 << 20}, {MaxTorrents: 100, MaxBytes: 2500, MaxSize: 2000}} {
		rdbB.Del(ctx, redisstore.InboxKey(p, "b1"))
		rep, err := Share(ctx, nodes, lim)
		if err != nil {
			t.Fatal(err)
		}
		if n := rdbB.HLen(ctx, redisstore.InboxKey(p, "b1")).Val(); n != 2 || rep.Copied != 2 || rep.Refused[RefusedOverCap] == 0 {
			t.Fatalf("%+v: %d in the inbox, copied %d, refused %v", lim, n, rep.Copied, rep.Refused)
		}
	}

	// A catalog longer than MaxCatalog is not read.
	pipe := rdbA.Pipeline()
	for i := range MaxCatalog + 1 {
		pipe.HSet(ctx, redisstore.CatalogKey(p, "a3"), fmt.Sprintf("%040x", i), "x")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	nodes["a3"] = Place{Keys: redisstore.NewSharing(rdbA, p), Member: "A", ShareTo: []string{"B"}}
	rep, err = Share(ctx, nodes, DefaultShareLimits)
	if err != nil || rep.Refused[RefusedCatalogLarge] != 1 {
		t.Fatalf("a catalog of %d: refused %v (%v)", MaxCatalog+1, rep.Refused, err)
	}
}

// newSharing returns a Set of node in a directory of its own, with
// sharing options o.
func newSharing(t *testing.T, rdb redis.UniversalClient, prefix, node string, o ShareOptions) (*Set, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := New(redisstore.NewAllowedKeys(rdb, prefix, node), dir, time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Share(o)
	return s, dir
}

// TestInboxRefusesWrongNamesAndDeclined: the node checks again what the
// hub copied: a torrent filed under another torrent's info hash is not
// stored (nor shown as carried), and neither is one its operator deleted;
// both are counted by reason.
func TestInboxRefusesWrongNamesAndDeclined(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	const p = "inboxcheck"
	refused := map[string]int{}
	s, dir := newSharing(t, rdb, p, "n", ShareOptions{Accept: true, Refused: func(r string) { refused[r]++ }})
	other, _ := v1(t, "other", 0)
	declined, dih := v1(t, "declined", 0)
	good, gih := v1(t, "good", 0)
	wrong := strings.Repeat("ff", 20)
	rdb.ZAdd(ctx, redisstore.DeclinedKey(p, "n"), redis.Z{Score: 1, Member: dih})
	rdb.HSet(ctx, redisstore.InboxKey(p, "n"), wrong, other, dih, declined, gih, good, strings.Repeat("cc", 20), nestedTorrent(100_000))
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if refused[RefusedWrongName] != 1 || refused[RefusedDeclined] != 1 || refused[RefusedInvalid] != 1 {
		t.Fatalf("refused %v", refused)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != gih+".torrent" {
		t.Fatalf("directory holds %v, want only %s.torrent", entries, gih)
	}
	if n := rdb.Exists(ctx, redisstore.InboxKey(p, "n")).Val(); n != 0 {
		t.Fatal("the inbox was not emptied")
	}
	// The admin upload takes the same parser: the 8 MB nested value is a
	// client error, at once.
	start := time.Now()
	if _, err := s.Add(ctx, []byte(nestedTorrent(4_000_000))); err == nil || !strings.Contains(err.Error(), "nested deeper") || time.Since(start) > time.Second {
		t.Fatalf("nested upload: %v after %s", err, time.Since(start))
	}
}

// TestDeletedSharedTorrentStaysDeleted: a shared torrent the operator
// deletes (admin API, or its file removed by hand) is not copied to the
// node again by the hub, nor taken from its inbox; adding it again by hand
// carries it again.
func TestDeletedSharedTorrentStaysDeleted(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	const p = "declined"
	b1, ih1 := v1(t, "one", 0)
	b2, ih2 := v1(t, "two", 0)
	rdb.HSet(ctx, redisstore.CatalogKey(p, "offers"), ih1, b1, ih2, b2)
	s, dir := newSharing(t, rdb, p, "n", ShareOptions{Accept: true})
	nodes := map[string]Place{"offers": {Keys: redisstore.NewSharing(rdb, p)}, "n": {Keys: redisstore.NewSharing(rdb, p)}}
	resync := func() {
		t.Helper()
		if _, err := Share(ctx, nodes, DefaultShareLimits); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil { // raises the accept flag
		t.Fatal(err)
	}
	resync()
	var h1, h2 bittorrent.InfoHash
	copy(h1[:], mustHex(t, ih1))
	copy(h2[:], mustHex(t, ih2))
	if !s.Carries(h1) || !s.Carries(h2) {
		t.Fatal("the shared torrents were not taken")
	}
	// Deleted through the admin API (Remove), and by hand.
	if err := s.Remove(ctx, h1); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, ih2+".torrent")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := Share(ctx, nodes, DefaultShareLimits); err != nil {
			t.Fatal(err)
		}
		if n := rdb.HLen(ctx, redisstore.InboxKey(p, "n")).Val(); n != 0 {
			t.Fatalf("the hub copied %d declined torrents again", n)
		}
		resync()
	}
	if s.Carries(h1) || s.Carries(h2) {
		t.Fatalf("a deleted shared torrent came back: %v %v", s.Carries(h1), s.Carries(h2))
	}
	// Even if it reaches the inbox, it is not taken.
	rdb.HSet(ctx, redisstore.InboxKey(p, "n"), ih1, b1)
	if err := s.Sync(ctx); err != nil || s.Carries(h1) {
		t.Fatalf("a declined torrent taken from the inbox (%v)", err)
	}
	// The operator adds it again: carried, no longer declined.
	if _, err := s.Add(ctx, b1); err != nil || !s.Carries(h1) {
		t.Fatalf("re-added: carried %v (%v)", s.Carries(h1), err)
	}
	if rdb.ZScore(ctx, redisstore.DeclinedKey(p, "n"), ih1).Err() != redis.Nil {
		t.Fatal("a torrent added again is still declined")
	}
	// The list is bounded: the oldest entries go.
	pipe := rdb.Pipeline()
	for i := range MaxDeclined + 10 {
		pipe.ZAdd(ctx, redisstore.DeclinedKey(p, "n"), redis.Z{Score: float64(i), Member: fmt.Sprintf("%040x", i)})
	}
	pipe.Exec(ctx)
	if err := s.Remove(ctx, h2); err != ErrNotCarried {
		t.Fatalf("removing what is not carried: %v", err)
	}
	if err := s.decline(ctx, []string{ih2}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, redisstore.DeclinedKey(p, "n")).Val(); n != MaxDeclined {
		t.Fatalf("declined holds %d, want %d", n, MaxDeclined)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOfferNeedsOfferAndNotReceived: a node that accepts but does not
// offer raises its accept flag and keeps no catalog (one left from when it
// offered is withdrawn); a node that offers offers its own torrents, not
// those it received.
func TestOfferNeedsOfferAndNotReceived(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	ctx := context.Background()
	const p = "offer"
	s, dir := newSharing(t, rdb, p, "n", ShareOptions{Accept: true})
	own, ownIH := v1(t, "own", 0)
	got, gotIH := v1(t, "received", 0)
	os.WriteFile(filepath.Join(dir, "own.torrent"), own, 0o644)
	rdb.HSet(ctx, redisstore.CatalogKey(p, "n"), ownIH, own) // offered before
	rdb.HSet(ctx, redisstore.InboxKey(p, "n"), gotIH, got)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if rdb.Exists(ctx, redisstore.AcceptKey(p, "n")).Val() != 1 || rdb.Exists(ctx, redisstore.CatalogKey(p, "n")).Val() != 0 {
		t.Fatal("accepting without offering: no accept flag, or a catalog kept")
	}
	s.Share(ShareOptions{Accept: true, Offer: true})
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if cat := rdb.HKeys(ctx, redisstore.CatalogKey(p, "n")).Val(); !slices.Equal(cat, []string{ownIH}) {
		t.Fatalf("catalog %v, want only the node's own %s", cat, ownIH)
	}
}
