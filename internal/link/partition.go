package link

import (
	"strconv"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// The relay is partitioned by info hash, so that any number of hubs share
// it: a change of partition p goes up on p's own channel (PartitionChannel),
// which only the hub that holds p's lease listens to, while hellos and
// heartbeats go on the control channel (UpChannel) that every hub hears
// (every hub must know which processes are live, and resync its
// partitions when one joins). Each stream of a process, the control
// stream and one per partition, numbers its messages on its own (Message.
// Stream), so that a hub that hears only some partitions sees no gaps in
// what it hears. The partition count is the network's: a node and a hub
// with different counts refuse each other's messages ("partitions").

// DefaultPartitions is the partition count when TRACKER_LINK_PARTITIONS is
// not set: more than the hubs a network will run, few enough that a node's
// batch of changes is split into few messages.
const DefaultPartitions = 16

// MaxPartitions bounds the partition count: a partition is a set of values
// of the info hash's first byte, like the parts of a node's swarm index.
const MaxPartitions = 256

// Partition returns the partition of ih out of n: its first byte modulo n
// (a power of two splits evenly).
func Partition(ih bittorrent.InfoHash, n int) int { return int(ih[0]) % n }

// PartitionCount is the configured partition count (DefaultPartitions when
// unset).
func (c Config) PartitionCount() int {
	if c.Partitions == 0 {
		return DefaultPartitions
	}
	return c.Partitions
}

// PartitionChannel names partition p's up channel: <channel>:up:<p>, or
// {<channel>:<p>}:up when sharded, a hash tag of its own, so that on a
// Redis Cluster the partitions' channels spread over the shards.
func (c Config) PartitionChannel(p int) string {
	if c.Sharded {
		return "{" + c.Channel + ":" + strconv.Itoa(p) + "}:up"
	}
	return c.Channel + ":up:" + strconv.Itoa(p)
}

// PartitionChannelPattern is an ACL glob matching every partition's
// channel, by its name on one Redis or on a Redis Cluster.
func PartitionChannelPattern(channel string, sharded bool) string {
	if sharded {
		return "{" + channel + ":*}:up"
	}
	return channel + ":up:*"
}
