package redisstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestFunctionsRefuseHostileCalls: a Redis user may call the store's
// functions with any keys and arguments (a node's user may call them
// itself). Each call here is wrong in one way; each must fail at once
// with the function's own error and write nothing, never run long (a
// script that runs long after a write cannot be killed).
func TestFunctionsRefuseHostileCalls(t *testing.T) {
	for _, b := range backends() {
		if b.name == "cluster" {
			continue // the same functions; keys of one slot here
		}
		t.Run(b.name, func(t *testing.T) { testHostileCalls(t, b.client(t)) })
	}
}

func testHostileCalls(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	if err := LoadFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	ks, _ := NewKeyspace("hostile", "n1")
	k := ks.Swarm(hash("hostile calls"))
	akeys := k.announceList()
	rkeys := k.relayList()
	m := string([]byte{10, 0, 0, 1, 0x1a, 0xe1})
	header := []any{"61", "600", "1000", "(1000", "(4398046512104", "(8796093023208", "1000", "4398046512104", "8796093023208"}
	ann := func(score, member, flags, want, bind any) []any {
		return append(append([]any{}, header...), score, member, flags, want, bind)
	}
	relay := []any{"5000", "1000", "60000", "600", "1000", "4398046512104", "8796093023208"}
	rel := func(tail ...any) []any { return append(append([]any{}, relay...), tail...) }

	for _, tc := range []struct {
		what string
		fn   string
		keys []string
		args []any
		want string // in the error
	}{
		{"announce: three keys", library.announce, akeys[:3], ann("2000", m, "L0011", "50", ""), "wrong number"},
		{"announce: an argument short", library.announce, akeys[:], ann("2000", m, "L0011", "50", "")[:13], "wrong number"},
		{"announce: a huge numwant", library.announce, akeys[:], ann("2000", m, "L0011", "99999999999999", ""), "bad flags or numwant"},
		{"announce: numwant not a number", library.announce, akeys[:], ann("2000", m, "L0011", "inf", ""), "bad flags or numwant"},
		{"announce: a score beyond the bands", library.announce, akeys[:], ann("99999999999999", m, "L0011", "50", ""), "bad score"},
		{"announce: a score of nan", library.announce, akeys[:], ann("nan", m, "L0011", "50", ""), "bad score"},
		{"announce: a member of 7 bytes", library.announce, akeys[:], ann("2000", m+"x", "L0011", "50", ""), "bad member"},
		{"announce: an unknown op", library.announce, akeys[:], ann("2000", m, "Q0011", "50", ""), "bad flags"},
		{"announce: no random number", library.announce, akeys[:], ann("2000", m, "L001", "50", ""), "bad flags"},
		{"announce: two flags in one", library.announce, akeys[:], ann("2000", m, "L0011,L0011", "50", ""), "bad flags"},
		{"announce: flags and more", library.announce, akeys[:], ann("2000", m, "L0011x", "50", ""), "bad flags"},
		{"announce: a score with a space", library.announce, akeys[:], ann(" 2000", m, "L0011", "50", ""), "bad score"},
		{"announce: a score with a blank after", library.announce, akeys[:], ann("2000 ", m, "L0011", "50", ""), "bad score"},
		{"announce: a score of 1.5", library.announce, akeys[:], ann("1.5", m, "L0011", "50", ""), "bad score"},
		{"announce: a bad binding", library.announce, akeys[:], ann("2000", m, "L0011", "50", "=x"), "bad member or key"},
		{"announce: a negative TTL", library.announce, akeys[:], append([]any{"-1"}, ann("2000", m, "L0011", "50", "")[1:]...), "bad TTL"},
		{"announce: a range that is no range", library.announce, akeys[:], append(append([]any{"61", "600", "1000", "-inf"}, header[4:]...), "2000", m, "L0011", "50", ""), "bad range"},
		{"apply: a count of a trillion", library.apply, rkeys, rel("1000000000000", "L", "2000", m), "bad count"},
		{"apply: a negative count", library.apply, rkeys, rel("-1", "L", "2000", m), "bad count"},
		{"apply: more changes than arguments", library.apply, rkeys, rel("2", "L", "2000", m), "wrong number"},
		{"apply: arguments left over", library.apply, rkeys, rel("1", "L", "2000", m, "L"), "wrong number"},
		{"apply: an unknown op", library.apply, rkeys, rel("1", "Q", "2000", m), "bad change"},
		{"apply: a lifetime of 0", library.apply, rkeys, []any{"5000", "1000", "0", "600", "1000", "1", "1", "1", "L", "2000", m}, "bad times"},
		{"apply: two keys", library.apply, rkeys[:2], rel("1", "L", "2000", m), "wrong number"},
	} {
		start := time.Now()
		err := rdb.FCall(ctx, tc.fn, tc.keys, tc.args...).Err()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.what, err, tc.want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %s", tc.what, d)
		}
		if n, err := rdb.Exists(ctx, append(akeys[:], k.Buckets, k.Packs())...).Result(); err != nil || n != 0 {
			t.Fatalf("%s: wrote %d keys (%v)", tc.what, n, err)
		}
	}
	// The calls as the store makes them work.
	if err := rdb.FCall(ctx, library.announce, akeys[:], ann("2000", m, "L0011", "50", "")...).Err(); err != nil {
		t.Fatalf("a good announce: %v", err)
	}
	if err := rdb.FCall(ctx, library.apply, rkeys, rel("1", "S", "8796093024208", m)...).Err(); err != nil {
		t.Fatalf("a good relay: %v", err)
	}
	// What a writer of the keyspace left is checked too: a buckets hash
	// that claims a trillion buckets would make every loop over buckets
	// run for days.
	if err := rdb.Del(ctx, k.Peers).Err(); err != nil {
		t.Fatal(err)
	}
	for _, h := range [][2]string{{"1000000000000", "0"}, {"3", "0"}, {"0", "0"}, {"-4", "0"}, {"2048", "0"}, {"nan", "0"}, {"4", "nan"}, {"4", "-1"}, {"4", "inf"}} {
		b := h[0] + " " + h[1]
		if err := rdb.HSet(ctx, k.Buckets, "b", h[0], "S", h[1], "L", "0", "P", "0").Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := rdb.FCall(ctx, library.announce, akeys[:], ann("2000", m, "L0011", "50", "")...).Err()
		if err == nil || !strings.Contains(err.Error(), "corrupt buckets hash") {
			t.Errorf("b, S = %s: %v, want corrupt buckets hash", b, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("b, S = %s: took %s", b, d)
		}
	}
}

