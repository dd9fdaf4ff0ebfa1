package tracker

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Batch is a reusable set of announces and scrapes answered together (a
// UDP front end's batch of datagrams). Add requests and AddScrape
// scrapes, call AnswerBatch, then read Answers and Errs, ScrapeAnswers
// and ScrapeErrs, index for index; Reset to reuse it.
type Batch struct {
	Reqs    []*bittorrent.AnnounceRequest
	Answers []Answer
	Errs    []error

	Scrapes       []ScrapeRequest
	ScrapeAnswers [][]bittorrent.Scrape
	ScrapeErrs    []error

	store     bittorrent.StoreBatch
	idx, sidx []int
}

// ScrapeRequest is one scrape of a batch: the client's address (the rate
// limit's) and the info hashes.
type ScrapeRequest struct {
	From   netip.Addr
	Hashes []bittorrent.InfoHash
}

// Add appends a request to the batch.
func (b *Batch) Add(req *bittorrent.AnnounceRequest) { b.Reqs = append(b.Reqs, req) }

// AddScrape appends a scrape to the batch.
func (b *Batch) AddScrape(from netip.Addr, hashes []bittorrent.InfoHash) {
	b.Scrapes = append(b.Scrapes, ScrapeRequest{From: from, Hashes: hashes})
}

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() { b.Reqs, b.Scrapes = b.Reqs[:0], b.Scrapes[:0] }

// AnswerBatch answers every announce of b as Announce answers one, and
// every scrape as Scrape does, in one turn of the store: one round trip
// for the announces, one for all the scrapes.
func (s *Service) AnswerBatch(ctx context.Context, b *Batch) {
	n, m := len(b.Reqs), len(b.Scrapes)
	b.Answers = slices.Grow(b.Answers[:0], n)[:n]
	b.Errs = slices.Grow(b.Errs[:0], n)[:n]
	b.ScrapeAnswers = slices.Grow(b.ScrapeAnswers[:0], m)[:m]
	b.ScrapeErrs = slices.Grow(b.ScrapeErrs[:0], m)[:m]
	sb := &b.store
	sb.Announces, sb.NumWant, sb.Scrapes, b.idx, b.sidx = sb.Announces[:0], sb.NumWant[:0], sb.Scrapes[:0], b.idx[:0], b.sidx[:0]
	now := time.Now()
	for i, req := range b.Reqs {
		b.Answers[i], b.Errs[i] = Answer{}, nil
		if err := s.admit(req, now); err != nil {
			b.Errs[i] = err
			continue
		}
		sb.Announces, b.idx, sb.NumWant = append(sb.Announces, req), append(b.idx, i), append(sb.NumWant, s.numWant(req))
	}
	for i, sr := range b.Scrapes {
		b.ScrapeAnswers[i], b.ScrapeErrs[i] = nil, nil
		if err := s.admitScrape(sr.From, sr.Hashes, now); err != nil {
			b.ScrapeErrs[i] = err
			continue
		}
		sb.Scrapes, b.sidx = append(sb.Scrapes, sr.Hashes), append(b.sidx, i)
	}
	if len(sb.Announces) == 0 && len(sb.Scrapes) == 0 {
		return
	}
	na, ns := len(sb.Announces), len(sb.Scrapes)
	sb.AnnounceResults = slices.Grow(sb.AnnounceResults[:0], na)[:na]
	sb.AnnounceErrs = slices.Grow(sb.AnnounceErrs[:0], na)[:na]
	sb.ScrapeResults = slices.Grow(sb.ScrapeResults[:0], ns)[:ns]
	sb.ScrapeErrs = slices.Grow(sb.ScrapeErrs[:0], ns)[:ns]
	s.store.Batch(ctx, sb)
	for j, i := range b.idx {
		if err := sb.AnnounceErrs[j]; err != nil {
			b.Errs[i] = s.announceFailed(ctx, b.Reqs[i], err)
			continue
		}
		s.accepted(b.Reqs[i], sb.AnnounceResults[j], now)
		b.Answers[i] = s.answer(b.Reqs[i], sb.AnnounceResults[j])
	}
	for j, i := range b.sidx {
		b.ScrapeAnswers[i], b.ScrapeErrs[i] = s.scraped(ctx, sb.ScrapeResults[j], sb.ScrapeErrs[j])
	}
}
