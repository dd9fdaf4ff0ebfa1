package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// runACL is `tracker acl NODE_ID...`: the Redis ACL users of a link on one
// Redis (the administrator's, the hub's, the nodes'), as ACL SETUSER
// commands with fresh random passwords, and the TRACKER_REDIS_URL each
// role uses. The permissions themselves are
// aclRules', which the tests apply to a real Redis.
func runACL(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracker acl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	prefix := fs.String("prefix", "tl", "TRACKER_REDIS_PREFIX of the network")
	channel := fs.String("channel", "tl:link", "TRACKER_LINK_CHANNEL of the network")
	host := fs.String("redis", "REDIS_HOST:6379", "host:port of the Redis, for the URLs printed")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() == 0 {
		return usageError("usage: tracker acl [-prefix tl] [-channel tl:link] [-redis host:port] NODE_ID...   (\"*\": one user for every node id of one operator)")
	}
	if err := bittorrent.ValidName("-prefix", *prefix); err != nil {
		return usageError(err.Error())
	}
	if link.ValidChannel(*channel) != nil {
		return usageError("-channel must be a plain channel name")
	}
	users := []aclUser{adminUser(), hubUser(*prefix, *channel)}
	for _, n := range fs.Args() {
		if n == "*" {
			users = append(users, nodesUser(*prefix, *channel))
			continue
		}
		if err := bittorrent.ValidName("NODE_ID", n); err != nil {
			return usageError(err.Error())
		}
		users = append(users, nodeUser(*prefix, *channel, n))
	}
	fmt.Fprintln(stdout, "# Redis ACL users of a Tracklink network. Run these with redis-cli (or put")
	fmt.Fprintln(stdout, "# them, without \"ACL SETUSER\", as \"user\" lines in an ACL file); turn the")
	fmt.Fprintln(stdout, "# default user off once every process uses its own: ACL SETUSER default off")
	for _, u := range users {
		pw := randomPassword()
		fmt.Fprintf(stdout, "\n# %s\nACL SETUSER %s\n", u.about, strings.Join(append([]string{u.name, "reset", "on", ">" + pw}, u.rules...), " "))
		fmt.Fprintf(stdout, "# TRACKER_REDIS_URL=redis://%s:%s@%s\n", u.name, pw, *host)
	}
	return nil
}

// aclUser is one role's Redis user.
type aclUser struct {
	name, about string
	rules       []string
}

// aclCommands are the commands the hub and nodes may run: reads, writes,
// key expiry, pub/sub, their own connection, and the store's functions
// (FCALL, FCALL_RO), never:
//   - anything that touches the whole server (@dangerous: FLUSHALL, KEYS,
//     CONFIG, DEBUG, SCRIPT KILL, ...);
//   - scripts of their own (EVAL, EVALSHA, their _RO forms, SCRIPT: none
//     of @scripting but FCALL) nor FUNCTION (LOAD, DELETE and FLUSH are
//     in @write): a script that writes and then loops cannot be killed,
//     and would freeze the Redis (a member's, for the hub's user); the
//     functions are loaded by `tracker redis-setup`, as the admin user;
//   - what lists key names beyond the user's key patterns (an ACL bounds
//     keys, not the names these return): SCAN, RANDOMKEY, DBSIZE (a count
//     of everyone's keys), and CLIENT TRACKING (BCAST mode streams the
//     name of every key anyone writes).
var aclCommands = []string{"-@all", "+@read", "+@write", "+@keyspace", "+@pubsub", "+@connection",
	"-@dangerous", "-function", "-scan", "-randomkey", "-dbsize", "-client|tracking", "+fcall", "+fcall_ro", "+ping"}

// adminUser is the administrator's user for `tracker redis-setup`: it may
// load, list and delete function libraries (and call the read-only one
// that tells a library is there), read a Redis Cluster's slots, and
// nothing else: no keys, no channels. Whoever holds it can load any
// function, so it stays with the operator of that Redis (in a network of
// members, each member's own), never with a node or the hub.
func adminUser() aclUser {
	return aclUser{name: "tl-admin", about: "the administrator: loads the store's Redis functions (tracker redis-setup), nothing else",
		rules: []string{"resetkeys", "resetchannels", "-@all", "+@connection", "-@dangerous", "-client|tracking",
			"+function|load", "+function|list", "+function|delete", "+fcall_ro", "+cluster|slots", "+cluster|shards", "+ping"}}
}

