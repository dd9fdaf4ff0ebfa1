package redisstore

import (
	"cmp"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// The writers of the swarm index (IndexKeys): a node's link publisher (its
// own clients' swarms), a node without the link (the same, for its admin
// page), and the hub's relayer (the swarms it writes peers into, so that a
// node's index lists every swarm it holds). Each writes a torrent's entry
// at most once per IndexRefresh while the torrent is active, never on
// every announce.
//
// Writing trims: the pipeline that writes entries into a part of the index
// first removes that part's entries older than the peer lifetime plus
// indexSlack (those no reader counts any more), at most once per part per
// IndexRefresh and per Indexer. So an index holds about the torrents active
// within that time, whether or not a hub runs (the hub's resync trims too,
// but resyncs are rare and a node without the link has none), and trimming
// costs one ZREMRANGEBYSCORE per part a minute, nothing per announce. The
// trim's time is the older of the Indexer's clock and the newest entry it
// writes into the part: a relayed change seen ahead of this clock (within
// the link's skew) never trims early, and a resync's old changes trim less,
// never more.

// IndexRefresh is how often a torrent's entry in a swarm index is
// refreshed while the torrent is active; readers keep entries for the peer
// lifetime plus indexSlack.
const IndexRefresh = time.Minute

// maxIndexed bounds what an Indexer remembers; beyond it, it forgets
// everything (the cost is one more write of each entry).
const maxIndexed = 1 << 20

// maxIndexedNodes bounds the nodes whose index keys an Indexer caches.
const maxIndexedNodes = 4096

// maxTrimmed bounds the index parts whose last trim an Indexer remembers
// (256 nodes' indexes); beyond it, it forgets them all, and each part is
// trimmed once more at its next write.
const maxTrimmed = 256 * IndexParts

// Entries are index writes: key (a part of a node's index) to members.
type Entries map[string][]redis.Z

// Indexer decides which index entries are due, and writes them queued
// (Queue, Run) or hands them to the caller's pipeline (Due, Forget). It is
// safe for concurrent use.
type Indexer struct {
	rdb    redis.UniversalClient
	prefix string
	queue  chan Entries

	max     int // entries remembered at most (maxIndexed unless set lower)
	mu      sync.Mutex
	written map[indexEntry]int64 // when each entry was last written (its change's time)
	// keys caches each node's index keys, so that deciding whether an
	// entry is due (on every announce of a node without the link)
	// allocates nothing.
	keys map[string]*[IndexParts]string
	// keepMs is how long an entry counts (the peer lifetime plus
	// indexSlack); 0: never trimmed here.
	keepMs  int64
	now     func() time.Time
	trimmed map[string]int64 // index part -> time of its last trim (unix ms)
}

type indexEntry struct {
	key string
	ih  bittorrent.InfoHash
}

// NewIndexer returns an indexer of the nodes under prefix; queue bounds
// the batches Queue may hold for Run. Its writes trim the parts they write
// into of the entries older than lifetime (the peer lifetime) plus
// indexSlack; a lifetime of 0 never trims.
func NewIndexer(rdb redis.UniversalClient, prefix string, queue int, lifetime time.Duration) *Indexer {
	x := &Indexer{rdb: rdb, prefix: prefix, queue: make(chan Entries, queue), max: maxIndexed, written: map[indexEntry]int64{}, keys: map[string]*[IndexParts]string{},
		now: time.Now, trimmed: map[string]int64{}}
	if lifetime > 0 {
		x.keepMs = (lifetime + indexSlack).Milliseconds()
	}
	return x
}

// nodeIndexQueue bounds a node's index writes waiting for Redis; beyond
// it a batch's entries are left unwritten and written with a later change.
const nodeIndexQueue = 64

// NewNodeIndex returns a node's swarm index writer: the one writer of the
// index of the node's own swarms (the hub's Relayer indexes the swarms it
// relays into). With the link, link.Node queues the changes it publishes;
// without it, IndexSink queues every change; Run writes them, off the
// announce path.
func NewNodeIndex(rdb redis.UniversalClient, prefix string, lifetime time.Duration) *Indexer {
	return NewIndexer(rdb, prefix, nodeIndexQueue, lifetime)
}

// Due returns the entries of node's index that changes make due, and
// takes them as written (Forget them if the write fails).
func (x *Indexer) Due(node string, changes ...bittorrent.PeerChange) Entries {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.written) >= x.max {
		clear(x.written)
	}
	keys := x.keys[node]
	if keys == nil {
		if len(x.keys) >= maxIndexedNodes {
			clear(x.keys)
		}
		keys = (*[IndexParts]string)(IndexKeys(x.prefix, node))
		x.keys[node] = keys
	}
	var out Entries
	for _, c := range changes {
		e := indexEntry{keys[int(c.InfoHash[0])%IndexParts], c.InfoHash}
		if last, ok := x.written[e]; ok && c.Seen-last < IndexRefresh.Milliseconds() {
			continue
		}
		x.written[e] = c.Seen
		if out == nil {
			out = Entries{}
		}
		out[e.key] = append(out[e.key], redis.Z{Score: float64(c.Seen), Member: string(c.InfoHash[:])})
	}
	return out
}

