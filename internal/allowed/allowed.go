// Package allowed is a node's allowed-torrents mode (BNBT's allowed_dir):
// the node carries only the torrents whose .torrent files are in a
// directory or were uploaded through the admin API. The set lives in the
// node's keyspace, so every replica of the node agrees, and a flag key tells
// the hub that the node is in this mode; each replica keeps a copy in memory
// so that checking an announce costs no Redis round trip.
package allowed

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// Keys is where a node keeps its allowed-torrents state
// (redisstore.AllowedKeys): the carried set and the mode flag, and, for
// sharing, its catalog, inbox, received and declined torrents.
type Keys interface {
	Carried(ctx context.Context) ([]string, error)
	Write(ctx context.Context, w redisstore.AllowedWrite) error
	Received(ctx context.Context) (map[string]string, error)
	ShareKeys
}

// ShareKeys is the part of Keys that torrent sharing uses (share.go).
type ShareKeys interface {
	Catalog(ctx context.Context) ([]string, error)
	ReceivedNames(ctx context.Context) ([]string, error)
	MarkReceived(ctx context.Context, name string, t time.Time) error
	Inbox(ctx context.Context) (map[string]string, error)
	TakeFromInbox(ctx context.Context, name string) error
	AreDeclined(ctx context.Context, names []string) ([]bool, error)
	Decline(ctx context.Context, hashes []string, t time.Time, keep int64) error
	Undecline(ctx context.Context, hashes []string) error
}

var _ Keys = (*redisstore.AllowedKeys)(nil)

// Set is the torrents a node carries.
type Set struct {
	keys     Keys
	share    ShareOptions
	dir      string
	interval time.Duration
	log      *slog.Logger

	mu sync.RWMutex
	// paths maps every carried info hash (v1, and truncated v2) to its
	// file, so checks and downloads never read the directory.
	paths map[bittorrent.InfoHash]string
	// listed is the carried torrents for the admin panel, by name.
	listed []Torrent

	// scanMu serializes scans; cache holds what each file held when it
	// was last read, so a rescan reads only files that changed.
	scanMu sync.Mutex
	cache  map[string]scanned

	// OnChange, when set (before Run), is called after the carried set
	// changed: the link says hello, so the hub resyncs this node.
	OnChange func()
}

// New returns the allowed set of a node, kept in keys, fed from dir. It
// starts nothing.
func New(keys Keys, dir string, interval time.Duration, log *slog.Logger) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("TRACKER_ALLOWED_DIR: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("TRACKER_ALLOWED_DIR: %s is not a directory", dir)
	}
	return &Set{keys: keys, dir: dir, interval: interval,
		log: log.With("allowed_dir", dir), paths: map[bittorrent.InfoHash]string{}, cache: map[string]scanned{}}, nil
}

// Share turns torrent sharing on (call before Run).
func (s *Set) Share(o ShareOptions) { s.share = o }

// Carries reports whether the node carries ih. It reads memory only.
func (s *Set) Carries(ih bittorrent.InfoHash) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.paths[ih]
	return ok
}

// Run rescans the directory and refreshes the set every interval until ctx
// ends. The first scan happens at once.
func (s *Set) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("allowed torrents not refreshed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync makes the Redis set equal to the directory's torrents, raises the
// mode flag, and loads the set into memory.
func (s *Set) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.takeInbox(ctx); err != nil {
		return err
	}
	dirPaths, files, listed := s.scan()
	if s.share.Accept {
		if err := s.declineRemoved(ctx, files); err != nil {
			return err
		}
	}
	cur, err := s.keys.Carried(ctx)
	if err != nil {
		return err
	}
	inRedis := map[string]bool{}
	for _, m := range cur {
		inRedis[m] = true
	}
	w := redisstore.AllowedWrite{ModeTTL: 3*s.interval + time.Minute}
	for ih := range dirPaths {
		if !inRedis[string(ih[:])] {
			w.Add = append(w.Add, string(ih[:]))
		}
	}
	for m := range inRedis {
		var ih bittorrent.InfoHash
		copy(ih[:], m)
		if _, ok := dirPaths[ih]; !ok {
			w.Remove = append(w.Remove, m)
		}
	}
	if err := s.offer(ctx, &w, files); err != nil {
		return err
	}
	if err := s.keys.Write(ctx, w); err != nil {
		return err
	}
	s.mu.Lock()
	changed := !sameKeys(s.paths, dirPaths)
	s.paths = dirPaths
	s.listed = listed
	s.mu.Unlock()
	if changed && s.OnChange != nil {
		s.OnChange()
	}
	return nil
}

