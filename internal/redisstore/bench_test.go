package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/loadgen"
	"github.com/tracklink/tracklink/internal/redistest"
)

// BenchmarkAnnounce measures one announce (one script call) against a real
// redis-server, in swarms of several sizes, from several goroutines.
func BenchmarkAnnounce(b *testing.B) {
	for _, swarm := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("swarm=%d", swarm), func(b *testing.B) {
			srv := redistest.Start(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			s := benchStore(b, rdb)
			const torrents = 100
			fill(b, s, torrents, swarm)
			var seq atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					i := int(seq.Add(1))
					r := req(benchHash(i%torrents), peer(i%swarm, false), uint64(i%2), bittorrent.None)
					if _, err := s.Announce(ctx, r, 50); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkScrape measures a scrape of 10 hashes.
func BenchmarkScrape(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	s := benchStore(b, rdb)
	fill(b, s, 100, 10)
	hashes := make([]bittorrent.InfoHash, 10)
	for i := range hashes {
		hashes[i] = benchHash(i * 7)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Scrape(context.Background(), hashes); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMemoryPerPeer fills 10k torrents of 10 peers (100k peers, half
// seeders) into a fresh redis-server and reports used_memory growth per
// peer. Target: at most 64 bytes.
// With peerids=true (TRACKER_STORE_PEER_IDS) each member is 20 bytes longer.
func BenchmarkMemoryPerPeer(b *testing.B) {
	for _, v := range []struct{ ids, keys bool }{{false, false}, {true, false}, {false, true}} {
		b.Run(fmt.Sprintf("peerids=%v/keys=%v", v.ids, v.keys), func(b *testing.B) {
			for range b.N {
				srv := redistest.Start(b)
				rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
				s := benchStore(b, rdb)
				s.peerIDs, s.bind = v.ids, v.keys
				before := usedMemory(b, rdb)
				const torrents, per = 10000, 10
				fill(b, s, torrents, per)
				after := usedMemory(b, rdb)
				b.ReportMetric(float64(after-before)/float64(torrents*per), "bytes/peer")
				rdb.Close()
				srv.Stop()
			}
		})
	}
}

func benchStore(b *testing.B, rdb redis.UniversalClient) *Store {
	s, err := New(rdb, Config{Prefix: "tl", NodeID: "node1", PeerLifetime: 45 * time.Minute, CompletedTTL: 30 * 24 * time.Hour, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchHash(i int) bittorrent.InfoHash {
	var h bittorrent.InfoHash
	copy(h[:], fmt.Sprintf("bench-torrent-%06d", i))
	return h
}

// benchReq is bench peer p's announce; with key bindings on, the peer
// sends a key of its own, as real clients do.
func benchReq(s *Store, ih bittorrent.InfoHash, p int, left uint64, ev bittorrent.Event) *bittorrent.AnnounceRequest {
	r := req(ih, peer(p, false), left, ev)
	if s.bind {
		r.Key = fmt.Sprintf("%08x", p)
	}
	return r
}

// fill announces torrents x per peers, half of them seeders, from 16 goroutines.
func fill(b *testing.B, s *Store, torrents, per int) {
	b.Helper()
	var wg sync.WaitGroup
	var next atomic.Int64
	total := int64(torrents * per)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				t, p := int(i)/per, int(i)%per
				if _, err := s.Announce(context.Background(), benchReq(s, benchHash(t), p, uint64(p%2), bittorrent.Started), 0); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func usedMemory(b *testing.B, rdb redis.UniversalClient) int64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

// BenchmarkRedisCPUPerAnnounce reports the Redis CPU time one announce
// costs (used_cpu_user + used_cpu_sys over the run, per announce), sent in
// batches of 16 as the UDP front end sends them, in 10k swarms of 10 peers
// (half seeders), numwant 50, for both families (HTTP) and one (UDP).
func BenchmarkRedisCPUPerAnnounce(b *testing.B) {
	for _, v := range []struct {
		fam  bittorrent.Family
		keys bool
	}{{bittorrent.BothFamilies, false}, {bittorrent.OnlyIPv4, false}, {bittorrent.BothFamilies, true}} {
		fam := v.fam
		b.Run(fmt.Sprintf("family=%d/keys=%v", fam, v.keys), func(b *testing.B) {
			srv := redistest.Start(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			s := benchStore(b, rdb)
			s.bind = v.keys
			const torrents, swarm, batch = 10000, 10, 16
			fill(b, s, torrents, swarm)
			ctx := context.Background()
			reqs := make([]*bittorrent.AnnounceRequest, batch)
			want := make([]int, batch)
			out, errs := make([]bittorrent.AnnounceResult, batch), make([]error, batch)
			before, scriptBefore := loadgen.RedisCPU(context.Background(), rdb), scriptUsec(b, rdb)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				for j := range reqs {
					k := i + j
					reqs[j] = benchReq(s, benchHash(k%torrents), (k/torrents)%swarm, uint64(k%2), bittorrent.None)
					reqs[j].Family, want[j] = fam, 50
				}
				s.AnnounceBatch(ctx, reqs, want, out, errs)
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric((loadgen.RedisCPU(context.Background(), rdb)-before)*1e6/float64(b.N), "redis-µs/announce")
			b.ReportMetric((scriptUsec(b, rdb)-scriptBefore)/float64(b.N), "script-µs/announce")
		})
	}
}

// scriptUsec is the time Redis spent running EVALSHA so far, µs
// (INFO commandstats): the script alone, without the network.
func scriptUsec(tb testing.TB, rdb *redis.Client) float64 {
	s, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "cmdstat_evalsha:"); ok {
			for _, f := range strings.Split(v, ",") {
				if u, ok := strings.CutPrefix(f, "usec="); ok {
					x, _ := strconv.ParseFloat(u, 64)
					return x
				}
			}
		}
	}
	return 0
}
