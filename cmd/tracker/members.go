package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/hub"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// membersFile is TRACKER_HUB_MEMBERS: the members of a network, each a
// tracker on its own Redis, as JSON.
type membersFile struct {
	Members []memberConfig `json:"members"`
}

// memberConfig is one member as the hub's operator writes it.
type memberConfig struct {
	// Name identifies the member in logs, metrics and status.
	Name string `json:"name"`
	// Nodes are the member's node ids (TRACKER_NODE_ID of its nodes): the
	// hub takes messages of these ids only, and only on this member's
	// channel.
	Nodes []string `json:"nodes"`
	// RedisURL is how the hub reaches the member's Redis, with the
	// credentials the member issued (`tracker acl`'s hub user).
	RedisURL     string `json:"redis_url"`
	RedisCluster bool   `json:"redis_cluster,omitempty"`
	// TLS of a rediss:// URL, as TRACKER_REDIS_CA_FILE and friends.
	RedisCAFile   string `json:"redis_ca_file,omitempty"`
	RedisCertFile string `json:"redis_cert_file,omitempty"`
	RedisKeyFile  string `json:"redis_key_file,omitempty"`
	// The member's TRACKER_REDIS_PREFIX and TRACKER_LINK_CHANNEL, when
	// not the hub's.
	Prefix  string `json:"prefix,omitempty"`
	Channel string `json:"channel,omitempty"`
	// ShareTo names the other members whose nodes may receive the
	// .torrent files this member's nodes offer ("*": every member): the
	// member's consent, kept by the hub's operator. Default: none (its
	// own nodes share with each other).
	ShareTo []string `json:"share_to,omitempty"`
	// linkURL is TRACKER_LINK_REDIS_URL of the single-Redis setup: the
	// link channel on a Redis of its own.
	linkURL string
}

// maxMembersFile bounds the file read.
const maxMembersFile = 1 << 20

// readMembers reads and checks a members file; every error names the
// file and, where it applies, the member.
func readMembers(path string) ([]memberConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMembersFile+1))
	if err != nil {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %w", err)
	}
	if len(b) > maxMembersFile {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s is larger than %d bytes", path, maxMembersFile)
	}
	return parseMembers(path, b)
}

func parseMembers(path string, b []byte) ([]memberConfig, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var mf membersFile
	if err := dec.Decode(&mf); err != nil {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s: one JSON object expected", path)
	}
	if len(mf.Members) == 0 {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s lists no members", path)
	}
	seen, names, owner := map[string]bool{}, map[string]bool{}, map[string]string{}
	for i, m := range mf.Members {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("TRACKER_HUB_MEMBERS: %s: member %d (%q): %s", path, i+1, m.Name, fmt.Sprintf(format, a...))
		}
		if err := bittorrent.ValidName("name", m.Name); err != nil {
			return nil, bad("%v", err)
		}
		if names[m.Name] {
			return nil, bad("the name is taken by an earlier member")
		}
		names[m.Name] = true
		if len(m.Nodes) == 0 {
			return nil, bad("\"nodes\" must list the member's node ids")
		}
		for _, n := range m.Nodes {
			if err := bittorrent.ValidName("node id", n); err != nil {
				return nil, bad("%v", err)
			}
			if o, ok := owner[n]; ok {
				return nil, bad("node id %q is member %q's already: a node id belongs to one member", n, o)
			}
			owner[n] = m.Name
		}
		if !strings.HasPrefix(m.RedisURL, "redis://") && !strings.HasPrefix(m.RedisURL, "rediss://") {
			return nil, bad("\"redis_url\" must start with redis:// or rediss://")
		}
		if (m.RedisCAFile != "" || m.RedisCertFile != "" || m.RedisKeyFile != "") && !strings.HasPrefix(m.RedisURL, "rediss://") {
			return nil, bad("TLS files are for a rediss:// URL")
		}
		if (m.RedisCertFile == "") != (m.RedisKeyFile == "") {
			return nil, bad("\"redis_cert_file\" and \"redis_key_file\" go together")
		}
		if m.Prefix != "" {
			if err := bittorrent.ValidName("prefix", m.Prefix); err != nil {
				return nil, bad("%v", err)
			}
		}
		if m.Channel != "" && link.ValidChannel(m.Channel) != nil {
			return nil, bad("\"channel\" must be a plain channel name")
		}
		// Two members on one Redis and one channel would each hear the
		// other's messages.
		where := redisWhere(m)
		if where != "" && seen[where] {
			return nil, bad("shares its Redis and link channel with an earlier member: give it a channel of its own")
		}
		seen[where] = true
	}
	for i, m := range mf.Members {
		for _, to := range m.ShareTo {
			if to != "*" && (!names[to] || to == m.Name) {
				return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s: member %d (%q): \"share_to\" names %q, which is not another member (a name, or \"*\" for all)", path, i+1, m.Name, to)
			}
		}
	}
	return mf.Members, nil
}

// redisWhere is a member's Redis address(es), database and channel, for
// telling members apart ("" when the URL does not parse: the client's
// error says why).
func redisWhere(m memberConfig) string {
	w := redisstore.Where(m.RedisURL, m.RedisCluster)
	if w == "" {
		return ""
	}
	return w + " " + m.Channel
}

// memberSet builds the hub's members from their configuration and keeps
// them while the configuration stands: on a reload, only members whose
// entry changed get new clients.
type memberSet struct {
	cfg    Config
	mu     sync.Mutex
	byName map[string]*builtMember
	// missingGone is what the relayers of members no longer there counted
	// of calls that found their Redis without the function library.
	missingGone uint64
}

type builtMember struct {
	conf      memberConfig
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
func (s *memberSet) build(confs []memberConfig) ([]hub.Member, []redisstore.Client, error) {
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

func (s *memberSet) newMember(c memberConfig) (*builtMember, error) {
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
	if c.linkURL != "" {
		if linkRDB, err = newRedisClient(c.linkURL, mc); err != nil {
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
		confs, err := readMembers(path)
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
func applyMembers(set *memberSet, h *hub.Hub, confs []memberConfig) error {
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
