package redisstore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestApplyAgreesWithSupersedes: apply.lua keeps of two changes of one
// peer the one Supersedes picks (the rule the hub's resync uses to pick
// one copy over the nodes), whichever comes first: for every pair of ops
// at the same millisecond and a millisecond apart, applying the pair in
// either order leaves what applying the winner alone leaves (the peer held
// with its class and time, or its stop).
func TestApplyAgreesWithSupersedes(t *testing.T) {
	_, r, _ := newRelayPair(t, "supersedes")
	ctx := context.Background()
	now := time.Now().UnixMilli()
	type opc struct {
		op         bittorrent.ChangeOp
		completion bool
	}
	ops := []opc{{bittorrent.OpLeecher, false}, {bittorrent.OpPartial, false}, {bittorrent.OpSeeder, false}, {bittorrent.OpSeeder, true}, {bittorrent.OpStopped, false}}
	n := 0
	// state applies cs, in order, to a swarm of its own, and returns what
	// it holds of the peer: the peer, or else its stop. (A stop older than
	// the peer held stays in the stops set; it no longer says anything.)
	state := func(cs ...bittorrent.PeerChange) []bittorrent.PeerChange {
		t.Helper()
		n++
		ih := hash(fmt.Sprint("supersedes", n))
		for _, c := range cs {
			c.InfoHash = ih
			if _, err := r.Apply(ctx, []Target{{Node: "target", Changes: []bittorrent.PeerChange{c}}}); err != nil {
				t.Fatal(err)
			}
		}
		got, _, err := r.Swarms(ctx, "target", []bittorrent.InfoHash{ih}, 0)
		if err != nil {
			t.Fatal(err)
		}
		out := got[0]
		for i := range out {
			out[i].InfoHash, out[i].Completion = bittorrent.InfoHash{}, false
		}
		if i := slices.IndexFunc(out, func(c bittorrent.PeerChange) bool { return c.Op != bittorrent.OpStopped }); i >= 0 {
			return out[i : i+1]
		}
		return out
	}
	p := string(peer(7, false).AppendBinary(nil, false))
	for _, a := range ops {
		for _, b := range ops {
			for _, dt := range []int64{0, 1} {
				ca := bittorrent.PeerChange{Op: a.op, Completion: a.completion, Seen: now - 10, Peer: p}
				cb := bittorrent.PeerChange{Op: b.op, Completion: b.completion, Seen: now - 10 + dt, Peer: p}
				winner := ca
				if Supersedes(cb, ca) {
					winner = cb
				}
				if Supersedes(ca, cb) && Supersedes(cb, ca) {
					t.Fatalf("%v and %v each supersede the other", ca, cb)
				}
				want := state(winner)
				winner.Completion = false
				for _, order := range [][]bittorrent.PeerChange{{ca, cb}, {cb, ca}} {
					if got := state(order...); !slices.Equal(got, want) {
						t.Errorf("%v then %v: holds %v, Supersedes picks %v (%v alone)", order[0], order[1], got, winner, want)
					}
				}
			}
		}
	}
}
