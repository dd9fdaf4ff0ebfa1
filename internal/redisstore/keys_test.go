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
