package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// storeOnOwnRedis is a store on a Redis of its own, whose server-wide
// counts (INFO commandstats) are the test's alone.
func storeOnOwnRedis(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	srv := testkit.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	s, err := New(rdb, Config{Prefix: "test", NodeID: "n1", PeerLifetime: time.Hour, CompletedTTL: time.Hour, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, rdb
}

// TestPipelinerBatchesScrapes: the scrapes of batches queued by several
// callers while the worker is busy (UDP workers' batches) go to Redis in
// one round trip, beside the one script call of their
// announces, and each scrape gets its own swarms' counts.
func TestPipelinerBatchesScrapes(t *testing.T) {
	s, rdb := storeOnOwnRedis(t)
	ctx := context.Background()
	// Swarm i has i+1 leechers.
	const swarms = 6
	for i := range swarms {
		for j := range i + 1 {
			if _, err := s.Announce(ctx, req(benchHash(i), peer(100*i+j, false), 1, bittorrent.Started), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	hook := &testkit.TripCounter{Command: "zcount"} // scrapes read counts
	rdb.AddHook(hook)
	p := NewPipeliner(s, 1, 1024, 64)
	const callers, per = 8, 3
	batches := make([]bittorrent.StoreBatch, callers)
	var wg sync.WaitGroup
	for c := range callers {
		b := &batches[c]
		b.Announces, b.NumWant = []*bittorrent.AnnounceRequest{req(benchHash(100+c), peer(c, false), 1, bittorrent.Started)}, []int{10}
		b.AnnounceResults, b.AnnounceErrs = make([]bittorrent.AnnounceResult, 1), make([]error, 1)
		for k := range per {
			b.Scrapes = append(b.Scrapes, []bittorrent.InfoHash{benchHash((c + k) % swarms), benchHash((c + k + 1) % swarms), hash("no such swarm")})
		}
		b.ScrapeResults, b.ScrapeErrs = make([][]bittorrent.Scrape, per), make([]error, per)
		wg.Go(func() { p.Batch(ctx, b) })
	}
	// Queue everything before the worker runs: it takes it in one go.
	for deadline := time.Now().Add(5 * time.Second); len(p.calls) < callers; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items queued", len(p.calls), callers)
		}
	}
	scripts := scriptCallCount(t, rdb)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go p.Run(runCtx)
	wg.Wait()
	if n := hook.Count(); n != 1 {
		t.Fatalf("%d scrapes took %d round trips, want 1", callers*per, n)
	}
	if n := scriptCallCount(t, rdb) - scripts; n != 1 {
		t.Fatalf("the announces beside them took %d script calls, want 1", n)
	}
	for c := range callers {
		b := &batches[c]
		if b.AnnounceErrs[0] != nil || b.AnnounceResults[0].Leechers != 1 {
			t.Fatalf("caller %d's announce: %+v %v", c, b.AnnounceResults[0], b.AnnounceErrs[0])
		}
		for k := range per {
			got := b.ScrapeResults[k]
			if b.ScrapeErrs[k] != nil || len(got) != 3 {
				t.Fatalf("caller %d scrape %d: %v %v", c, k, got, b.ScrapeErrs[k])
			}
			for x, want := range []int{(c+k)%swarms + 1, (c+k+1)%swarms + 1, 0} {
				if got[x].Incomplete != want {
					t.Fatalf("caller %d scrape %d hash %d: %d leechers, want %d", c, k, x, got[x].Incomplete, want)
				}
			}
		}
	}
	// The store without a pipeline: one round trip for all the scrapes.
	hook.Reset()
	b := bittorrent.StoreBatch{Scrapes: batches[0].Scrapes, ScrapeResults: make([][]bittorrent.Scrape, per), ScrapeErrs: make([]error, per)}
	s.Batch(ctx, &b)
	if n := hook.Count(); n != 1 || b.ScrapeErrs[0] != nil || b.ScrapeResults[per-1][1].Incomplete != (per)%swarms+1 {
		t.Fatalf("Store.Batch: %d round trips, %v %v", n, b.ScrapeResults, b.ScrapeErrs)
	}
}

// TestScrapesAnswer: each scrape of a shared read is answered as a Scrape
// of its own hashes would be: an error only when some of its swarms could
// not be read, no counts when none could.
func TestScrapesAnswer(t *testing.T) {
	ok, gone := bittorrent.Scrape{Complete: 1}, bittorrent.Scrape{Unavailable: true}
	fail := errors.New("shard down")
	tests := []struct {
		name string
		res  []bittorrent.Scrape
		err  error
		want string // per scrape: its counts' availability and its error
	}{
		{"all read", []bittorrent.Scrape{ok, ok, ok}, nil, "[ok ok] <nil>|[ok] <nil>"},
		{"one scrape partly", []bittorrent.Scrape{ok, gone, ok}, fail, "[ok gone] shard down|[ok] <nil>"},
		{"one scrape not at all", []bittorrent.Scrape{gone, gone, ok}, fail, "[] shard down|[ok] <nil>"},
		{"nothing read", nil, fail, "[] shard down|[] shard down"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sc scrapes
			sc.add(make([]bittorrent.InfoHash, 2))
			sc.add(make([]bittorrent.InfoHash, 1))
			sc.answer(tc.res, tc.err)
			var parts []string
			for i := range sc.len() {
				var marks []string
				for _, s := range sc.out[i] {
					marks = append(marks, map[bool]string{true: "gone", false: "ok"}[s.Unavailable])
				}
				parts = append(parts, fmt.Sprintf("[%s] %v", strings.Join(marks, " "), sc.errs[i]))
			}
			if got := strings.Join(parts, "|"); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}
