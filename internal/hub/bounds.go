package hub

import (
	"maps"
	"slices"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// What a resync reads from a node's keyspace is the node's to write: its
// Redis user writes its own keys, and in a network of members its operator
// owns the whole Redis. So it is input, held to the bounds of a link
// message before anything of it reaches another node: each peer a valid
// unicast peer (bittorrent.CheckPeer), each time no later than the hub's
// clock plus the skew (a link message may not claim more: bad_seen), a key
// of the wrong type skipped rather than failing the resync, and at most
// Bounds.Swarms swarms of one node and Bounds.Peers peers (and as many
// stops) of one swarm of one node. What is left out is counted
// (hub_resync_refused_total{reason}); the rest is applied as before.

// Bounds are what one resync takes from one node's keyspace.
type Bounds struct {
	// Swarms is how many swarms of one node's index a resync reads (0:
	// DefaultMaxSwarms).
	Swarms int
	// Peers is how many peers, and how many stops, of one swarm of one
	// node a resync reads (0: DefaultMaxPeers).
	Peers int
}

// DefaultMaxSwarms is about what one process's new-swarm budget lets it
// hold at the defaults (TRACKER_NEW_SWARMS_RATE 50/s over a peer lifetime
// of about 45 minutes, plus the burst of 100,000): a node claims no more
// swarms than its own clients could have made.
const DefaultMaxSwarms = 250_000

// DefaultMaxPeers is far above what one node holds of all but the largest
// public swarms; a resync step reads 256 swarms, so it bounds what one node
// makes the hub hold at once to about 256 × 2 × DefaultMaxPeers changes.
const DefaultMaxPeers = 20_000

func (b Bounds) withDefaults() Bounds {
	if b.Swarms <= 0 {
		b.Swarms = DefaultMaxSwarms
	}
	if b.Peers <= 0 {
		b.Peers = DefaultMaxPeers
	}
	return b
}

// refusals counts what one resync left out, by reason.
type refusals map[string]int

func (r refusals) add(o refusals) {
	for k, n := range o {
		r[k] += n
	}
}

// admit returns what of one node's swarms, as read, a resync may take,
// counting the rest in out: changes whose peer is not a valid peer, or
// whose time lies beyond ahead (the hub's clock plus the skew), and peers
// or stops of one swarm beyond the bound.
func admit(swarms [][]bittorrent.PeerChange, ahead int64, b Bounds, out refusals) {
	for i, cs := range swarms {
		kept := cs[:0]
		var peers, stops int
		for _, c := range cs {
			switch {
			case !c.Op.Valid() || bittorrent.CheckPeer(c.Peer) != nil:
				out["bad_peer"]++
				continue
			case c.Seen > ahead:
				out["bad_seen"]++
				continue
			}
			n := &peers
			if c.Op == bittorrent.OpStopped {
				n = &stops
			}
			if *n++; *n > b.Peers {
				if *n == b.Peers+1 {
					out["too_many_peers"]++
				}
				continue
			}
			kept = append(kept, c)
		}
		swarms[i] = kept
	}
}

func (r refusals) total() (n int) {
	for _, v := range r {
		n += v
	}
	return n
}

// reasons lists what out counted, by reason, for a log line.
func (r refusals) reasons() []any {
	var args []any
	for _, k := range slices.Sorted(maps.Keys(r)) {
		args = append(args, k, r[k])
	}
	return args
}
