package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// BenchmarkRedisCPUPerRefresh reports the Redis CPU time a refresh
// written behind costs (Store.Refresh, as internal/softstate writes a
// window of them: here 4,000 a window, each of another peer, in 10k
// swarms of 10, half seeders), with key bindings on and off; and the
// Redis CPU of a plain read of a small swarm for the read cache
// (Store.ReadSwarms, 64 swarms a round trip).
func BenchmarkRedisCPUPerRefresh(b *testing.B) {
	const torrents, swarm, window = 10000, 10, 4000
	for _, keys := range []bool{false, true} {
		b.Run(fmt.Sprintf("refresh/keys=%v", keys), func(b *testing.B) {
			srv := testkit.StartRedis(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			s := benchStore(b, rdb)
			s.bind = keys
			fill(b, s, torrents, swarm)
			ctx := context.Background()
			start := time.Now().UnixMilli()
			cs := make([]bittorrent.PeerChange, 0, window)
			before, scriptBefore := RedisCPU(ctx, rdb), scriptUsec(b, rdb)
			b.ResetTimer()
			for i := 0; i < b.N; i += window {
				cs = cs[:0]
				for k := i; k < i+window; k++ {
					p := (k / torrents) % swarm
					op := bittorrent.OpLeecher
					if p%2 == 0 {
						op = bittorrent.OpSeeder
					}
					cs = append(cs, bittorrent.PeerChange{InfoHash: benchHash(k % torrents), Op: op, Seen: start + 1 + int64(k/(torrents*swarm)), Peer: string(peer(p, false).AppendBinary(nil, false))})
				}
				if _, _, err := s.Refresh(ctx, cs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric((RedisCPU(ctx, rdb)-before)*1e6/float64(b.N), "redis-µs/refresh")
			b.ReportMetric((scriptUsec(b, rdb)-scriptBefore)/float64(b.N), "script-µs/refresh")
		})
	}
	b.Run("read", func(b *testing.B) {
		srv := testkit.StartRedis(b)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()
		s := benchStore(b, rdb)
		fill(b, s, torrents, swarm)
		ctx := context.Background()
		hashes := make([]bittorrent.InfoHash, 64)
		before := RedisCPU(ctx, rdb)
		b.ResetTimer()
		for i := 0; i < b.N; i += len(hashes) {
			for j := range hashes {
				hashes[j] = benchHash((i + j) % torrents)
			}
			if _, whole, _, err := s.ReadSwarms(ctx, hashes, 64, nil); err != nil || !whole[0] {
				b.Fatal(err, whole[0])
			}
		}
		b.StopTimer()
		b.ReportMetric((RedisCPU(ctx, rdb)-before)*1e6/float64(b.N), "redis-µs/swarm")
	})
}
