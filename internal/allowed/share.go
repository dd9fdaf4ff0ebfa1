package allowed

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// Torrent sharing. A node in allowed-torrents mode on a link may offer the
// torrents it carries: it keeps their metainfo in a catalog in its own
// keyspace. A node that accepts shared torrents raises a flag. On every
// resync the hub copies each offered torrent that an accepting node lacks
// into that node's inbox (keys in the accepting node's keyspace; a node
// writes only its own keys), when the offering node's member consents to
// the receiving node's member (the hub's members file) and within the
// offering member's limits. The accepting node validates what arrives,
// stores it in its directory, and from then on carries it; its carried set
// changed, so it says hello and is resynced with the torrent's peers.
//
// A torrent the operator deletes (the admin API, or its file removed from
// the directory) is declined: recorded in the node's keyspace, never
// copied again by the hub nor taken from the inbox, until the operator
// adds it again. A node never offers on what it received: each member's
// consent covers its own torrents, not what others shared with it.

// ShareOptions turns sharing on for a Set (before Run).
type ShareOptions struct {
	Offer  bool // keep a catalog of the carried torrents for the hub
	Accept bool // take torrents other nodes offer
	// Refused counts shared torrents refused, by reason (Refused*); may
	// be nil.
	Refused func(reason string)
}

// MaxDeclined bounds a node's declined list; the newest are kept.
const MaxDeclined = 10000

// takeInbox takes the inbox: valid torrents, filed under their own info
// hash and not declined, are stored in the directory; the rest is refused
// and counted, with one log line for all. It returns after the inbox's
// files are in the directory, so the scan that follows carries them.
func (s *Set) takeInbox(ctx context.Context) error {
	if !s.share.Accept {
		return nil
	}
	inbox, err := s.keys.Inbox(ctx)
	if err != nil || len(inbox) == 0 {
		return err
	}
	names := slices.Sorted(maps.Keys(inbox))
	declined, err := s.keys.AreDeclined(ctx, names)
	if err != nil {
		return err
	}
	refused := map[string]int{}
	for i, name := range names {
		reason := ""
		if declined[i] {
			reason = RefusedDeclined
		} else {
			reason = checkShared(name, []byte(inbox[name]))
		}
		if reason != "" {
			refused[reason]++
			if s.share.Refused != nil {
				s.share.Refused(reason)
			}
		} else if err := s.store(ctx, name, []byte(inbox[name])); err != nil {
			return err // keep it in the inbox; next time
		}
		if err := s.keys.TakeFromInbox(ctx, name); err != nil {
			return err
		}
	}
	if len(refused) > 0 {
		s.log.Warn("shared torrents refused", "by_reason", refused)
	}
	return nil
}

// checkShared returns why a shared torrent filed under name is refused
// ("": it is not).
func checkShared(name string, body []byte) string {
	f, err := torrentfile.Parse(body)
	if err != nil {
		return RefusedInvalid
	}
	if hashesOf(f)[0].String() != name {
		return RefusedWrongName
	}
	return ""
}

// store writes a shared torrent into the directory, unless a file of
// that name is there, and records when it was received.
func (s *Set) store(ctx context.Context, name string, body []byte) error {
	path := filepath.Join(s.dir, name+".torrent")
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := torrentfile.WriteAtomic(path, body, 0o644); err != nil {
		return err
	}
	s.log.Info("carrying a shared torrent", "info_hash", name)
	return s.keys.MarkReceived(ctx, name, time.Now())
}

// decline records that the operator deleted the torrents of hashes (hex),
// which are no longer received ones.
func (s *Set) decline(ctx context.Context, hashes []string) error {
	if len(hashes) == 0 {
		return nil
	}
	return s.keys.Decline(ctx, hashes, time.Now(), MaxDeclined)
}

// declineRemoved declines the received torrents whose files are gone
// from the directory (removed by hand). files are those the scan found;
// a file is looked for once more before it is declined, since another
// replica may have stored it since the scan (it writes the file before
// it records it as received).
func (s *Set) declineRemoved(ctx context.Context, files map[string]string) error {
	received, err := s.keys.ReceivedNames(ctx)
	if err != nil {
		return err
	}
	var gone []string
	for _, name := range received {
		if _, ok := files[name]; ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.dir, name+".torrent")); errors.Is(err, fs.ErrNotExist) {
			gone = append(gone, name)
		}
	}
	return s.decline(ctx, gone)
}

// offer writes the catalog: the metainfo of every carried torrent that was
// not received from another node, by its first info hash, into w. Files
// already in the catalog are not read again.
func (s *Set) offer(ctx context.Context, w *redisstore.AllowedWrite, files map[string]string) error {
	if s.share.Accept {
		w.AcceptTTL = 3*s.interval + time.Minute
	}
	if !s.share.Offer {
		w.DropCatalog = true // offered before, no longer
		return nil
	}
	have, err := s.keys.Catalog(ctx)
	if err != nil {
		return err
	}
	received, err := s.keys.ReceivedNames(ctx)
	if err != nil {
		return err
	}
	offered := maps.Clone(files)
	for _, k := range received {
		delete(offered, k)
	}
	had := map[string]bool{}
	for _, k := range have {
		had[k] = true
		if _, ok := offered[k]; !ok {
			w.CatalogDel = append(w.CatalogDel, k)
		}
	}
	for k, path := range offered {
		if had[k] {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if w.CatalogSet == nil {
			w.CatalogSet = map[string][]byte{}
		}
		w.CatalogSet[k] = b
	}
	return nil
}

// hexHashes returns the hashes, in hex.
func hexHashes(hs []bittorrent.InfoHash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}
