package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The allowed-torrents keys of a node (AllowedKey and the keys after it)
// and the hub's reads and writes of other nodes' ones (torrent sharing).
// The rules (what to carry, what to share, the bounds) are the allowed
// package's; what is here is only how they are kept in Redis.

// AllowedKeys is one node's allowed-torrents keys: its carried set and
// mode flag, its catalog of offered torrents, its inbox, its accept flag,
// the shared torrents it received and those it declined.
type AllowedKeys struct {
	rdb                                                   redis.UniversalClient
	set, flag, catalog, inbox, accept, received, declined string
}

// NewAllowedKeys returns node's allowed-torrents keys under prefix on rdb.
func NewAllowedKeys(rdb redis.UniversalClient, prefix, node string) *AllowedKeys {
	return &AllowedKeys{rdb: rdb, set: AllowedKey(prefix, node), flag: AllowedModeKey(prefix, node), catalog: CatalogKey(prefix, node),
		inbox: InboxKey(prefix, node), accept: AcceptKey(prefix, node), received: ReceivedKey(prefix, node), declined: DeclinedKey(prefix, node)}
}

// Carried returns the carried set's members (raw 20-byte info hashes).
func (k *AllowedKeys) Carried(ctx context.Context) ([]string, error) {
	return k.rdb.SMembers(ctx, k.set).Result()
}

// AllowedWrite is one refresh of a node's allowed keys, written in one
// pipeline: the carried set's additions and removals (raw info hashes),
// the mode flag (and the accept flag, when AcceptTTL is not 0) raised for
// their TTLs, and the catalog: dropped whole (DropCatalog), or its entries
// removed (CatalogDel) and written (CatalogSet), by hex info hash.
type AllowedWrite struct {
	Add, Remove []string
	ModeTTL     time.Duration
	AcceptTTL   time.Duration
	DropCatalog bool
	CatalogDel  []string
	CatalogSet  map[string][]byte
}

