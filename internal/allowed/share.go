package allowed

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// Torrent sharing. A node in allowed-torrents mode on a link offers the
// torrents it carries: it keeps their metainfo in a catalog in its own
// keyspace. A node that accepts shared torrents raises a flag. On every
// resync the hub copies each offered torrent that an accepting node lacks
// into that node's inbox (keys in the accepting node's keyspace; a node
// writes only its own keys). The accepting node validates what arrives,
// stores it in its directory, and from then on carries it; its carried set
// changed, so it says hello and is resynced with the torrent's peers.

// ShareOptions turns sharing on for a Set (before Run).
type ShareOptions struct {
	Offer  bool // keep a catalog of the carried torrents for the hub
	Accept bool // take torrents other nodes offer
	// Refused counts shared torrents refused as invalid; may be nil.
	Refused func()
}

// share is the sharing half of Sync: take the inbox, then offer the
// directory's torrents. It returns after the inbox's files are in the
// directory, so the scan that follows carries them.
func (s *Set) takeInbox(ctx context.Context) error {
	if !s.share.Accept {
		return nil
	}
	inbox, err := s.rdb.HGetAll(ctx, s.inbox).Result()
	if err != nil {
		return err
	}
	for name, body := range inbox {
		if _, err := torrentfile.Parse([]byte(body)); err != nil || len(name) != 40 {
			if s.share.Refused != nil {
				s.share.Refused()
			}
			s.log.Warn("shared torrent refused", "name", name, "err", err)
		} else if _, err := hex.DecodeString(name); err == nil {
			path := filepath.Join(s.dir, name+".torrent")
			if _, err := os.Stat(path); os.IsNotExist(err) {
				if err := torrentfile.WriteAtomic(path, []byte(body), 0o644); err != nil {
					return err // keep it in the inbox; next time
				}
				s.log.Info("carrying a shared torrent", "info_hash", name)
				if err := s.rdb.HSet(ctx, s.received, name, time.Now().Unix()).Err(); err != nil {
					return err
				}
			}
		}
		s.rdb.HDel(ctx, s.inbox, name)
	}
	return nil
}

// offer writes the catalog: the metainfo of every carried torrent, by its
// first info hash.
func (s *Set) offer(ctx context.Context, pipe redis.Pipeliner, files map[string]string) error {
	if !s.share.Offer {
		return nil
	}
	have, err := s.rdb.HKeys(ctx, s.catalog).Result()
	if err != nil {
		return err
	}
	had := map[string]bool{}
	for _, k := range have {
		had[k] = true
		if _, ok := files[k]; !ok {
			pipe.HDel(ctx, s.catalog, k)
		}
	}
	for k, path := range files {
		if had[k] {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		pipe.HSet(ctx, s.catalog, k, b)
	}
	if s.share.Accept {
		pipe.Set(ctx, s.accept, "1", 3*s.interval+time.Minute)
	}
	return nil
}

// Place is where a node's keys are: its member's Redis and key prefix.
type Place struct {
	RDB    redis.UniversalClient
	Prefix string
}

// Share is the hub's half: it copies every torrent offered by one of nodes
// into the inbox of each accepting node that neither carries it nor has it
// waiting, reading and writing each node where it is (nodes of several
// members: several Redis). It returns how many it copied. Invalid metainfo
// is counted by refused and not copied. A node that cannot be read or
// written now is skipped, and the first such error returned after the rest
// was done.
func Share(ctx context.Context, nodes map[string]Place, refused func()) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type state struct {
		accept  bool
		carried map[string]bool
	}
	states := map[string]state{}
	offered := map[string]string{} // hex ih -> node that offers it
	var first error
	failed := func(err error) {
		if first == nil {
			first = err
		}
	}
	names := slices.Sorted(maps.Keys(nodes))
	for _, n := range names {
		at := nodes[n]
		pipe := at.RDB.Pipeline()
		acc := pipe.Exists(ctx, redisstore.AcceptKey(at.Prefix, n))
		carried := pipe.SMembers(ctx, redisstore.AllowedKey(at.Prefix, n))
		cat := pipe.HKeys(ctx, redisstore.CatalogKey(at.Prefix, n))
		inbox := pipe.HKeys(ctx, redisstore.InboxKey(at.Prefix, n))
		if _, err := pipe.Exec(ctx); err != nil {
			// Unreadable now (its shard or member down): neither
			// offers nor receives this time; the next resync tries
			// again.
			failed(fmt.Errorf("share: read %s: %w", n, err))
			continue
		}
		st := state{accept: acc.Val() == 1, carried: map[string]bool{}}
		for _, m := range carried.Val() {
			st.carried[hex.EncodeToString([]byte(m))] = true
		}
		for _, k := range inbox.Val() {
			st.carried[k] = true
		}
		states[n] = st
		for _, k := range cat.Val() {
			offered[k] = n
		}
	}
	copied := 0
	for ih, from := range offered {
		var body []byte
		for _, n := range names {
			st, ok := states[n]
			if !ok || !st.accept || st.carried[ih] {
				continue
			}
			if body == nil {
				at := nodes[from]
				b, err := at.RDB.HGet(ctx, redisstore.CatalogKey(at.Prefix, from), ih).Bytes()
				if err != nil {
					failed(err)
					break
				}
				if _, err := torrentfile.Parse(b); err != nil {
					if refused != nil {
						refused()
					}
					break
				}
				body = b
			}
			if err := nodes[n].RDB.HSet(ctx, redisstore.InboxKey(nodes[n].Prefix, n), ih, body).Err(); err != nil {
				failed(err)
				continue
			}
			copied++
		}
	}
	return copied, first
}