func sameKeys(a, b map[bittorrent.InfoHash]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// scanned is what one file held when it was last read: its size and
// modification time, and its hashes and summary or why it was refused.
type scanned struct {
	size   int64
	mod    time.Time
	hashes []bittorrent.InfoHash
	t      Torrent
	err    error
}

// scan lists the directory's .torrent files and returns the file of each
// info hash (v1 and, for v2 and hybrid torrents, the truncated v2 hash that
// clients announce), the files by their first hash (hex), and the torrents
// sorted by name. A file whose name, size and modification time are as at
// the last scan is not read again; a file refused is logged when it is
// read, not at every rescan.
func (s *Set) scan() (map[bittorrent.InfoHash]string, map[string]string, []Torrent) {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	out := map[bittorrent.InfoHash]string{}
	files := map[string]string{}
	var listed []Torrent
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		s.log.Warn("torrent directory not read", "err", err)
		return out, files, listed
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) != ".torrent" {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since the listing
		}
		seen[e.Name()] = true
		path := filepath.Join(s.dir, e.Name())
		c, ok := s.cache[e.Name()]
		if !ok || c.size != info.Size() || !c.mod.Equal(info.ModTime()) {
			c = readScanned(path, info)
			s.cache[e.Name()] = c
			if c.err != nil {
				s.log.Warn("torrent file refused", "file", e.Name(), "err", c.err)
			}
		}
		if c.err != nil {
			continue
		}
		for _, ih := range c.hashes {
			out[ih] = path
		}
		files[c.t.InfoHash] = path
		listed = append(listed, c.t)
	}
	for name := range s.cache {
		if !seen[name] {
			delete(s.cache, name)
		}
	}
	slices.SortFunc(listed, func(a, b Torrent) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.InfoHash, b.InfoHash))
	})
	return out, files, listed
}

// readScanned reads and parses one file.
func readScanned(path string, info fs.FileInfo) scanned {
	c := scanned{size: info.Size(), mod: info.ModTime()}
	f, err := torrentfile.Read(path)
	if err != nil {
		c.err = err
		return c
	}
	c.hashes = hashesOf(f)
	sum := f.Summary()
	c.t = Torrent{InfoHash: c.hashes[0].String(), Name: sum.Name, Size: sum.Size}
	return c
}

// Torrent is one carried torrent as the admin panel lists it.
type Torrent struct {
	InfoHash string `json:"info_hash"` // the first of its hashes (v1, else truncated v2), hex
	Name     string `json:"name"`
	Size     int64  `json:"size"`
	// Received is when the hub shared it to this node (zero: it was
	// put in the directory or uploaded here).
	Received time.Time `json:"received,omitzero"`
}

// Torrents returns the carried torrents, by name, with when each shared
// one was received.
func (s *Set) Torrents(ctx context.Context) ([]Torrent, error) {
	s.mu.RLock()
	out := slices.Clone(s.listed)
	s.mu.RUnlock()
	got, err := s.keys.Received(ctx)
	if err != nil {
		return out, err
	}
	for i, t := range out {
		if v, err := strconv.ParseInt(got[t.InfoHash], 10, 64); err == nil {
			out[i].Received = time.Unix(v, 0).UTC()
		}
	}
	return out, nil
}

func hashesOf(f *torrentfile.File) []bittorrent.InfoHash {
	var out []bittorrent.InfoHash
	if h, ok := f.InfoHashV1(); ok {
		out = append(out, h)
	}
	if h, ok := f.InfoHashV2(); ok {
		var t bittorrent.InfoHash
		copy(t[:], h[:20])
		out = append(out, t)
	}
	return out
}

// Add stores an uploaded .torrent in the directory (named by its info hash)
// and carries it at once.
func (s *Set) Add(ctx context.Context, b []byte) (bittorrent.InfoHash, error) {
	f, err := torrentfile.Parse(b)
	if err != nil {
		return bittorrent.InfoHash{}, bittorrent.ClientError("invalid torrent: " + err.Error())
	}
	hs := hashesOf(f)
	path := filepath.Join(s.dir, hex.EncodeToString(hs[0][:])+".torrent")
	if err := torrentfile.WriteAtomic(path, b, 0o644); err != nil {
		return hs[0], err
	}
	// Added by the operator: no longer declined.
	if err := s.keys.Undecline(ctx, hexHashes(hs)); err != nil {
		return hs[0], err
	}
	return hs[0], s.Sync(ctx)
}

// Remove deletes the directory's torrents with info hash ih.
func (s *Set) Remove(ctx context.Context, ih bittorrent.InfoHash) error {
	path, err := s.find(ih)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	// Deleted stays deleted: the hub shares it here no more.
	if err := s.decline(ctx, s.hashesAt(path)); err != nil {
		return err
	}
	return s.Sync(ctx)
}

// ErrNotCarried is returned for a torrent the node does not carry.
var ErrNotCarried = errors.New("torrent not carried")

