package redisstore

import (
	"strconv"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestPeerScore: a score carries a class and a time, both read back
// exactly, from the epoch to the band's end (the year 2109), and each
// class's live range holds its live peers only.
func TestPeerScore(t *testing.T) {
	classes := []bittorrent.ChangeOp{bittorrent.OpLeecher, bittorrent.OpPartial, bittorrent.OpSeeder}
	for _, op := range classes {
		for _, seen := range []int64{0, 1, 1_795_686_000_123, band - 1} {
			score := PeerScore(op, seen)
			if got, at := PeerClass(score); got != op || at != seen {
				t.Fatalf("%v at %d: score %.0f reads back as %v at %d", op, seen, score, got, at)
			}
		}
	}
	const cutoff = int64(1_795_686_000_000)
	for _, op := range classes {
		lo, hi := liveRange(op, cutoff)
		in := func(score float64) bool {
			l, _ := strconv.ParseFloat(lo[1:], 64) // both bounds exclusive: "(x"
			h, _ := strconv.ParseFloat(hi[1:], 64)
			return score > l && score < h
		}
		for _, other := range classes {
			for seen, live := range map[int64]bool{cutoff - 1: false, cutoff: false, cutoff + 1: true, band - 1: true} {
				if want := other == op && live; in(PeerScore(other, seen)) != want {
					t.Fatalf("live range of %v (%s, %s): a %v seen at %d in it: %v, want %v", op, lo, hi, other, seen, !want, want)
				}
			}
		}
	}
}

// TestSwarmKeys: a swarm's keys are named as keys.go's table says, each a
// string of its own even though they are cut from one.
func TestSwarmKeys(t *testing.T) {
	ks, err := NewKeyspace("tl", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	var ih bittorrent.InfoHash
	for i := range ih {
		ih[i] = byte(0xa0 + i)
	}
	const base = "tl:{node-1:a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3}:"
	got := ks.Swarm(ih)
	want := SwarmKeys{Peers: base + "m", Keys: base + "k", Completed: base + "c", Stopped: base + "x", Buckets: base + "n"}
	if got != want {
		t.Fatalf("keys %+v, want %+v", got, want)
	}
	if b := got.Bucket(12); b != base+"m12" {
		t.Fatalf("bucket 12 is %q", b)
	}
	if p := got.Packs(); p != base+"q" {
		t.Fatalf("packs are %q", p)
	}
}
