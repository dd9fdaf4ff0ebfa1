package tracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// fakeStore records what it was asked and fails when told to.
type fakeStore struct {
	numWant   int
	batchWant []int
	// batchScrapes is how many scrapes the last batch carried.
	batchScrapes int
	err          error
	scraped      []bittorrent.InfoHash
	// unavailable marks the first scraped hash unreadable, with err (as
	// a Redis Cluster with a shard down answers).
	unavailable bool
}

func (f *fakeStore) Announce(_ context.Context, _ *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	f.numWant = numWant
	return bittorrent.AnnounceResult{Seeders: 1, Change: bittorrent.PeerChange{Seen: 42}}, f.err
}

func (f *fakeStore) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	f.batchWant = append(f.batchWant[:0], b.NumWant...)
	for i, r := range b.Announces {
		b.AnnounceResults[i], b.AnnounceErrs[i] = f.Announce(ctx, r, b.NumWant[i])
		if r.Left == 666 {
			b.AnnounceErrs[i] = errors.New("this one failed")
		}
	}
	f.batchScrapes = len(b.Scrapes)
	for i, h := range b.Scrapes {
		b.ScrapeResults[i], b.ScrapeErrs[i] = f.Scrape(ctx, h)
	}
}

func (f *fakeStore) Scrape(_ context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	f.scraped = hashes
	out := make([]bittorrent.Scrape, len(hashes))
	if f.unavailable {
		out[0].Unavailable = true
	}
	return out, f.err
}

func (f *fakeStore) Ping(context.Context) error { return f.err }

type sink struct{ got []int64 }

func (s *sink) LocalChange(c bittorrent.PeerChange) { s.got = append(s.got, c.Seen) }

type gate map[bittorrent.InfoHash]bool

func (g gate) Carries(ih bittorrent.InfoHash) bool { return g[ih] }

var testCfg = Config{Interval: 30 * time.Minute, MinInterval: 5 * time.Minute, IntervalJitter: time.Minute, NumWantDefault: 50, NumWantMax: 200}

