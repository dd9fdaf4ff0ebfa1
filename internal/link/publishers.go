package link

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// A node publishes each partition's messages from a goroutine of its own,
// so that a partition whose channel's shard hangs (a Redis Cluster master
// paused or dying) holds up only that partition: the others' messages go
// on. Each partition's messages stay in order (one goroutine each, one
// publish at a time). A partition whose queue is full drops the changes
// handed to it, counts them (tracker_link_dropped_changes_total) and has
// the node say hello, so that the hubs resync it; the changes are in the
// node's keyspace already.

// partQueue bounds the messages waiting for one partition's publisher.
const partQueue = 16

// publishTimeout bounds one publish, and the publishing of what is queued
// when the node stops.
const publishTimeout = 2 * time.Second

type partPublishers struct {
	n      *Node
	queues []chan []bittorrent.PeerChange
	stop   context.Context // ends when the publishers must give up
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startPublishers starts a publisher per partition; they outlive ctx
// until close.
func (n *Node) startPublishers(ctx context.Context) *partPublishers {
	pp := &partPublishers{n: n, queues: make([]chan []bittorrent.PeerChange, n.cfg.PartitionCount())}
	pp.stop, pp.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for p := range pp.queues {
		q := make(chan []bittorrent.PeerChange, partQueue)
		pp.queues[p] = q
		pp.wg.Go(func() {
			for cs := range q {
				pp.publish(p, cs)
			}
		})
	}
	return pp
}

func (pp *partPublishers) publish(p int, cs []bittorrent.PeerChange) {
	n := pp.n
	pctx, cancel := context.WithTimeout(pp.stop, publishTimeout)
	defer cancel()
	if err := n.ep.Publish(pctx, n.cfg.PartitionChannel(p), uint16(p+1), KindUpdates, cs); err != nil {
		n.publishFailed(KindUpdates, err)
		return
	}
	n.published.Add(1)
	n.m.changes.Add(float64(len(cs)))
}

// hand gives changes, split by partition, to their publishers. What a
// full queue cannot take is dropped and counted, and a hello asked for.
func (pp *partPublishers) hand(changes []bittorrent.PeerChange) {
	n := pp.n
	parts := make([][]bittorrent.PeerChange, len(pp.queues))
	for _, c := range changes {
		p := Partition(c.InfoHash, len(parts))
		parts[p] = append(parts[p], c)
	}
	for p, cs := range parts {
		if len(cs) == 0 {
			continue
		}
		select {
		case pp.queues[p] <- cs:
		default:
			n.m.dropped.Add(float64(len(cs)))
			n.errLog.Log(slog.LevelWarn, "link partition held up: changes dropped; the hubs will resync this node", "partition", p, "changes", len(cs))
			n.requestHello()
		}
	}
}

// close lets the publishers send what they hold, for at most wait, and
// stops them.
func (pp *partPublishers) close(wait time.Duration) {
	for _, q := range pp.queues {
		close(q)
	}
	t := time.AfterFunc(wait, pp.cancel)
	pp.wg.Wait()
	t.Stop()
	pp.cancel()
}