// hubUser is what the hub must do in one Redis (a member's, when each
// operator keeps its own) and no more:
//   - the peer sets (or buckets, their hash and their packs), completion
//     counters and stops of every swarm (<prefix>:{<node>:<ih>}:m, :m<i>,
//     :n, :q, :c, :x: redisstore.RelaySuffixes): it writes relayed peers
//     and reads them for resyncs; never the key bindings (:k);
//   - the swarm indexes (read for resyncs, expired entries trimmed);
//   - read only: what nodes carry, offer, accept and declined
//     (allowed-torrents mode, sharing); read and write: their inboxes of
//     shared torrents;
//   - its process registry, the partition leases and the registry of live
//     hubs (redisstore.Leases: SET, MGET, PEXPIRE and DEL in WATCH/MULTI
//     transactions, hence @transaction);
//   - publish on the down channel only, subscribe to both and to every
//     partition's up channel;
//   - the commands of aclCommands.
func hubUser(prefix, channel string) aclUser {
	rules := []string{"resetkeys"}
	for _, p := range redisstore.RelayKeyPatterns(prefix) {
		rules = append(rules, "~"+p)
	}
	rules = append(rules, "~"+redisstore.IndexKeysPattern(prefix), "~"+redisstore.InboxKey(prefix, "*"))
	for _, key := range []func(prefix, node string) string{redisstore.AllowedKey, redisstore.AllowedModeKey, redisstore.CatalogKey, redisstore.AcceptKey, redisstore.DeclinedKey} {
		rules = append(rules, "%R~"+key(prefix, "*"))
	}
	for _, sharded := range []bool{false, true} {
		rules = append(rules, "~"+redisstore.LinkProcsKey(channel, sharded), "~"+redisstore.LinkLeaseKey(channel, sharded, "*"),
			"~"+redisstore.LinkHubsKey(channel, sharded))
	}
	rules = append(rules, "resetchannels")
	down := channels(channel, link.Config.DownChannel)
	rules = append(rules, down...)
	rules = append(rules, aclCommands...)
	rules = append(rules, "+@transaction", "-subscribe", "-psubscribe", "-ssubscribe",
		"(resetchannels "+strings.Join(append(upChannels(channel), down...), " ")+" -@all +subscribe +unsubscribe +ssubscribe +sunsubscribe +ping)")
	return aclUser{name: prefix + "-hub", about: "the hub: the peers of every node's swarms, what nodes carry and share, its process registry and partition leases; publishes on :down, subscribes to :up, the partitions' up channels and :down", rules: rules}
}

// upChannels are the ACL rules of the up direction: the control channel
// and every partition's channel (a glob), on one Redis and on a Redis
// Cluster.
func upChannels(channel string) []string {
	return append(channels(channel, link.Config.UpChannel),
		"&"+link.PartitionChannelPattern(channel, false), "&"+link.PartitionChannelPattern(channel, true))
}

// nodeUser may read and write only its node's keys (<prefix>:{<node>:*),
// publish only on the up channels (control and partitions), and subscribe
// only to the down channel (a selector: Redis checks channels for PUBLISH
// and SUBSCRIBE alike); and publish and subscribe on its processes' WebRTC
// signalling channels (<prefix>:{<node>:rtc}:*, redisstore.RTCChannel).
func nodeUser(prefix, channel, node string) aclUser {
	rtc := "&" + redisstore.RTCChannelPattern(prefix, node)
	rules := []string{"resetkeys", "~" + redisstore.NodeKeysPattern(prefix, node), "resetchannels"}
	rules = append(rules, upChannels(channel)...)
	rules = append(rules, rtc)
	rules = append(rules, aclCommands...)
	rules = append(rules, "-subscribe", "-psubscribe", "-ssubscribe",
		"(resetchannels "+strings.Join(append(channels(channel, link.Config.DownChannel), rtc), " ")+" -@all +subscribe +unsubscribe +ssubscribe +sunsubscribe +ping)")
	return aclUser{name: prefix + "-node-" + node, about: "node " + node + ": its own keyspace, publish on :up and the partitions' up channels, subscribe to :down", rules: rules}
}

// channels are the ACL channel rules of one direction of the link, by its
// name on one Redis and on a Redis Cluster (sharded), so that one set of
// users serves either.
func channels(channel string, dir func(link.Config) string) []string {
	return []string{"&" + dir(link.Config{Channel: channel}), "&" + dir(link.Config{Channel: channel, Sharded: true})}
}

// nodesUser is nodeUser for every node id at once: the user of one
// operator's replicas whose node ids are not known in advance (compose's
// --scale names them after their containers). It keeps them out of the
// hub's registry and the down direction, not out of each other's keys.
func nodesUser(prefix, channel string) aclUser {
	u := nodeUser(prefix, channel, "*")
	u.name, u.about = prefix+"-nodes", "every node of one operator: all node keyspaces, publish on :up and the partitions' up channels, subscribe to :down"
	return u
}

func randomPassword() string {
	var b [24]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
