package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestACLUsers applies what `tracker acl` prints to a real Redis, loads
// the store's functions as the admin user (`tracker redis-setup`), runs
// the hub and two nodes under their own users, and shows that the link
// works while a node's user can write only its own keyspace, publish only
// on the up channel and subscribe only to the down channel, and neither a
// node's user nor the hub's can run a script of its own, load functions,
// or list key names.
func TestACLUsers(t *testing.T) {
	c := &cluster{t: t, redis: testkit.StartRedis(t), channel: "tl:link", nodes: map[string]*proc{}}
	var out strings.Builder
	if err := run(context.Background(), []string{"acl", "-redis", c.redis.Addr(), "node1", "node2"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	admin := c.redis.Client(t)
	ctx := context.Background()
	urls := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if cmd, ok := strings.CutPrefix(line, "ACL SETUSER "); ok {
			args := []any{"ACL", "SETUSER"}
			for _, f := range strings.Fields(cmd) {
				args = append(args, f)
			}
			if err := admin.Do(ctx, args...).Err(); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
		}
		if u, ok := strings.CutPrefix(line, "# TRACKER_REDIS_URL="); ok {
			name := strings.TrimPrefix(strings.SplitN(strings.TrimPrefix(u, "redis://"), ":", 2)[0], "tl-")
			urls[name] = u
		}
	}
	if len(urls) != 4 {
		t.Fatalf("tracker acl printed %d URLs:\n%s", len(urls), out.String())
	}
	// Before the administrative step a node refuses to start, and says
	// what to run: its user may not load the functions.
	ctx5, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := runNode(ctx5, c.env("TRACKER_REDIS_URL="+urls["node-node1"], "TRACKER_NODE_ID=node1", "TRACKER_LINK_PASSWORD="+testPassword), io.Discard, nil)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "tracker redis-setup") {
		t.Fatalf("a node started on a Redis without its functions: %v; want an error naming tracker redis-setup", err)
	}
	// So does the hub, on its one Redis.
	ctx5, cancel = context.WithTimeout(ctx, 5*time.Second)
	err = runHub(ctx5, c.env("TRACKER_REDIS_URL="+urls["hub"], "TRACKER_LINK_PASSWORD="+testPassword, "TRACKER_HUB_NAME=hub1"), io.Discard, nil)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "tracker redis-setup") {
		t.Fatalf("the hub started on a Redis without the functions: %v; want an error naming tracker redis-setup", err)
	}
	var setup strings.Builder
	if err := run(ctx, []string{"redis-setup"}, []string{"TRACKER_REDIS_URL=" + urls["admin"]}, &setup, io.Discard); err != nil {
		t.Fatalf("tracker redis-setup as the admin user: %v", err)
	}
	if !strings.Contains(setup.String(), redisstore.Functions().Name) {
		t.Fatalf("tracker redis-setup said %q", setup.String())
	}
	c.hub = startProc(t, runHub, c.env("TRACKER_REDIS_URL="+urls["hub"], "TRACKER_LINK_PASSWORD="+testPassword, "TRACKER_HUB_NAME=hub1"))
	for _, n := range []string{"node1", "node2"} {
		c.nodes[n] = startProc(t, runNode, c.env("TRACKER_REDIS_URL="+urls["node-"+n], "TRACKER_NODE_ID="+n, "TRACKER_LINK_PASSWORD="+testPassword))
	}
	c.waitLinked("node1", "node2")
	ih := "under-acl-torrent-01"
	announceTo(t, c.nodes["node1"].url, ih, 7601, 1, "started")
	testkit.Eventually(t, 2*time.Second, "node1's peer at node2", func() bool { return scrapeOf(t, c.nodes["node2"].url, ih).leechers == 1 })

	// WebTorrent under the node's user: its scripts publish, and its
	// process subscribes, on its own signalling channels.
	wsRoundTrip(t, c.nodes["node1"].url, c.nodes["node1"].url, "acl")

	o, err := redis.ParseURL(urls["node-node1"])
	if err != nil {
		t.Fatal(err)
	}
	node1 := redis.NewClient(o)
	defer node1.Close()
	lib := redisstore.Functions()
	for _, tc := range []struct {
		what    string
		err     error
		allowed bool
	}{
		{"write its own keyspace", node1.Set(ctx, "tl:{node1:x}", 1, time.Minute).Err(), true},
		{"publish on the up channel", node1.Publish(ctx, "tl:link:up", "x").Err(), true},
		{"publish on a partition's up channel", node1.Publish(ctx, "tl:link:up:3", "x").Err(), true},
		{"publish on a partition's up channel (cluster)", node1.Publish(ctx, "{tl:link:3}:up", "x").Err(), true},
		{"take a partition's lease", node1.Set(ctx, "tl:link:lease:3", "node1", time.Second).Err(), false},
		{"write another node's keyspace", node1.Set(ctx, "tl:{node2:x}", 1, time.Minute).Err(), false},
		{"read another node's keyspace", node1.ZCard(ctx, "tl:{node2:swarms}").Err(), false},
		{"write the hub's registry", node1.HSet(ctx, "tl:link:procs", "node1/1", "0 0 0").Err(), false},
		{"publish on the down channel", node1.Publish(ctx, "tl:link:down", "x").Err(), false},
		{"publish on its processes' signalling channels", node1.Publish(ctx, "tl:{node1:rtc}:abc", "x").Err(), true},
		{"publish on another node's signalling channels", node1.Publish(ctx, "tl:{node2:rtc}:abc", "x").Err(), false},
		{"flush everything", node1.FlushAll(ctx).Err(), false},
		{"run a script on another node's keys", node1.Eval(ctx, "return redis.call('SET', KEYS[1], 1)", []string{"tl:{node2:y}"}).Err(), false},
	} {
		if got := tc.err == nil; got != tc.allowed {
			t.Errorf("node1 may %s: %v, want %v (%v)", tc.what, got, tc.allowed, tc.err)
		}
	}
	// The attack of finding A of issue 28: a script that writes a key of
	// its own and then loops forever (SCRIPT KILL cannot end it: it
	// wrote) would freeze the Redis for every client.
	refusals := func(c *redis.Client, own string) []struct {
		what string
		err  error
	} {
		return []struct {
			what string
			err  error
		}{
			{"EVAL a script that writes, then loops", c.Eval(ctx, "redis.call('SET', KEYS[1], 1) while true do end", []string{own}).Err()},
			{"EVAL_RO a loop", c.EvalRO(ctx, "while true do end", nil).Err()},
			{"SCRIPT LOAD", c.ScriptLoad(ctx, "while true do end").Err()},
			{"EVALSHA", c.EvalSha(ctx, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", nil).Err()},
			{"FUNCTION LOAD", c.FunctionLoad(ctx, "#!lua name=evil\nredis.register_function('evil', function() while true do end end)").Err()},
			{"FUNCTION DELETE", c.FunctionDelete(ctx, lib.Name).Err()},
			{"FUNCTION FLUSH", c.FunctionFlush(ctx).Err()},
			{"FUNCTION LIST", c.FunctionList(ctx, redis.FunctionListQuery{}).Err()},
			{"SCAN", c.Scan(ctx, 0, "*", 10).Err()},
			{"KEYS", c.Keys(ctx, "*").Err()},
			{"RANDOMKEY", c.RandomKey(ctx).Err()},
			{"DBSIZE", c.DBSize(ctx).Err()},
			{"CLIENT TRACKING ON BCAST", c.Do(ctx, "CLIENT", "TRACKING", "on", "BCAST").Err()},
			{"CLIENT LIST", c.ClientList(ctx).Err()},
		}
	}
	for _, tc := range refusals(node1, "tl:{node1:loop}") {
		if tc.err == nil || !strings.Contains(tc.err.Error(), "NOPERM") {
			t.Errorf("node1 may %s: %v, want NOPERM", tc.what, tc.err)
		}
	}
	// What it may run of scripts: the store's functions, on its own keys.
	for _, tc := range []struct {
		what string
		err  error
	}{
		{"FCALL_RO the library's version", node1.FCallRO(ctx, lib.Name+"_version", nil).Err()},
		{"FCALL announce with arguments of its own", node1.FCall(ctx, lib.Name+"_announce", []string{"tl:{node1:x}:m"}, "x").Err()},
	} {
		if tc.err != nil && (strings.Contains(tc.err.Error(), "NOPERM") || strings.Contains(tc.err.Error(), "not found")) {
			t.Errorf("node1 may not %s: %v", tc.what, tc.err)
		}
	}
	if err := node1.FCall(ctx, lib.Name+"_announce", []string{"tl:{node1:x}:m"}, "x").Err(); err == nil || !strings.Contains(err.Error(), "tracklink announce") {
		t.Errorf("node1's announce with arguments of its own: %v, want the function's refusal", err)
	}
	for _, tc := range []struct {
		what    string
		err     error
		allowed bool
	}{
		{"flush everything", node1.FlushAll(ctx).Err(), false},
	} {
		if got := tc.err == nil; got != tc.allowed {
			t.Errorf("node1 may %s: %v, want %v (%v)", tc.what, got, tc.allowed, tc.err)
		}
	}
	// The hub's user: the peers of swarms, not the key bindings, not
	// other keys, not the key names of the whole database.
	o, err = redis.ParseURL(urls["hub"])
	if err != nil {
		t.Fatal(err)
	}
	hub := redis.NewClient(o)
	defer hub.Close()
	swarm := "tl:{node1:" + strings.Repeat("ab", 20) + "}:"
	for _, tc := range []struct {
		what    string
		err     error
		allowed bool
	}{
		{"write a swarm's peers", hub.ZAdd(ctx, swarm+"m", redis.Z{Score: 1, Member: "x"}).Err(), true},
		{"read a swarm's stops", hub.ZCard(ctx, swarm+"x").Err(), true},
		{"read a swarm's buckets hash", hub.HGetAll(ctx, swarm+"n").Err(), true},
		{"drop a swarm's packs", hub.Del(ctx, swarm+"q").Err(), true},
		{"read what a node carries", hub.SMembers(ctx, "tl:{node1:allowed}").Err(), true},
		{"read a swarm's key bindings", hub.HGetAll(ctx, swarm+"k").Err(), false},
		{"read a swarm's WebRTC peers", hub.ZCard(ctx, swarm+"w").Err(), false},
		{"read who holds a WebRTC peer's socket", hub.HGetAll(ctx, swarm+"wo").Err(), false},
		{"write what a node carries", hub.SAdd(ctx, "tl:{node1:allowed}", "x").Err(), false},
		{"read what a node declined", hub.ZRevRange(ctx, "tl:{node1:declined}", 0, 9).Err(), true},
		{"read an offered torrent's size", hub.HStrLen(ctx, "tl:{node1:catalog}", "x").Err(), true},
		{"undo what a node declined", hub.ZRem(ctx, "tl:{node1:declined}", "x").Err(), false},
		{"write a key of its own making", hub.Set(ctx, "tl:{node1:x}", 1, time.Minute).Err(), false},
		{"list the database's keys", hub.Scan(ctx, 0, "*", 10).Err(), false},
		{"publish on the up channel", hub.Publish(ctx, "tl:link:up", "x").Err(), false},
		{"publish on a partition's up channel", hub.Publish(ctx, "tl:link:up:3", "x").Err(), false},
		{"publish on the down channel", hub.Publish(ctx, "tl:link:down", "x").Err(), true},
		{"read the partition leases", hub.MGet(ctx, "tl:link:lease:0", "tl:link:lease:1").Err(), true},
		{"renew a lease in a transaction", hub.Watch(ctx, func(tx *redis.Tx) error {
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error { p.PExpire(ctx, "tl:link:lease:99", time.Second); return nil })
			return err
		}, "tl:link:lease:99"), true},
		{"record itself live", hub.ZAdd(ctx, "{tl:link}:hubs", redis.Z{Score: 1, Member: "x"}).Err(), true},
		{"flush everything", hub.FlushAll(ctx).Err(), false},
		{"run a script on the key bindings", hub.Eval(ctx, "return redis.call('HSET', KEYS[1], 'a', 1)", []string{swarm + "k"}).Err(), false},
		{"call the library's version", hub.FCallRO(ctx, lib.Name+"_version", nil).Err(), true},
	} {
		if got := tc.err == nil; got != tc.allowed {
			t.Errorf("the hub may %s: %v, want %v (%v)", tc.what, got, tc.allowed, tc.err)
		}
	}
	for _, tc := range refusals(hub, swarm+"m") {
		if tc.err == nil || !strings.Contains(tc.err.Error(), "NOPERM") {
			t.Errorf("the hub may %s: %v, want NOPERM", tc.what, tc.err)
		}
	}
	// The admin user loads functions and does nothing else.
	o, err = redis.ParseURL(urls["admin"])
	if err != nil {
		t.Fatal(err)
	}
	adm := redis.NewClient(o)
	defer adm.Close()
	for _, tc := range []struct {
		what string
		err  error
	}{
		{"read a key", adm.Get(ctx, "tl:{node1:x}").Err()},
		{"call announce", adm.FCall(ctx, lib.Name+"_announce", []string{"tl:{node1:x}:m"}).Err()},
		{"EVAL", adm.Eval(ctx, "return 1", nil).Err()},
		{"SCAN", adm.Scan(ctx, 0, "*", 10).Err()},
		{"publish", adm.Publish(ctx, "tl:link:up", "x").Err()},
		{"FUNCTION FLUSH", adm.FunctionFlush(ctx).Err()},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), "NOPERM") {
			t.Errorf("the admin user may %s: %v, want NOPERM", tc.what, tc.err)
		}
	}
	// And Redis still answers everyone: nothing above froze it.
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// Subscribing: to the down channel yes, to the up channel (other
	// nodes' changes) no.
	for ch, allowed := range map[string]bool{"tl:link:down": true, "tl:link:up": false, "tl:link:up:3": false, "tl:{node1:rtc}:abc": true, "tl:{node2:rtc}:abc": false} {
		ps := node1.Subscribe(ctx, ch)
		_, err := ps.Receive(ctx)
		ps.Close()
		if (err == nil) != allowed {
			t.Errorf("node1 subscribing to %s: %v, want allowed=%v", ch, err, allowed)
		}
	}
	for _, ch := range []string{"tl:link:up", "tl:link:up:3", "tl:link:down"} {
		ps := hub.Subscribe(ctx, ch)
		_, err := ps.Receive(ctx)
		ps.Close()
		if err != nil {
			t.Errorf("the hub subscribing to %s: %v", ch, err)
		}
	}
}