// Write writes w in one pipeline.
func (k *AllowedKeys) Write(ctx context.Context, w AllowedWrite) error {
	pipe := k.rdb.Pipeline()
	for _, m := range w.Add {
		pipe.SAdd(ctx, k.set, m)
	}
	for _, m := range w.Remove {
		pipe.SRem(ctx, k.set, m)
	}
	pipe.Set(ctx, k.flag, "1", w.ModeTTL)
	if w.AcceptTTL > 0 {
		pipe.Set(ctx, k.accept, "1", w.AcceptTTL)
	}
	if w.DropCatalog {
		pipe.Del(ctx, k.catalog)
	}
	for _, h := range w.CatalogDel {
		pipe.HDel(ctx, k.catalog, h)
	}
	for h, b := range w.CatalogSet {
		pipe.HSet(ctx, k.catalog, h, b)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Catalog returns the hex info hashes in the node's catalog.
func (k *AllowedKeys) Catalog(ctx context.Context) ([]string, error) {
	return k.rdb.HKeys(ctx, k.catalog).Result()
}

// Received returns the shared torrents the node received: hex info hash
// to when (unix seconds, as written by MarkReceived).
func (k *AllowedKeys) Received(ctx context.Context) (map[string]string, error) {
	return k.rdb.HGetAll(ctx, k.received).Result()
}

// ReceivedNames returns the hex info hashes of the received torrents.
func (k *AllowedKeys) ReceivedNames(ctx context.Context) ([]string, error) {
	return k.rdb.HKeys(ctx, k.received).Result()
}

// MarkReceived records that the shared torrent name was received at t.
func (k *AllowedKeys) MarkReceived(ctx context.Context, name string, t time.Time) error {
	return k.rdb.HSet(ctx, k.received, name, t.Unix()).Err()
}

// Inbox returns the inbox: hex info hash to the torrent's bytes.
func (k *AllowedKeys) Inbox(ctx context.Context) (map[string]string, error) {
	return k.rdb.HGetAll(ctx, k.inbox).Result()
}

// TakeFromInbox removes name from the inbox.
func (k *AllowedKeys) TakeFromInbox(ctx context.Context, name string) error {
	return k.rdb.HDel(ctx, k.inbox, name).Err()
}

// AreDeclined reports, for each name, whether it is declined, in one
// round trip.
func (k *AllowedKeys) AreDeclined(ctx context.Context, names []string) ([]bool, error) {
	pipe := k.rdb.Pipeline()
	declined := make([]*redis.FloatCmd, len(names))
	for i, name := range names {
		declined[i] = pipe.ZScore(ctx, k.declined, name)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]bool, len(names))
	for i, d := range declined {
		out[i] = d.Err() == nil
	}
	return out, nil
}

// Decline records hashes (hex) as declined at t, keeps the newest keep of
// the declined list, and drops them from the received ones, in one
// pipeline.
func (k *AllowedKeys) Decline(ctx context.Context, hashes []string, t time.Time, keep int64) error {
	now := float64(t.Unix())
	pipe := k.rdb.Pipeline()
	for _, h := range hashes {
		pipe.ZAdd(ctx, k.declined, redis.Z{Score: now, Member: h})
	}
	pipe.ZRemRangeByRank(ctx, k.declined, 0, -keep-1)
	pipe.HDel(ctx, k.received, hashes...)
	_, err := pipe.Exec(ctx)
	return err
}

// Undecline drops hashes (hex) from the declined list.
func (k *AllowedKeys) Undecline(ctx context.Context, hashes []string) error {
	return k.rdb.ZRem(ctx, k.declined, hashes).Err()
}

// Carried sets, for the hub: which torrents the nodes under a prefix carry.
type CarriedSets struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewCarriedSets returns the carried sets of the nodes under prefix on rdb.
func NewCarriedSets(rdb redis.UniversalClient, prefix string) *CarriedSets {
	return &CarriedSets{rdb: rdb, prefix: prefix}
}

// Carried reads node's mode flag and carried set (raw info hashes). A set
// of more than max members is not read: a node's set is its own to write,
// and one larger than any directory the node itself would carry is an
// error.
func (c *CarriedSets) Carried(ctx context.Context, node string, max int64) (mode bool, members []string, err error) {
	pipe := c.rdb.Pipeline()
	flag := pipe.Exists(ctx, AllowedModeKey(c.prefix, node))
	size := pipe.SCard(ctx, AllowedKey(c.prefix, node))
	if _, err := pipe.Exec(ctx); err != nil {
		return false, nil, err
	}
	if size.Val() > max {
		return false, nil, fmt.Errorf("node %s carries %d torrents, more than %d", node, size.Val(), max)
	}
	ms, err := c.rdb.SMembers(ctx, AllowedKey(c.prefix, node)).Result()
	if err != nil {
		return false, nil, err
	}
	return flag.Val() != 0, ms, nil
}

// Sharing is the hub's access to the sharing keys of the nodes under a
// prefix on one Redis: their accept flags, catalogs, inboxes, carried and
// declined sets.
type Sharing struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewSharing returns the sharing keys of the nodes under prefix on rdb.
func NewSharing(rdb redis.UniversalClient, prefix string) *Sharing {
	return &Sharing{rdb: rdb, prefix: prefix}
}

// ShareLens are the lengths of a node's sharing lists.
type ShareLens struct {
	Accept         bool
	Catalog, Inbox int64
}

// Lens reads whether node accepts, and how long its catalog and inbox
// are, in one round trip.
func (s *Sharing) Lens(ctx context.Context, node string) (ShareLens, error) {
	pipe := s.rdb.Pipeline()
	acc := pipe.Exists(ctx, AcceptKey(s.prefix, node))
	catLen := pipe.HLen(ctx, CatalogKey(s.prefix, node))
	inboxLen := pipe.HLen(ctx, InboxKey(s.prefix, node))
	if _, err := pipe.Exec(ctx); err != nil {
		return ShareLens{}, err
	}
	return ShareLens{Accept: acc.Val() == 1, Catalog: catLen.Val(), Inbox: inboxLen.Val()}, nil
}

// ShareLists are a node's sharing lists: its catalog (hex info hashes),
// and, when it accepts, what it carries (raw), has waiting in its inbox
// (hex) and declined (hex, newest first).
type ShareLists struct {
	Catalog, Carried, Inbox, Declined []string
}

// Lists reads node's catalog (when catalog) and its carried set, inbox
// and newest maxDeclined declined (when accept), in one round trip.
func (s *Sharing) Lists(ctx context.Context, node string, catalog, accept bool, maxDeclined int64) (ShareLists, error) {
	var out ShareLists
	if !catalog && !accept {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	var cat, carried, inbox, declined *redis.StringSliceCmd
	if catalog {
		cat = pipe.HKeys(ctx, CatalogKey(s.prefix, node))
	}
	if accept {
		carried = pipe.SMembers(ctx, AllowedKey(s.prefix, node))
		inbox = pipe.HKeys(ctx, InboxKey(s.prefix, node))
		declined = pipe.ZRevRange(ctx, DeclinedKey(s.prefix, node), 0, maxDeclined-1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return out, err
	}
	if cat != nil {
		out.Catalog = cat.Val()
	}
	if accept {
		out.Carried, out.Inbox, out.Declined = carried.Val(), inbox.Val(), declined.Val()
	}
	return out, nil
}

// OfferedSize returns the size of node's offered torrent ih (hex).
func (s *Sharing) OfferedSize(ctx context.Context, node, ih string) (int64, error) {
	return s.rdb.HStrLen(ctx, CatalogKey(s.prefix, node), ih).Result()
}

// Offered returns node's offered torrent ih (hex); false when it is not
// offered (any more).
func (s *Sharing) Offered(ctx context.Context, node, ih string) ([]byte, bool, error) {
	b, err := s.rdb.HGet(ctx, CatalogKey(s.prefix, node), ih).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// Deliver puts torrent ih (hex) into node's inbox.
func (s *Sharing) Deliver(ctx context.Context, node, ih string, body []byte) error {
	return s.rdb.HSet(ctx, InboxKey(s.prefix, node), ih, body).Err()
}