// File returns the .torrent of ih.
func (s *Set) File(ih bittorrent.InfoHash) ([]byte, error) {
	path, err := s.find(ih)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// hashesAt returns the carried info hashes (hex) whose file is path.
func (s *Set) hashesAt(path string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for ih, p := range s.paths {
		if p == path {
			out = append(out, ih.String())
		}
	}
	return out
}

func (s *Set) find(ih bittorrent.InfoHash) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p, ok := s.paths[ih]; ok {
		return p, nil
	}
	return "", ErrNotCarried
}

// List returns the carried info hashes.
func (s *Set) List() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.paths))
	for ih := range s.paths {
		out = append(out, ih.String())
	}
	return out
}

// MaxCarried bounds the carried set the hub reads of one node.
const MaxCarried = 1 << 20

// Carrier is the hub's view of which torrents each node carries: nodes
// without the mode flag carry everything; others carry their set. Sets are
// cached for refresh.
type Carrier struct {
	sets    CarriedSets
	refresh time.Duration
	max     int64 // MaxCarried

	mu    sync.Mutex
	nodes map[string]*nodeSet
}

type nodeSet struct {
	fetched    time.Time
	all        bool
	hashes     map[string]bool
	refreshing bool // a read in the background is under way
}

// CarriedSets reads nodes' carried sets (redisstore.CarriedSets): whether
// node is in allowed-torrents mode, and its set (raw info hashes), or an
// error for a set larger than max.
type CarriedSets interface {
	Carried(ctx context.Context, node string, max int64) (mode bool, members []string, err error)
}

var _ CarriedSets = (*redisstore.CarriedSets)(nil)

// NewCarrier returns a Carrier that reads node sets from sets at most once
// per refresh.
func NewCarrier(sets CarriedSets, refresh time.Duration) *Carrier {
	return &Carrier{sets: sets, refresh: refresh, max: MaxCarried, nodes: map[string]*nodeSet{}}
}

// Carries implements the hub's Carrier. A node's set is read the first
// time it is asked about; after that a set older than refresh is read again
// in the background while the one held answers, so a slow or paused Redis
// never holds up a relay. When a set cannot be read (its Redis Cluster
// shard down), the set last read stands, and with none it says no: a relay
// dropped now is repaired by the next resync; one stored wrongly is not.
// Either way it is tried again no sooner than refresh.
func (c *Carrier) Carries(ctx context.Context, node string, ih bittorrent.InfoHash) bool {
	ns := c.set(ctx, node)
	return ns.all || ns.hashes[string(ih[:])]
}

// Listed reports whether node is in allowed-torrents mode and carries ih:
// a torrent its operator chose (the hub's Carrier).
func (c *Carrier) Listed(ctx context.Context, node string, ih bittorrent.InfoHash) bool {
	ns := c.set(ctx, node)
	return !ns.all && ns.hashes[string(ih[:])]
}

// set returns node's set as Carries describes.
func (c *Carrier) set(ctx context.Context, node string) *nodeSet {
	c.mu.Lock()
	ns := c.nodes[node]
	stale := ns != nil && !ns.refreshing && time.Since(ns.fetched) > c.refresh
	if stale {
		ns.refreshing = true
	}
	c.mu.Unlock()
	switch {
	case ns == nil:
		ns = c.read(ctx, node, nil)
	case stale:
		go c.read(context.WithoutCancel(ctx), node, ns)
	}
	return ns
}

// read reads node's set and keeps it; on an error it keeps old's (or an
// empty set) as if read now.
func (c *Carrier) read(ctx context.Context, node string, old *nodeSet) *nodeSet {
	fresh, err := c.fetch(ctx, node)
	if err != nil {
		fresh = &nodeSet{fetched: time.Now(), hashes: map[string]bool{}}
		if old != nil {
			fresh.all, fresh.hashes = old.all, old.hashes
		}
	}
	c.mu.Lock()
	c.nodes[node] = fresh
	c.mu.Unlock()
	return fresh
}

// Forget drops the cached set of node (the hub calls it when the node says
// hello, which it does after its set changed).
func (c *Carrier) Forget(node string) {
	c.mu.Lock()
	delete(c.nodes, node)
	c.mu.Unlock()
}

func (c *Carrier) fetch(ctx context.Context, node string) (*nodeSet, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// A node's set is its own to write: one larger than any directory
	// the node itself would carry is not read (the node then carries
	// nothing, for the hub, until it is within bounds).
	mode, members, err := c.sets.Carried(ctx, node, c.max)
	if err != nil {
		return nil, err
	}
	ns := &nodeSet{fetched: time.Now(), all: !mode, hashes: map[string]bool{}}
	for _, m := range members {
		ns.hashes[m] = true
	}
	return ns, nil
}