// Forget takes entries as not written, so that the next change of their
// torrents writes them.
func (x *Indexer) Forget(entries Entries) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for key, zs := range entries {
		for _, z := range zs {
			delete(x.written, indexEntry{key, bittorrent.InfoHash([]byte(z.Member.(string)))})
		}
	}
}

// Queue queues the entries changes make due for Run, off the caller's
// path; when the queue is full they are forgotten (written with a later
// change) and Queue reports false.
func (x *Indexer) Queue(node string, changes ...bittorrent.PeerChange) bool {
	due := x.Due(node, changes...)
	if due == nil {
		return true
	}
	select {
	case x.queue <- due:
		return true
	default:
		x.Forget(due)
		return false
	}
}

// Add adds entries to pipe, each part's trim first when it is due, and
// returns the commands, for Failed.
func (x *Indexer) Add(ctx context.Context, pipe redis.Pipeliner, entries Entries) map[string]*redis.IntCmd {
	adds := make(map[string]*redis.IntCmd, len(entries))
	for key, zs := range entries {
		if cutoff, ok := x.trimDue(key, zs); ok {
			pipe.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(cutoff, 10))
		}
		adds[key] = pipe.ZAdd(ctx, key, zs...)
	}
	return adds
}

// trimDue reports whether writing zs into part key trims it, and below
// which score (inclusive, as Relayer.Indexed and Store.Held count only
// entries above it), and takes the trim as done.
func (x *Indexer) trimDue(key string, zs []redis.Z) (int64, bool) {
	if x.keepMs == 0 || len(zs) == 0 {
		return 0, false
	}
	at := x.now().UnixMilli()
	newest := zs[0].Score
	for _, z := range zs[1:] {
		newest = max(newest, z.Score)
	}
	at = min(at, int64(newest))
	x.mu.Lock()
	defer x.mu.Unlock()
	if last, ok := x.trimmed[key]; ok && at-last < IndexRefresh.Milliseconds() {
		return 0, false
	}
	if len(x.trimmed) >= maxTrimmed {
		clear(x.trimmed)
	}
	x.trimmed[key] = at
	return at - x.keepMs, true
}

// Failed forgets the entries whose commands failed and returns the first
// error.
func (x *Indexer) Failed(entries Entries, adds map[string]*redis.IntCmd) error {
	var first error
	failed := Entries{}
	for key, add := range adds {
		if err := add.Err(); err != nil {
			first = cmp.Or(first, err)
			failed[key] = entries[key]
		}
	}
	if len(failed) > 0 {
		x.Forget(failed)
		// The part's trim went in the same pipeline: try it again with the
		// next write.
		x.mu.Lock()
		for key := range failed {
			delete(x.trimmed, key)
		}
		x.mu.Unlock()
	}
	return first
}

// Run writes queued entries until done closes (after the last Queue), then
// writes what is still queued and returns. A write that fails is reported
// to failed and its entries forgotten.
func (x *Indexer) Run(ctx context.Context, done <-chan struct{}, failed func(error)) {
	for {
		var entries Entries
		select {
		case entries = <-x.queue:
		case <-done:
			select {
			case entries = <-x.queue:
			default:
				return
			}
		}
		// What else is queued goes in the same pipeline (a node without
		// the link queues one entry per announce that makes one due).
	more:
		for range cap(x.queue) {
			select {
			case e := <-x.queue:
				for key, zs := range e {
					entries[key] = append(entries[key], zs...)
				}
			default:
				break more
			}
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		pipe := x.rdb.Pipeline()
		adds := x.Add(wctx, pipe, entries)
		pipe.Exec(wctx) // per-part errors are read below
		cancel()
		if err := x.Failed(entries, adds); err != nil && failed != nil {
			failed(err)
		}
	}
}

// IndexSink is a node's tracker.ChangeSink when its link is off: it keeps
// the node's swarm index (for the admin page's counts) and nothing else.
type IndexSink struct {
	X    *Indexer
	Node string
}

// LocalChange queues the change's index entry when it is due.
func (s IndexSink) LocalChange(c bittorrent.PeerChange) { s.X.Queue(s.Node, c) }
