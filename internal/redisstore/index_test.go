package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redistest"
)

// TestIndexerRefreshesOncePerInterval: an entry is due again only
// IndexRefresh after it was written, per node; a forgotten one is due at
// once; a full queue forgets what it could not take.
func TestIndexerRefreshesOncePerInterval(t *testing.T) {
	rdb := redistest.Shared(t).Client(t)
	x := NewIndexer(rdb, "idxtest", 1)
	ih := hash("indexed")
	at := func(ms int64) bittorrent.PeerChange {
		return bittorrent.PeerChange{InfoHash: ih, Op: bittorrent.OpLeecher, Seen: ms}
	}
	if due := x.Due("a", at(1000), at(1001)); len(due) != 1 || len(due[IndexKey("idxtest", "a", ih)]) != 1 {
		t.Fatalf("first changes: %v", due)
	}
	if due := x.Due("a", at(1000+IndexRefresh.Milliseconds()-1)); due != nil {
		t.Fatalf("due again within the refresh: %v", due)
	}
	if due := x.Due("b", at(2000)); len(due) != 1 {
		t.Fatal("another node's entry is not due")
	}
	due := x.Due("a", at(1001+IndexRefresh.Milliseconds()))
	if len(due) != 1 {
		t.Fatal("not due after the refresh")
	}
	x.Forget(due)
	if x.Due("a", at(1002+IndexRefresh.Milliseconds())) == nil {
		t.Fatal("a forgotten entry is not due")
	}
	// The queue holds one batch: the second is forgotten and due again.
	if !x.Queue("c", at(1)) || x.Queue("d", at(1)) {
		t.Fatal("queue of one: want the first taken and the second refused")
	}
	if x.Due("d", at(2)) == nil {
		t.Fatal("an entry the queue refused is not due again")
	}
	done := make(chan struct{})
	close(done)
	x.Run(context.Background(), done, func(err error) { t.Errorf("index write: %v", err) })
	if n := rdb.ZCard(context.Background(), IndexKey("idxtest", "c", ih)).Val(); n != 1 {
		t.Fatalf("Run wrote %d entries of c's index, want 1", n)
	}
}

// TestRelayIndexesTargets: a relayed swarm is in the target node's swarm
// index, so the node's resync reads and admin page counts see it.
func TestRelayIndexesTargets(t *testing.T) {
	_, r, node := newRelayPair(t, "relayidx")
	ctx := context.Background()
	ih := hash("relayed-indexed")
	p := string(peer(1, false).AppendBinary(nil, false))
	if _, err := r.Apply(ctx, []Target{{Node: "target", Changes: []bittorrent.PeerChange{{InfoHash: ih, Op: bittorrent.OpSeeder, Seen: time.Now().UnixMilli(), Peer: p}}}}); err != nil {
		t.Fatal(err)
	}
	ihs, _, err := r.Indexed(ctx, "target", 0)
	if err != nil || len(ihs) != 1 || ihs[0] != ih {
		t.Fatalf("target's index %v, %v", ihs, err)
	}
	if h, err := node.Held(ctx, 10, nil); err != nil || h != (Held{Swarms: 1, Seeders: 1}) {
		t.Fatalf("held %+v, %v", h, err)
	}
}

// BenchmarkIndexerDue: what a node without the link pays per announce to
// keep its swarm index, for a torrent whose entry is not due (the common
// case: an entry is written once a minute).
func BenchmarkIndexerDue(b *testing.B) {
	x := NewIndexer(nil, "tl", 1)
	c := bittorrent.PeerChange{InfoHash: hash("bench"), Op: bittorrent.OpLeecher, Seen: time.Now().UnixMilli()}
	x.Due("node", c)
	b.ReportAllocs()
	for b.Loop() {
		if x.Due("node", c) != nil {
			b.Fatal("due again")
		}
	}
}

// TestIndexerBounded: past its bound an indexer forgets what it wrote
// (each entry is then written once more), never grows beyond it.
func TestIndexerBounded(t *testing.T) {
	x := NewIndexer(nil, "idxtest", 1)
	x.max = 100
	for i := range 1000 {
		if x.Due("n", bittorrent.PeerChange{InfoHash: bittorrent.InfoHash{byte(i), byte(i >> 8)}, Seen: 1}) == nil {
			t.Fatalf("entry %d not due", i)
		}
		if len(x.written) > x.max {
			t.Fatalf("%d entries remembered, bound %d", len(x.written), x.max)
		}
	}
}