func newService(t *testing.T, st Store, opts Options, logTo *bytes.Buffer) (*Service, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(testCfg, st, opts, slog.New(slog.NewTextHandler(logTo, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func TestAnnounceRules(t *testing.T) {
	st, sk := &fakeStore{}, &sink{}
	carried := bittorrent.InfoHash{1}
	svc, _ := newService(t, st, Options{Sink: sk, Gate: gate{carried: true}}, &bytes.Buffer{})
	ctx := context.Background()
	for _, tc := range []struct{ asked, want int }{{-1, 50}, {0, 0}, {7, 7}, {1 << 20, 200}} {
		ans, err := svc.Announce(ctx, &bittorrent.AnnounceRequest{InfoHash: carried, NumWant: tc.asked})
		if err != nil {
			t.Fatal(err)
		}
		if st.numWant != tc.want {
			t.Errorf("numwant %d: store asked for %d, want %d", tc.asked, st.numWant, tc.want)
		}
		if ans.Interval < 30*time.Minute || ans.Interval >= 31*time.Minute || ans.MinInterval != 5*time.Minute || ans.Seeders != 1 {
			t.Errorf("answer %+v", ans)
		}
	}
	if len(sk.got) != 4 || sk.got[0] != 42 {
		t.Fatalf("the link got %v, want every accepted change", sk.got)
	}
	_, err := svc.Announce(ctx, &bittorrent.AnnounceRequest{InfoHash: bittorrent.InfoHash{2}})
	if ce, ok := bittorrent.IsClientError(err); !ok || string(ce) != NotAuthorized || Outcome(err) != "client_error" {
		t.Fatalf("torrent not carried: %v", err)
	}
	if _, err := svc.Scrape(ctx, netip.Addr{}, []bittorrent.InfoHash{carried, {2}}); ClientMessage(err) != NotAuthorized {
		t.Fatalf("scrape of a torrent not carried: %v", err)
	}
	if len(sk.got) != 4 {
		t.Fatal("a refused announce reached the link")
	}
}

// TestAnnounceBatch: a batch gets the same rules as single announces and
// scrapes, each request its own answer or error; refused ones never reach
// the store.
func TestAnnounceBatch(t *testing.T) {
	st, sk := &fakeStore{}, &sink{}
	carried := bittorrent.InfoHash{1}
	svc, _ := newService(t, st, Options{Sink: sk, Gate: gate{carried: true}}, &bytes.Buffer{})
	var b Batch
	for round := 0; round < 2; round++ {
		b.Reset()
		b.Add(&bittorrent.AnnounceRequest{InfoHash: carried, NumWant: -1})
		b.Add(&bittorrent.AnnounceRequest{InfoHash: bittorrent.InfoHash{9}, NumWant: 5})
		b.Add(&bittorrent.AnnounceRequest{InfoHash: carried, NumWant: 1000})
		b.Add(&bittorrent.AnnounceRequest{InfoHash: carried, NumWant: 3, Left: 666})
		b.AddScrape(netip.Addr{}, []bittorrent.InfoHash{carried, carried})
		b.AddScrape(netip.Addr{}, []bittorrent.InfoHash{carried, {9}})
		svc.AnswerBatch(context.Background(), &b)
		if st.batchScrapes != 1 || b.ScrapeErrs[0] != nil || len(b.ScrapeAnswers[0]) != 2 || ClientMessage(b.ScrapeErrs[1]) != NotAuthorized {
			t.Fatalf("scrapes: %d to the store, answers %v, errors %v", st.batchScrapes, b.ScrapeAnswers, b.ScrapeErrs)
		}
		if fmt.Sprint(st.batchWant) != "[50 200 3]" {
			t.Fatalf("store asked for %v", st.batchWant)
		}
		if b.Errs[0] != nil || b.Errs[2] != nil || b.Answers[0].Seeders != 1 || b.Answers[0].Interval < 30*time.Minute {
			t.Fatalf("answers %+v errors %v", b.Answers, b.Errs)
		}
		if ClientMessage(b.Errs[1]) != NotAuthorized || Outcome(b.Errs[3]) != "error" {
			t.Fatalf("errors %v", b.Errs)
		}
	}
	if len(sk.got) != 4 {
		t.Fatalf("the link got %d changes, want the 2 accepted of each round", len(sk.got))
	}
}

func TestStoreFailures(t *testing.T) {
	st := &fakeStore{err: errors.New("connection refused")}
	var logs bytes.Buffer
	svc, reg := newService(t, st, Options{}, &logs)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		_, err := svc.Announce(ctx, &bittorrent.AnnounceRequest{NumWant: -1})
		if !errors.Is(err, ErrUnavailable) || Outcome(err) != "error" || ClientMessage(err) != Unavailable {
			t.Fatalf("store failure: %v", err)
		}
	}
	// One line for a hundred failures: sampled, never a line per request.
	if n := strings.Count(logs.String(), "announce failed"); n != 1 {
		t.Fatalf("%d log lines for 100 failures:\n%s", n, logs.String())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 100 {
		t.Fatalf("failures counted: %v", mfs)
	}
	// A caller that went away is not the store's fault.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := svc.Announce(gone, &bittorrent.AnnounceRequest{}); Outcome(err) != "canceled" {
		t.Fatalf("canceled caller: %v (%s)", err, Outcome(err))
	}
	// A client error from the store is the client's to see.
	st.err = fmt.Errorf("store: %w", bittorrent.ClientError("bad peer"))
	if _, err := svc.Announce(ctx, &bittorrent.AnnounceRequest{}); ClientMessage(err) != "bad peer" {
		t.Fatalf("client error from the store: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testCfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mut  func(*Config)
		name string
	}{
		{func(c *Config) { c.Interval = 0 }, "TRACKER_ANNOUNCE_INTERVAL"},
		{func(c *Config) { c.MinInterval = time.Hour }, "TRACKER_MIN_INTERVAL"},
		{func(c *Config) { c.IntervalJitter = 20 * time.Minute }, "TRACKER_INTERVAL_JITTER"},
		{func(c *Config) { c.NumWantMax = 0 }, "TRACKER_NUMWANT_MAX"},
		{func(c *Config) { c.NumWantDefault = 201 }, "TRACKER_NUMWANT_DEFAULT"},
	} {
		c := testCfg
		tc.mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestPartialScrape: swarms the store could not read are marked, the rest
// answered; the failure is the store's, counted; when nothing could be
// read, the scrape fails.
func TestPartialScrape(t *testing.T) {
	st := &fakeStore{err: errors.New("dial tcp: connection refused"), unavailable: true}
	svc, reg := newService(t, st, Options{}, &bytes.Buffer{})
	res, err := svc.Scrape(context.Background(), netip.Addr{}, make([]bittorrent.InfoHash, 3))
	if err != nil || len(res) != 3 || !res[0].Unavailable || res[1].Unavailable {
		t.Fatalf("partial scrape: %+v %v", res, err)
	}
	mfs, _ := reg.Gather()
	if len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("the store's failure not counted: %v", mfs)
	}
	// A store that read nothing answers its error alone.
	svc, _ = newService(t, &fakeStoreNil{st}, Options{}, &bytes.Buffer{})
	if res, err := svc.Scrape(context.Background(), netip.Addr{}, make([]bittorrent.InfoHash, 3)); res != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a scrape that read nothing: %v %v", res, err)
	}
}

// fakeStoreNil is fakeStore answering no result with its error.
type fakeStoreNil struct{ *fakeStore }

func (f *fakeStoreNil) Scrape(context.Context, []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	return nil, f.err
}
