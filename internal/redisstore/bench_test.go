package redisstore

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// BenchmarkAnnounce measures one announce (one script call) against a real
// redis-server, in swarms of several sizes, from several goroutines.
func BenchmarkAnnounce(b *testing.B) {
	for _, swarm := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("swarm=%d", swarm), func(b *testing.B) {
			srv := testkit.StartRedis(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			s := benchStore(b, rdb)
			const torrents = 100
			fill(b, s, torrents, swarm)
			b.ReportAllocs()
			b.ResetTimer()
			reannounce(b, s, torrents, swarm)
		})
	}
}

// reannounce runs b.N re-announces (numwant 50) of the peers fill put in
// torrents swarms of swarm peers, from GOMAXPROCS goroutines.
func reannounce(b *testing.B, s *Store, torrents, swarm int) {
	var seq atomic.Int64
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
}

// BenchmarkScrape measures a scrape of 10 hashes.
func BenchmarkScrape(b *testing.B) {
	srv := testkit.StartRedis(b)
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
				srv := testkit.StartRedis(b)
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
	n, ok := infoInt(b, rdb, "memory", "used_memory:")
	if !ok {
		b.Fatal("no used_memory in INFO memory")
	}
	return n
}

// BenchmarkRedisCPUPerAnnounce reports the Redis CPU time one announce
// costs (used_cpu_user + used_cpu_sys over the run, per announce), sent in
// batches of 16 as the UDP front end sends them, in 10k swarms of 10 peers
// (half seeders), numwant 50, for both families (HTTP) and one (UDP); and
// in 100 swarms of 1,000 (in buckets) likewise. Run beside Redis
// on one core (taskset), ns/op is what an announce costs the node's store
// and Redis together.
func BenchmarkRedisCPUPerAnnounce(b *testing.B) {
	for _, v := range []struct {
		fam             bittorrent.Family
		keys            bool
		torrents, swarm int
	}{
		{bittorrent.BothFamilies, false, 10000, 10},
		{bittorrent.OnlyIPv4, false, 10000, 10},
		{bittorrent.BothFamilies, true, 10000, 10},
		{bittorrent.BothFamilies, false, 100, 1000},
		{bittorrent.OnlyIPv4, false, 100, 1000},
	} {
		fam := v.fam
		b.Run(fmt.Sprintf("swarm=%d/family=%d/keys=%v", v.swarm, fam, v.keys), func(b *testing.B) {
			srv := testkit.StartRedis(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			s := benchStore(b, rdb)
			s.bind = v.keys
			torrents, swarm := v.torrents, v.swarm
			const batch = 16
			fill(b, s, torrents, swarm)
			ctx := context.Background()
			reqs := make([]*bittorrent.AnnounceRequest, batch)
			want := make([]int, batch)
			out, errs := make([]bittorrent.AnnounceResult, batch), make([]error, batch)
			before, scriptBefore, callsBefore := RedisCPU(context.Background(), rdb), scriptUsec(b, rdb), scriptCalls(b, rdb)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				for j := range reqs {
					k := i + j
					// Re-announces: each peer keeps the class it was
					// filled with (fill: half seeders), as most do.
					p := (k / torrents) % swarm
					reqs[j] = benchReq(s, benchHash(k%torrents), p, uint64(p%2), bittorrent.None)
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
			b.ReportMetric((RedisCPU(context.Background(), rdb)-before)*1e6/float64(b.N), "redis-µs/announce")
			b.ReportMetric((scriptUsec(b, rdb)-scriptBefore)/float64(b.N), "script-µs/announce")
			b.ReportMetric(float64(scriptCalls(b, rdb)-callsBefore)/float64(b.N), "calls/announce")
		})
	}
}

// scriptCalls is how many commands Redis ran so far, scripts' own calls
// included, but not the scripts themselves or INFO (INFO commandstats): a
// count that, unlike CPU time, the machine's noise does not move.
func scriptCalls(tb testing.TB, rdb *redis.Client) int64 {
	s, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(s, "\r\n") {
		name, v, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || name == "fcall" || name == "info" {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			if c, ok := strings.CutPrefix(f, "calls="); ok {
				x, _ := strconv.ParseInt(c, 10, 64)
				n += x
			}
		}
	}
	return n
}

// scriptUsec is the time Redis spent running FCALL so far, µs
// (INFO commandstats): the script alone, without the network.
func scriptUsec(tb testing.TB, rdb *redis.Client) float64 {
	s, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "cmdstat_fcall:"); ok {
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

// BenchmarkMemoryPerSwarm separates what a swarm costs from what its peers
// cost: the same number of torrents filled with one peer each, then with
// ten, on a fresh Redis each. bytes/peer is the marginal cost of a peer in
// a small swarm, bytes/swarm what a swarm costs beyond its peers (keys and
// their overhead).
func BenchmarkMemoryPerSwarm(b *testing.B) {
	const torrents = 20000
	measure := func(per int) float64 {
		srv := testkit.StartRedis(b)
		defer srv.Stop()
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()
		s := benchStore(b, rdb)
		before := usedMemory(b, rdb)
		fill(b, s, torrents, per)
		return float64(usedMemory(b, rdb) - before)
	}
	for range b.N {
		one, ten := measure(1), measure(10)
		perPeer := (ten - one) / float64(9*torrents)
		b.ReportMetric(perPeer, "bytes/peer")
		b.ReportMetric(one/torrents-perPeer, "bytes/swarm")
	}
}

// BenchmarkRedisCPUPerRelayedChange reports the Redis CPU time one relayed
// change costs the node it is written into (apply.lua), as the hub sends
// them: one pipeline per message, on one Redis one script call per node,
// here 256 changes a call, refreshing peers of 10k swarms of 10.
func BenchmarkRedisCPUPerRelayedChange(b *testing.B) {
	srv := testkit.StartRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	r, err := NewRelayer(rdb, Config{Prefix: "tl", PeerLifetime: 45 * time.Minute, CompletedTTL: 30 * 24 * time.Hour, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	const torrents, swarm, batch = 10000, 10, 256
	ctx := context.Background()
	apply := func(from, n int, seen int64) {
		byHash := map[bittorrent.InfoHash][]bittorrent.PeerChange{}
		for k := from; k < from+n; k++ {
			ih := benchHash(k % torrents)
			p := (k / torrents) % swarm
			op := bittorrent.OpLeecher
			if p%2 == 0 {
				op = bittorrent.OpSeeder
			}
			byHash[ih] = append(byHash[ih], bittorrent.PeerChange{InfoHash: ih, Op: op, Seen: seen, Peer: string(peer(p, false).AppendBinary(nil, false))})
		}
		ts := make([]Target, 0, len(byHash))
		for _, cs := range byHash {
			ts = append(ts, Target{Node: "node2", Changes: cs})
		}
		if _, err := r.Apply(ctx, ts); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now().UnixMilli()
	for k := 0; k < torrents*swarm; k += batch {
		apply(k, batch, start)
	}
	before, scriptBefore := RedisCPU(ctx, rdb), scriptUsec(b, rdb)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		apply(i, batch, start+1+int64(i/(torrents*swarm)))
	}
	b.StopTimer()
	b.ReportMetric((RedisCPU(ctx, rdb)-before)*1e6/float64(b.N), "redis-µs/change")
	b.ReportMetric((scriptUsec(b, rdb)-scriptBefore)/float64(b.N), "script-µs/change")
}

// BenchmarkClusterAnnounce: announces (UDP-style batches of 16, from four
// goroutines) on a Redis Cluster of one master and of three, each master
// its own redis-server. Reports announces/s, the Redis CPU per announce
// summed over the masters, and how evenly the keys spread (largest
// master's share of keys × masters: 1 is even).
func BenchmarkClusterAnnounce(b *testing.B) {
	for _, masters := range []int{1, 3} {
		b.Run(fmt.Sprintf("masters=%d", masters), func(b *testing.B) {
			rc := testkit.StartRedisCluster(b, masters, 0, 5*time.Second)
			rdb := rc.Client(b)
			s := benchStore(b, rdb)
			const torrents, swarm, batch, workers = 10000, 10, 16, 4
			fill(b, s, torrents, swarm)
			ctx := context.Background()
			cpu := func() float64 {
				var sum float64
				for _, m := range rc.Masters {
					c := m.Client(b)
					sum += RedisCPU(ctx, c)
				}
				return sum
			}
			before := cpu()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					reqs := make([]*bittorrent.AnnounceRequest, batch)
					want := make([]int, batch)
					out, errs := make([]bittorrent.AnnounceResult, batch), make([]error, batch)
					for {
						i := int(next.Add(batch)) - batch
						if i >= b.N {
							return
						}
						for j := range reqs {
							k := i + j
							// Re-announces: each peer keeps the class it was
							// filled with (fill: half seeders), as most do.
							p := (k / torrents) % swarm
							reqs[j] = benchReq(s, benchHash(k%torrents), p, uint64(p%2), bittorrent.None)
							want[j] = 50
						}
						s.AnnounceBatch(ctx, reqs, want, out, errs)
						for _, err := range errs {
							if err != nil {
								b.Error(err)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "announces/s")
			b.ReportMetric((cpu()-before)*1e6/float64(b.N), "redis-µs/announce")
			var most, all int64
			for _, m := range rc.Masters {
				n := m.Client(b).DBSize(ctx).Val()
				most, all = max(most, n), all+n
			}
			b.ReportMetric(float64(most)*float64(masters)/float64(all), "largest-share")
		})
	}
}

// BenchmarkLargeSwarms: 100 torrents of 1,000 peers (half seeders),
// re-announces with numwant 50, on a Redis with its default listpack
// threshold for sorted sets (128) and with zset-max-listpack-entries 1024,
// as the compose files set it: swarms are in buckets of at most 128 either
// way (swarm.lua). Reports Redis memory per peer and the script's time per
// announce.
func BenchmarkLargeSwarms(b *testing.B) {
	for _, lp := range []int{128, 1024} {
		b.Run(fmt.Sprintf("listpack=%d", lp), func(b *testing.B) {
			srv := testkit.StartRedis(b, "--zset-max-listpack-entries", strconv.Itoa(lp))
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			s := benchStore(b, rdb)
			const torrents, swarm = 100, 1000
			before := usedMemory(b, rdb)
			fill(b, s, torrents, swarm)
			perPeer := float64(usedMemory(b, rdb)-before) / (torrents * swarm)
			scriptBefore := scriptUsec(b, rdb)
			b.ResetTimer()
			reannounce(b, s, torrents, swarm)
			b.StopTimer()
			b.ReportMetric(perPeer, "bytes/peer")
			b.ReportMetric((scriptUsec(b, rdb)-scriptBefore)/float64(b.N), "script-µs/announce")
		})
	}
}

// BenchmarkPipeliner: 64 goroutines announce through one pipeline worker
// on one processor (GOMAXPROCS=1, as a node pinned to a core beside its
// Redis), with the worker gathering its batches and without; reports the
// announces each script call carried and Redis's CPU per announce.
func BenchmarkPipeliner(b *testing.B) {
	for _, gather := range []bool{true, false} {
		b.Run(fmt.Sprintf("gather=%v", gather), func(b *testing.B) {
			srv := testkit.StartRedis(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			s := benchStore(b, rdb)
			const torrents, swarm = 10000, 10
			fill(b, s, torrents, swarm)
			p := NewPipeliner(s, 1, 256, 1024)
			if !gather {
				p.yields = 0
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { p.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			var seq atomic.Int64
			calls, cpu := scriptCallCount(b, rdb), RedisCPU(ctx, rdb)
			b.SetParallelism(64)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(seq.Add(1))
					r := req(benchHash(i%torrents), peer((i/torrents)%swarm, false), uint64((i/torrents)%2), bittorrent.None)
					if _, err := p.Announce(ctx, r, 50); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(scriptCallCount(b, rdb)-calls), "announces/call")
			b.ReportMetric((RedisCPU(ctx, rdb)-cpu)*1e6/float64(b.N), "redis-µs/announce")
		})
	}
}
