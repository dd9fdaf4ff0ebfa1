package redisstore

import (
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// Every Redis key name of Tracklink is built in this file.
//
// Keyspace names the Redis keys of one tracker node. Every key of one swarm
// carries the same hash tag, {node:infohash}, so that the swarm lives in one
// Redis Cluster slot and one script may touch all of its keys:
//
//	<prefix>:{<node>:<infohash hex>}:m   sorted set of peers, score = the band of the peer's
//	                                     class + last seen (unix ms): see PeerScore
//	<prefix>:{<node>:<infohash hex>}:k   hash of key bindings: field = peer, value = digest of its key
//	<prefix>:{<node>:<infohash hex>}:c   completed downloads counter
//	<prefix>:{<node>:<infohash hex>}:x   stops (tombstones): member = peer, score = stop time,
//	                                     written by a local stop and by the hub's relays,
//	                                     trimmed like the peers
//	<prefix>:{<node>:<infohash hex>}:n   a swarm of 128 peers or more: hash of its number of
//	                                     buckets and its counts (see swarm.lua)
//	<prefix>:{<node>:<infohash hex>}:m<i> bucket i of such a swarm, which then has no :m
//	<prefix>:{<node>:<infohash hex>}:q   packs of such a swarm: a cache of its buckets' members
//	                                     by class, end to end, that samples are read from
//	                                     (see swarm.lua)
//	<prefix>:{<node>:<infohash hex>}:w   WebRTC (WebSocket) peers: sorted set, member = peer id
//	                                     (20 bytes), score = PeerScore of its class (see rtc.go)
//	<prefix>:{<node>:<infohash hex>}:wo  the process that holds each WebRTC peer's socket: hash,
//	                                     field = peer id, value = process id
//	<prefix>:{<node>:<infohash hex>}:wc  completed downloads of WebRTC peers
//
// Replicas of one node share its keyspace; other nodes' keyspaces are
// written only by the hub.
type Keyspace struct {
	prefix string
	node   string
}

// NewKeyspace returns the keyspace of node under prefix. Both must be
// non-empty and free of characters that would break the hash tag.
func NewKeyspace(prefix, node string) (Keyspace, error) {
	if err := bittorrent.ValidName("key prefix", prefix); err != nil {
		return Keyspace{}, err
	}
	if err := bittorrent.ValidName("node id", node); err != nil {
		return Keyspace{}, err
	}
	return Keyspace{prefix: prefix, node: node}, nil
}

// SwarmKeys are the keys of one swarm.
type SwarmKeys struct{ Peers, Keys, Completed, Stopped, Buckets string }

// Bucket is the key of bucket i of a swarm held in buckets (swarm.lua
// names them the same way).
func (s SwarmKeys) Bucket(i int) string {
	return s.Peers + strconv.Itoa(i)
}

// Packs is the key of the packs of a swarm held in buckets (swarm.lua
// names it the same way, and is its only writer and reader). Not ":p":
// that was a set of partial seeds in an earlier layout.
func (s SwarmKeys) Packs() string {
	return s.Peers[:len(s.Peers)-1] + packsSuffix
}

// RelaySuffixes returns the ends of the keys of every swarm that the hub's
// relays and resyncs touch (apply.lua, swarm.lua, buckets.go), as ACL key
// patterns: the peers or their buckets, the buckets hash, the packs,
// completions and stops; never the key bindings.
func RelaySuffixes() []string {
	return []string{peersSuffix + "*", metaSuffix, packsSuffix, completedSuffix, stoppedSuffix}
}

// The ends of a swarm's keys. The scripts make the names of the buckets
// hash and of the packs from the peers key's (prelude.go).
const (
	peersSuffix     = "m"
	keysSuffix      = "k"
	completedSuffix = "c"
	stoppedSuffix   = "x"
	metaSuffix      = "n"
	packsSuffix     = "q"
)

// swarmSuffixes end a swarm's keys, in the order Swarm lays them out.
const swarmSuffixes = peersSuffix + keysSuffix + completedSuffix + stoppedSuffix + metaSuffix

// Swarm returns the keys of the swarm of ih. They are cut from one string
// (every announce makes them: one allocation instead of six).
func (k Keyspace) Swarm(ih bittorrent.InfoHash) SwarmKeys {
	var hx [2 * len(ih)]byte
	hex.Encode(hx[:], ih[:])
	n := len(k.prefix) + len(":{") + len(k.node) + len(":") + len(hx) + len("}:") + 1
	var b strings.Builder
	b.Grow(n * len(swarmSuffixes))
	for i := range len(swarmSuffixes) {
		b.WriteString(k.prefix)
		b.WriteString(":{")
		b.WriteString(k.node)
		b.WriteByte(':')
		b.Write(hx[:])
		b.WriteString("}:")
		b.WriteByte(swarmSuffixes[i])
	}
	all := b.String()
	key := func(i int) string { return all[i*n : (i+1)*n] }
	return SwarmKeys{Peers: key(0), Keys: key(1), Completed: key(2), Stopped: key(3), Buckets: key(4)}
}

// RTCKeys are the keys of the WebRTC peers of one swarm: kept apart from
// the swarm's BitTorrent peers (a browser cannot reach a TCP or UDP peer,
// nor they it), never relayed by the hub (RelaySuffixes does not match
// them), and written only by rtc.lua.
type RTCKeys struct{ Peers, Owners, Completed string }

// RTC returns the keys of the WebRTC peers of the swarm of ih.
func (k Keyspace) RTC(ih bittorrent.InfoHash) RTCKeys {
	base := swarmKeyOf(k.prefix, k.node+":"+hex.EncodeToString(ih[:]), "w")
	return RTCKeys{Peers: base, Owners: base + "o", Completed: base + "c"}
}

// RTCChannel is the pub/sub channel of one process of a node for WebRTC
// signalling (offers and answers for the sockets that process holds):
// <prefix>:{<node>:rtc}:<process id>. It carries the node's hash tag so
// that RTCChannelPattern, and the node's own key pattern, cover it.
func RTCChannel(prefix, node, proc string) string {
	return nodeKey(prefix, node, "rtc") + ":" + proc
}

// RTCChannelPattern is the ACL channel pattern of every process's RTC
// channel of node ("*": of every node).
func RTCChannelPattern(prefix, node string) string {
	return RTCChannel(prefix, node, "*")
}

// announceList is the keys of announce.lua, relayList those of apply.lua.
// The scripts make the names of a swarm's buckets hash and buckets from
// that of its peers (swarm.lua), which is why those end as they do.
func (s SwarmKeys) announceList() [4]string {
	return [4]string{s.Peers, s.Completed, s.Keys, s.Stopped}
}

func (s SwarmKeys) relayList() []string {
	return []string{s.Peers, s.Completed, s.Stopped}
}

// A swarm's peers are one sorted set whatever their class: a peer's score
// is its class's band plus the time it was last seen (unix ms). Leechers
// score in [0, band), partial seeds in [band, 2 band), seeders in
// [2 band, 3 band), band = 2^42 ms (139 years: times up to the year
// 2109). One set instead of one per class halves what a small swarm costs
// in keys; a class is still counted by ZCOUNT and ranged by score, and a
// peer that changes class is moved by one ZADD. Scores stay below 2^44,
// exact in a double. announce.lua and apply.lua write the same bands.
const band = int64(1) << 42

// classBand is the start of the band of scores of a class.
func classBand(op bittorrent.ChangeOp) int64 {
	switch op {
	case bittorrent.OpSeeder:
		return 2 * band
	case bittorrent.OpPartial:
		return band
	}
	return 0
}

// changeScore is the score a change writes, in both scripts: a stop's is
// its time alone (in the stops set), any other op's its class's band plus
// its time (in the peers set).
func changeScore(op bittorrent.ChangeOp, seen int64) int64 {
	if op == bittorrent.OpStopped {
		return seen
	}
	return classBand(op) + seen
}

// Supersedes reports whether change c of a peer replaces old, the one
// rule of which copy of a peer stands, for the hub's resync (which keeps
// one copy of each peer over every node) and for apply.lua (whose ranks
// come from classRank, in its prelude): the newer wins; at the same
// millisecond a stop wins, and otherwise a peer may only move up in
// class (leecher, partial seed, seeder), never down, so that duplicates
// are harmless.
func Supersedes(c, old bittorrent.PeerChange) bool {
	switch {
	case c.Seen != old.Seen:
		return c.Seen > old.Seen
	case c.Op == bittorrent.OpStopped || old.Op == bittorrent.OpStopped:
		return c.Op == bittorrent.OpStopped && old.Op != bittorrent.OpStopped
	}
	return classRank(c.Op) > classRank(old.Op)
}

// classRank orders the classes at one millisecond (Supersedes).
func classRank(op bittorrent.ChangeOp) int {
	switch op {
	case bittorrent.OpSeeder:
		return 3
	case bittorrent.OpPartial:
		return 2
	case bittorrent.OpLeecher:
		return 1
	}
	return 0
}

// PeerScore is the score of a peer of class op (seeder, leecher or partial
// seed) last seen at seen (unix ms).
func PeerScore(op bittorrent.ChangeOp, seen int64) float64 {
	return float64(classBand(op) + seen)
}

// PeerClass reads a peer's score: its class and when it was last seen.
func PeerClass(score float64) (bittorrent.ChangeOp, int64) {
	sc := int64(score)
	switch {
	case sc >= 2*band:
		return bittorrent.OpSeeder, sc - 2*band
	case sc >= band:
		return bittorrent.OpPartial, sc - band
	}
	return bittorrent.OpLeecher, sc
}

// bandOrder is the classes in the order of their bands, the order in
// which both scripts take per-class ranges.
var bandOrder = [3]bittorrent.ChangeOp{bittorrent.OpLeecher, bittorrent.OpPartial, bittorrent.OpSeeder}

// expiredBounds are the upper bounds of the expired scores of each class
// (band + cutoff), in band order, as both scripts take them to trim.
func expiredBounds(cutoff int64) []any {
	out := make([]any, len(bandOrder))
	for i, op := range bandOrder {
		out[i] = classBand(op) + cutoff
	}
	return out
}

// liveRange is the range of scores of the live peers of a class, those
// seen after cutoff (unix ms), as ZCOUNT and ZRANGE BYSCORE take it.
func liveRange(op bittorrent.ChangeOp, cutoff int64) (min, max string) {
	b := classBand(op)
	return "(" + strconv.FormatInt(b+cutoff, 10), "(" + strconv.FormatInt(b+band, 10)
}

// LinkProcsKey names the hub's registry of node processes on the link's
// Redis: one hash per link channel (see hub). Sharded (on a Redis
// Cluster) it takes the channels' hash tag, {<channel>}:procs, so that it
// lives on their shard: a shard that is down or paused then stops the
// link and its registry together, never the registry alone.
func LinkProcsKey(channel string, sharded bool) string {
	if sharded {
		return "{" + channel + "}:procs"
	}
	return channel + ":procs"
}

// LinkLeaseKey names the lease of partition part of the link's relay
// (hub): the holding hub's id, expiring unless renewed. Sharded, the
// leases take the channels' hash tag like the registry, so that one
// MGET or transaction reads or renews them all. part "*" makes the ACL
// pattern of every lease.
func LinkLeaseKey(channel string, sharded bool, part string) string {
	if sharded {
		return "{" + channel + "}:lease:" + part
	}
	return channel + ":lease:" + part
}

// LinkHubsKey names the registry of live hubs of the link (hub): a sorted
// set of hub ids, each scored with when it expires unless renewed.
func LinkHubsKey(channel string, sharded bool) string {
	if sharded {
		return "{" + channel + "}:hubs"
	}
	return channel + ":hubs"
}

// The keys of a node that are not per swarm, all in the node's hash tag
// {<node>:...} so that a node's ACL user may be limited to its keyspace.

// IndexParts is how many keys a node's swarm index is split into (by the
// info hash's first byte), so that under Redis Cluster it spreads over the
// shards: no single hot key, and a shard that is down hides only its part
// of the index from a resync. 256 parts keep each in Redis's compact
// encoding (at most zset-max-listpack-entries members) up to 32,768 swarms
// a node with Redis's default of 128, 262,144 with 1024: an entry then
// costs about 32 bytes instead of about 130.
const IndexParts = 256

// IndexKey is the part of a node's swarm index (sorted set of info hashes,
// score = the last time the node saw a change in the swarm) that holds ih,
// for resyncs: <prefix>:{<node>:swarms:<00-ff>}.
func IndexKey(prefix, node string, ih bittorrent.InfoHash) string {
	return indexKey(prefix, node, int(ih[0])%IndexParts)
}

// IndexKeys are every part of a node's swarm index.
func IndexKeys(prefix, node string) []string {
	out := make([]string, IndexParts)
	for i := range out {
		out[i] = indexKey(prefix, node, i)
	}
	return out
}

func indexKey(prefix, node string, part int) string {
	return indexKeyOf(prefix, node, hex.EncodeToString([]byte{byte(part)}))
}

func indexKeyOf(prefix, node, part string) string { return nodeKey(prefix, node, "swarms:"+part) }

// nodeKey is the key name of node under prefix: <prefix>:{<node>:<name>},
// in the node's hash tag.
func nodeKey(prefix, node, name string) string { return tagOpen(prefix, node) + name + "}" }

// tagOpen is how every key of node begins: <prefix>:{<node>: (its swarms'
// keys too: Swarm lays them out the same way).
func tagOpen(prefix, node string) string { return prefix + ":{" + node + ":" }

// swarmKeyOf is the key of a swarm whose hash tag holds inTag
// (<node>:<infohash hex>) ending in suffix.
func swarmKeyOf(prefix, inTag, suffix string) string { return prefix + ":{" + inTag + "}:" + suffix }

// ACL key patterns (Redis globs), made by the builders above, so that an
// ACL can never drift from the keys it guards (cmd/tracker's `tracker acl`).

// NodeKeysPattern matches every key of node ("*": of every node): its
// swarms and its own keys, all in its hash tag.
func NodeKeysPattern(prefix, node string) string { return tagOpen(prefix, node) + "*" }

// RelayKeyPatterns match the keys of every node's swarms that the hub's
// relays and resyncs touch (RelaySuffixes).
func RelayKeyPatterns(prefix string) []string {
	var out []string
	for _, suffix := range RelaySuffixes() {
		out = append(out, swarmKeyOf(prefix, "*", suffix))
	}
	return out
}

// IndexKeysPattern matches every part of every node's swarm index.
func IndexKeysPattern(prefix string) string { return indexKeyOf(prefix, "*", "*") }

// AllowedKey is the set of info hashes a node carries (allowed-torrents mode).
func AllowedKey(prefix, node string) string { return nodeKey(prefix, node, "allowed") }

// AllowedModeKey exists while a node is in allowed-torrents mode.
func AllowedModeKey(prefix, node string) string { return nodeKey(prefix, node, "allowed-mode") }

// CatalogKey is a node's hash of the metainfo it offers to share.
func CatalogKey(prefix, node string) string { return nodeKey(prefix, node, "catalog") }

// InboxKey is a node's hash of shared metainfo the hub copied to it.
func InboxKey(prefix, node string) string { return nodeKey(prefix, node, "inbox") }

// AcceptKey exists while a node accepts shared torrents.
func AcceptKey(prefix, node string) string { return nodeKey(prefix, node, "accept-shared") }

// ProcsKey is a node's registry of its running processes (replicas): a
// hash, field = process id, value = last time it said it runs (unix ms).
func ProcsKey(prefix, node string) string { return nodeKey(prefix, node, "procs") }

// ReceivedKey is a node's hash of the shared torrents it took from its
// inbox: field = info hash (hex), value = when (unix seconds).
func ReceivedKey(prefix, node string) string { return nodeKey(prefix, node, "received") }

// DeclinedKey is a node's sorted set of the shared torrents its operator
// deleted: member = info hash (hex), score = when (unix seconds). The hub
// copies none of them to the node again, and the node takes none of them
// from its inbox. It is trimmed to its newest entries
// (allowed.MaxDeclined).
func DeclinedKey(prefix, node string) string { return nodeKey(prefix, node, "declined") }
