package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestNoNewSwarmFlag: an announce the node marks NoNewSwarm (its
// prefix's share is spent) is refused when its swarm is new, alone and in
// a batch, and writes nothing; in a live swarm it goes on, as does a stop.
// The result says whether an announce started its swarm (the node
// charges the prefix only then).
func TestNoNewSwarmFlag(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			rdb := b.client(t)
			s, _ := newStore(t, suite{rdb: rdb}, time.Minute)
			ctx := context.Background()
			no := func(r *bittorrent.AnnounceRequest) *bittorrent.AnnounceRequest { r.NoNewSwarm = true; return r }
			fresh := hash("no new swarm")
			if _, err := s.Announce(ctx, no(req(fresh, peer(1, false), 1, bittorrent.Started)), 10); err != bittorrent.ErrNoNewSwarms {
				t.Fatalf("a new swarm with NoNewSwarm: %v, want ErrNoNewSwarms", err)
			}
			if n, _ := rdb.Exists(ctx, s.ks.Swarm(fresh).Peers).Result(); n != 0 {
				t.Fatal("a refused new swarm was written")
			}
			live := hash("live swarm")
			if r, err := s.Announce(ctx, req(live, peer(1, false), 1, bittorrent.Started), 10); err != nil || !r.NewSwarm {
				t.Fatalf("the first peer of a swarm: %+v %v, want NewSwarm", r, err)
			}
			if r, err := s.Announce(ctx, no(req(live, peer(2, false), 1, bittorrent.Started)), 10); err != nil || r.NewSwarm || r.Leechers != 2 {
				t.Fatalf("NoNewSwarm in a live swarm: %+v %v", r, err)
			}
			if _, err := s.Announce(ctx, no(req(fresh, peer(1, false), 1, bittorrent.Stopped)), 10); err != nil {
				t.Fatalf("a stop is never refused: %v", err)
			}
			out, errs := make([]bittorrent.AnnounceResult, 3), make([]error, 3)
			s.AnnounceBatch(ctx, []*bittorrent.AnnounceRequest{
				no(req(fresh, peer(1, false), 1, bittorrent.Started)),
				req(hash("batch new"), peer(3, false), 1, bittorrent.Started),
				no(req(live, peer(3, false), 1, bittorrent.Started)),
			}, []int{10, 10, 10}, out, errs)
			if errs[0] != bittorrent.ErrNoNewSwarms || errs[1] != nil || !out[1].NewSwarm || errs[2] != nil || out[2].NewSwarm {
				t.Fatalf("batch: %v, new swarms %v %v %v", errs, out[0].NewSwarm, out[1].NewSwarm, out[2].NewSwarm)
			}
		})
	}
}
