package redisstore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestHeldAndProcesses: the node page's counts, on one Redis and on a
// Redis Cluster (the swarms and the index parts spread over shards).
func TestHeldAndProcesses(t *testing.T) {
	for _, b := range backends()[:2] {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, clk := newStore(t, suite{rdb: b.client(t)}, time.Minute)
			ihs := []bittorrent.InfoHash{{1}, {2}, {3}}
			// Swarm 1: two seeders, one leecher; swarm 2: one leecher;
			// swarm 3: one seeder, not indexed (counted only when the
			// caller adds it, as a carried torrent).
			for i, a := range []struct {
				ih   int
				left uint64
			}{{0, 0}, {0, 0}, {0, 5}, {1, 5}, {2, 0}} {
				req := &bittorrent.AnnounceRequest{InfoHash: ihs[a.ih], Peer: peer(i, false), Left: a.left, Event: bittorrent.Started, NumWant: -1}
				if _, err := s.Announce(ctx, req, 10); err != nil {
					t.Fatal(err)
				}
			}
			now := float64(clk.Now().UnixMilli())
			for _, ih := range ihs[:2] {
				s.rdb.ZAdd(ctx, IndexKey(s.ks.prefix, s.ks.node, ih), redis.Z{Score: now, Member: string(ih[:])})
			}
			h, err := s.Held(ctx, 1000, nil)
			if err != nil || h != (Held{Swarms: 2, Seeders: 2, Leechers: 2}) {
				t.Fatalf("held %+v, %v", h, err)
			}
			if h, err = s.Held(ctx, 1000, ihs[1:]); err != nil || h != (Held{Swarms: 3, Seeders: 3, Leechers: 2}) {
				t.Fatalf("held with carried torrents %+v, %v", h, err)
			}
			// Expired peers are not held.
			clk.Add(2 * time.Minute)
			if h, err = s.Held(ctx, 1000, ihs); err != nil || h.Peers() != 0 || h.Swarms != 0 {
				t.Fatalf("held after the lifetime %+v, %v", h, err)
			}

			// Processes: two beat, one leaves, one goes silent.
			for _, p := range []string{"a", "b", "c"} {
				if err := s.Beat(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			s.Leave(ctx, "c")
			clk.Add(10 * time.Second)
			s.Beat(ctx, "a")
			got, err := s.Processes(ctx, 5*time.Second)
			if err != nil || !slices.Equal(got, []string{"a"}) {
				t.Fatalf("processes %v, %v", got, err)
			}
			if n := s.rdb.HLen(ctx, ProcsKey(s.ks.prefix, s.ks.node)).Val(); n != 1 {
				t.Fatalf("%d registry entries left, want the live one", n)
			}
		})
	}
}

// TestHeldLimit: a node with more indexed swarms than the limit counts the
// most recent and says it did not count all.
func TestHeldLimit(t *testing.T) {
	ctx := context.Background()
	s, clk := newStore(t, suite{rdb: backends()[0].client(t)}, time.Minute)
	now := float64(clk.Now().UnixMilli())
	for i := range 3 * IndexParts {
		ih := bittorrent.InfoHash{byte(i), byte(i >> 8)}
		s.Announce(ctx, &bittorrent.AnnounceRequest{InfoHash: ih, Peer: peer(i, false), Left: 1, Event: bittorrent.Started, NumWant: -1}, 1)
		s.rdb.ZAdd(ctx, IndexKey(s.ks.prefix, s.ks.node, ih), redis.Z{Score: now, Member: string(ih[:])})
	}
	h, err := s.Held(ctx, 2*IndexParts, nil)
	if err != nil || !h.Truncated || h.Swarms != 2*IndexParts {
		t.Fatalf("held %+v, %v", h, err)
	}
}
