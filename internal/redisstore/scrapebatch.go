package redisstore

import (
	"context"
	"slices"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Batch answers a front end's batch of announces and scrapes: the
// announces in one round trip (AnnounceBatch), every scrape of the batch
// together in one more (one pipeline; under Redis Cluster one per Redis
// node involved), instead of one round trip per scrape.
func (s *Store) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	if len(b.Announces) > 0 {
		s.AnnounceBatch(ctx, b.Announces, b.NumWant, b.AnnounceResults, b.AnnounceErrs)
	}
	if len(b.Scrapes) > 0 {
		var sc scrapes
		for _, h := range b.Scrapes {
			sc.add(h)
		}
		sc.answer(s.Scrape(ctx, sc.hashes))
		copy(b.ScrapeResults, sc.out)
		copy(b.ScrapeErrs, sc.errs)
	}
}

// scrapes are several scrapes answered by one Store.Scrape: their info
// hashes end to end (a copy: the caller may reuse its own once it stops
// waiting), and once answered each one's part of the answer.
type scrapes struct {
	hashes []bittorrent.InfoHash
	lens   []int
	out    [][]bittorrent.Scrape
	errs   []error
}

func (sc *scrapes) add(hashes []bittorrent.InfoHash) {
	sc.hashes = append(sc.hashes, hashes...)
	sc.lens = append(sc.lens, len(hashes))
}

func (sc *scrapes) len() int { return len(sc.lens) }

// answer cuts the answer of all the hashes (res, err as Store.Scrape
// returns them) into each scrape's, each as Store.Scrape would have
// answered it alone: its counts, with the error when some of its swarms
// could not be read; only the error when none could.
func (sc *scrapes) answer(res []bittorrent.Scrape, err error) {
	sc.out, sc.errs = make([][]bittorrent.Scrape, len(sc.lens)), make([]error, len(sc.lens))
	off := 0
	for i, n := range sc.lens {
		if res == nil {
			sc.errs[i] = err
			continue
		}
		part := res[off : off+n : off+n]
		off += n
		switch {
		case !slices.ContainsFunc(part, func(s bittorrent.Scrape) bool { return s.Unavailable }):
			sc.out[i] = part
		case slices.ContainsFunc(part, func(s bittorrent.Scrape) bool { return !s.Unavailable }):
			sc.out[i], sc.errs[i] = part, err
		default:
			sc.errs[i] = err
		}
	}
}

// finish answers every scrape with err.
func (sc *scrapes) finish(err error) { sc.answer(nil, err) }

// weight is what the scrapes count for in a pipeline's batch, in
// announces: a hash costs Redis about a quarter of an announce (as the
// node's rate limit charges it).
func (sc *scrapes) weight() int {
	w := 0
	for _, n := range sc.lens {
		w += (n + 3) / 4
	}
	return w
}

// answerScrapes runs the scrapes of a pipeline's batch in one Store.Scrape
// and hands each item its part.
func (s *Store) answerScrapes(ctx context.Context, items []*pipelinedCall) {
	var all scrapes
	for _, c := range items {
		all.hashes = append(all.hashes, c.scr.hashes...)
		all.lens = append(all.lens, c.scr.lens...)
	}
	if all.len() == 0 {
		return
	}
	all.answer(s.Scrape(ctx, all.hashes))
	k := 0
	for _, c := range items {
		n := c.scr.len()
		c.scr.out, c.scr.errs = all.out[k:k+n:k+n], all.errs[k:k+n:k+n]
		k += n
	}
}
