package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/hub"
	"github.com/tracklink/tracklink/internal/members"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// memberSet builds the hub's members from their configuration and keeps
// them while the configuration stands: on a reload, only members whose
// entry changed get new clients.
type memberSet struct {
	cfg    config.Config
	mu     sync.Mutex
	byName map[string]*builtMember
	// missingGone is what the relayers of members no longer there counted
	// of calls that found their Redis without the function library.
	missingGone uint64
}

type builtMember struct {
	conf      members.Entry
	rdb, link redisstore.Client // link == rdb unless linkURL
	member    hub.Member
	relay     *redisstore.Relayer
	checked   bool // its function library, by prepare
}

// clients are the member's clients, each once.
func (b *builtMember) clients() []redisstore.Client {
	if b.link != b.rdb {
		return []redisstore.Client{b.rdb, b.link}
	}
	return []redisstore.Client{b.rdb}
}

// build returns the members of confs, reusing those unchanged; the
// clients of members no longer there (or changed) are returned for
// closing once the hub has let go of them.
func (s *memberSet) build(confs []members.Entry) ([]hub.Member, []redisstore.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[string]*builtMember{}
	var made []redisstore.Client
	fail := func(err error) ([]hub.Member, []redisstore.Client, error) {
		for _, c := range made {
			c.Close()
		}
		return nil, nil, err
	}
	for _, c := range confs {
		if old := s.byName[c.Name]; old != nil && reflect.DeepEqual(old.conf, c) {
			next[c.Name] = old
			continue
		}
		b, err := s.newMember(c)
		if err != nil {
			return fail(fmt.Errorf("member %q: %w", c.Name, err))
		}
		made = append(made, b.clients()...)
		next[c.Name] = b
	}
	var closing []redisstore.Client
	for name, old := range s.byName {
		if next[name] != old {
			closing = append(closing, old.clients()...)
			s.missingGone += old.relay.FunctionsMissing()
		}
	}
	s.byName = next
	out := make([]hub.Member, 0, len(confs))
	for _, c := range confs {
		out = append(out, next[c.Name].member)
	}
	return out, closing, nil
}

func (s *memberSet) newMember(c members.Entry) (*builtMember, error) {
	mc := s.cfg
	mc.RedisURL, mc.RedisCluster = c.RedisURL, c.RedisCluster
	mc.RedisCAFile, mc.RedisCertFile, mc.RedisKeyFile = c.RedisCAFile, c.RedisCertFile, c.RedisKeyFile
	prefix := c.Prefix
	if prefix == "" {
		prefix = s.cfg.RedisPrefix
	}
	rdb, err := newRedisClient(c.RedisURL, mc)
	if err != nil {
		return nil, err
	}
	linkRDB := rdb
	if c.LinkURL != "" {
		if linkRDB, err = newRedisClient(c.LinkURL, mc); err != nil {
			rdb.Close()
			return nil, err
		}
	}
	b := &builtMember{conf: c, rdb: rdb, link: linkRDB}
	relay, err := redisstore.NewRelayer(rdb, redisstore.Config{
		Prefix: prefix, PeerLifetime: s.cfg.PeerLifetime, CompletedTTL: s.cfg.CompletedTTL, Timeout: s.cfg.RedisTimeout,
	})
	if err != nil {
		for _, c := range b.clients() {
			c.Close()
		}
		return nil, err
	}
	b.relay = relay
	nodes := append([]string(nil), c.Nodes...)
	b.member = hub.Member{
		Name: c.Name, Nodes: nodes, Link: redisstore.NewLinkConn(linkRDB), Channel: c.Channel, Sharded: c.RedisCluster, Relay: relay,
		Carrier: allowed.NewCarrier(redisstore.NewCarriedSets(rdb, prefix), 2*time.Second), Share: &allowed.Place{Keys: redisstore.NewSharing(rdb, prefix)}, ShareTo: slices.Clone(c.ShareTo),
	}
	return b, nil
}

// prepare checks the function library of each member not checked yet
// (prepareFunctions): a member whose Redis lacks it, where the hub may not
// load it, is logged, and its relays fail (counted) until its operator runs
// tracker redis-setup; the other members are served. The error is that
// of the first such member, which a hub of one Redis (no members file)
// stops at.
func (s *memberSet) prepare(ctx context.Context, log *slog.Logger) error {
	s.mu.Lock()
	var todo []*builtMember
	for _, b := range s.byName {
		if !b.checked {
			b.checked = true
			todo = append(todo, b)
		}
	}
	s.mu.Unlock()
	var first error
	for _, b := range todo {
		if err := prepareFunctions(ctx, b.relay.Prepare, log, "member "+b.conf.Name); err != nil {
			log.Error("a member's Redis lacks the function library; relays to it fail until its operator loads it", "member", b.conf.Name, "err", err)
			first = cmp.Or(first, err)
		}
	}
	return first
}

// functionsMissing counts the relays, to any member ever, that found a
// Redis without the function library.
func (s *memberSet) functionsMissing() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.missingGone
	for _, b := range s.byName {
		n += b.relay.FunctionsMissing()
	}
	return float64(n)
}

// closeAll closes every member's clients.
func (s *memberSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.byName {
		for _, c := range b.clients() {
			c.Close()
		}
	}
}

// membersReload is how often the hub looks at its members file.
const membersReload = 2 * time.Second

// watchMembers reads the members file every membersReload and, when it
// changed, gives the hub the members it lists: added members start, removed
// ones stop, the others go on untouched. A file that does not read or
// check is logged and the members running stay as they are.
func watchMembers(ctx context.Context, path string, set *memberSet, h *hub.Hub, log *slog.Logger) {
	last, _ := os.ReadFile(path)
	t := time.NewTicker(membersReload)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Equal(b, last) {
			continue
		}
		confs, err := members.Read(path)
		if err == nil {
			err = applyMembers(set, h, confs)
		}
		if err == nil {
			set.prepare(ctx, log) // logged there; the other members are served
		}
		if err != nil {
			log.Error("members file not applied; the members running stay", "err", err)
		} else {
			log.Info("members file applied", "members", len(confs))
		}
		last = b
	}
}

// applyMembers builds the members of confs and hands them to the hub.
func applyMembers(set *memberSet, h *hub.Hub, confs []members.Entry) error {
	ms, closing, err := set.build(confs)
	if err != nil {
		return err
	}
	if err := h.SetMembers(ms); err != nil {
		return err
	}
	for _, c := range closing {
		c.Close()
	}
	return nil
}