// TestStoreRefusesToStartWithoutFunctions: a store whose Redis lacks its
// library, with credentials that may not load it (a node's ACL user),
// says which command to run; one that may load it does, and says so.
func TestStoreRefusesToStartWithoutFunctions(t *testing.T) {
	srv := testkit.StartRedis(t)
	admin := srv.Client(t)
	ctx := context.Background()
	// -function: FUNCTION LOAD is in @write.
	if err := admin.Do(ctx, "ACL", "SETUSER", "node", "on", ">pw", "~*", "-@all", "+@read", "+@write", "-function", "+fcall", "+fcall_ro", "+ping", "+hello").Err(); err != nil {
		t.Fatal(err)
	}
	node := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "node", Password: "pw"})
	defer node.Close()
	cfg := Config{Prefix: "tl", NodeID: "n1", PeerLifetime: time.Minute, CompletedTTL: time.Hour, Timeout: 2 * time.Second}
	s, err := New(node, cfg)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Prepare(ctx)
	if !errors.Is(err, ErrFunctionsMissing) || loaded || !strings.Contains(err.Error(), "tracker redis-setup") {
		t.Fatalf("Prepare without the library, as a node: %v (loaded %v), want ErrFunctionsMissing naming tracker redis-setup", err, loaded)
	}
	// Announces fail with the same error, counted.
	if _, err := s.Announce(ctx, req(hash("no functions"), peer(1, false), 1, bittorrent.Started), 10); !errors.Is(err, ErrFunctionsMissing) {
		t.Fatalf("announce without the library: %v", err)
	}
	if s.FunctionsMissing() != 1 {
		t.Fatalf("%d calls counted without the library, want 1", s.FunctionsMissing())
	}
	// The administrator's credentials load it; the node then starts.
	a, _ := New(admin, cfg)
	if loaded, err := a.Prepare(ctx); err != nil || !loaded {
		t.Fatalf("Prepare as the administrator: %v (loaded %v), want the library loaded", err, loaded)
	}
	if loaded, err := s.Prepare(ctx); err != nil || loaded {
		t.Fatalf("Prepare as a node once loaded: %v (loaded %v)", err, loaded)
	}
	if _, err := s.Announce(ctx, req(hash("no functions"), peer(1, false), 1, bittorrent.Started), 10); err != nil {
		t.Fatal(err)
	}
}

// TestLibrariesCoexist: two releases' libraries live side by side (a
// rolling upgrade), and PruneFunctions removes the other one.
func TestLibrariesCoexist(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	ctx := context.Background()
	old := newLibrary(swarmSrc, announceSrc, applySrc+"\n-- an older release\n", rtcAnnounceSrc, rtcSignalSrc, refreshSrc, rtcReadSrc, rtcRefreshSrc)
	if old.Name == library.Name || !strings.HasPrefix(old.Name, LibraryPrefix) {
		t.Fatalf("library names %s and %s", old.Name, library.Name)
	}
	if err := rdb.FunctionLoad(ctx, old.Code).Err(); err != nil {
		t.Fatal(err)
	}
	if err := LoadFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if err := rdb.FCallRO(ctx, old.version, nil).Err(); err != nil {
		t.Fatalf("the older release's library: %v", err)
	}
	gone, err := PruneFunctions(ctx, rdb)
	if err != nil || len(gone) != 1 || gone[0] != old.Name {
		t.Fatalf("pruned %v (%v), want [%s]", gone, err, old.Name)
	}
	if err := CheckFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
}

// TestFunctionsOnEveryMaster: on a Redis Cluster each master holds its
// own functions; loading reaches them all, and a master that lost them
// (one added later, or flushed) is found by the check.
func TestFunctionsOnEveryMaster(t *testing.T) {
	rdb := testkit.SharedRedisCluster(t).Client(t)
	ctx := context.Background()
	if err := LoadFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if err := CheckFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	var masters atomic.Int32 // ForEachMaster calls concurrently
	if err := rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		masters.Add(1)
		return c.FCallRO(ctx, library.version, nil).Err()
	}); err != nil || masters.Load() < 2 {
		t.Fatalf("%d masters: %v", masters.Load(), err)
	}
	// One master without them.
	flushed := false
	var mu sync.Mutex
	rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		if !flushed {
			flushed = true
			return c.FunctionFlush(ctx).Err()
		}
		return nil
	})
	if err := CheckFunctions(ctx, rdb); !errors.Is(err, ErrFunctionsMissing) {
		t.Fatalf("check with a master flushed: %v, want ErrFunctionsMissing", err)
	}
	if err := LoadFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if err := CheckFunctions(ctx, rdb); err != nil {
		t.Fatal(err)
	}
}
