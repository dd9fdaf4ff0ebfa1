package redisstore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/testkit"
)

// TestLeases: a lease is taken by one holder at a time, renewed and
// released by its holder only, and free again once it expires; the hubs'
// registry counts the live ones. On one Redis and on a Redis Cluster (one
// slot for them all).
func TestLeases(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rdb     func(t *testing.T) redis.UniversalClient
		sharded bool
	}{
		{"redis", func(t *testing.T) redis.UniversalClient { return testkit.SharedRedis(t).Client(t) }, false},
		{"cluster", func(t *testing.T) redis.UniversalClient { return testkit.SharedRedisCluster(t).Client(t) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := tc.rdb(t)
			ctx := context.Background()
			channel := "leasetest" + time.Now().Format("150405.000000")
			ttl := 300 * time.Millisecond
			a := NewLeases(rdb, channel, tc.sharded, "hub-a/1", ttl, time.Second)
			b := NewLeases(rdb, channel, tc.sharded, "hub-b/2", ttl, time.Second)
			if ok, err := a.Take(ctx, 1); !ok || err != nil {
				t.Fatalf("a takes 1: %v %v", ok, err)
			}
			if ok, err := b.Take(ctx, 1); ok || err != nil {
				t.Fatalf("b takes a's 1: %v %v", ok, err)
			}
			if ok, _ := b.Take(ctx, 2); !ok {
				t.Fatal("b takes 2")
			}
			if held, err := b.Renew(ctx, []int{1, 2}); err != nil || !slices.Equal(held, []int{2}) {
				t.Fatalf("b renews 1 and 2: %v %v", held, err)
			}
			if err := b.Release(ctx, []int{1}); err != nil {
				t.Fatal(err)
			}
			if h, err := a.Holders(ctx, 4); err != nil || !slices.Equal(h, []string{"", "hub-a/1", "hub-b/2", ""}) {
				t.Fatalf("holders: %q %v", h, err)
			}
			for _, l := range []*Leases{a, b} {
				if _, err := l.Register(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n, _ := a.Register(ctx); n != 2 {
				t.Fatalf("live hubs: %d, want 2", n)
			}
			// a renews and keeps 1; b's 2 expires, and a may take it.
			deadline := time.Now().Add(2 * ttl)
			for time.Now().Before(deadline) {
				if held, err := a.Renew(ctx, []int{1}); err != nil || len(held) != 1 {
					t.Fatalf("a renews 1: %v %v", held, err)
				}
				time.Sleep(ttl / 4)
			}
			if ok, _ := a.Take(ctx, 2); !ok {
				t.Fatal("b's expired lease is not free")
			}
			if n, _ := a.Register(ctx); n != 1 {
				t.Fatalf("live hubs after b's time: %d, want 1", n)
			}
			if err := a.Release(ctx, []int{1, 2}); err != nil {
				t.Fatal(err)
			}
			if h, _ := b.Holders(ctx, 3); !slices.Equal(h, []string{"", "", ""}) {
				t.Fatalf("holders after release: %q", h)
			}
		})
	}
}
