package allowed

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// Place is where a node's keys are: its member's store of sharing keys,
// and whom the member lets its offered torrents go to.
type Place struct {
	Keys SharedKeys
	// Member is the node's member. Nodes of one member share with each
	// other; ShareTo names the other members whose nodes may receive
	// this member's offered torrents ("*": every member). It is the
	// offering operator's consent, written by the hub's operator in the
	// members file; what a receiving node asks for cannot widen it.
	Member  string
	ShareTo []string
}

// SharedKeys is the hub's access to the sharing keys of the nodes of one
// member (redisstore.Sharing).
type SharedKeys interface {
	Lens(ctx context.Context, node string) (redisstore.ShareLens, error)
	Lists(ctx context.Context, node string, catalog, accept bool, maxDeclined int64) (redisstore.ShareLists, error)
	OfferedSize(ctx context.Context, node, ih string) (int64, error)
	Offered(ctx context.Context, node, ih string) ([]byte, bool, error)
	Deliver(ctx context.Context, node, ih string, body []byte) error
}

var _ SharedKeys = (*redisstore.Sharing)(nil)

// sharesWith reports whether what p's node offers may go to a node of
// member to.
func (p Place) sharesWith(to string) bool {
	return p.Member == to || slices.Contains(p.ShareTo, to) || slices.Contains(p.ShareTo, "*")
}

// ShareLimits bound what one member's nodes may push into others in one
// resync: however large their catalogs, a member costs the others at most
// MaxTorrents copies and MaxBytes bytes per resync (the rest waits for the
// next one: each node that takes torrents says hello, which asks for it),
// and no shared torrent is larger than MaxSize.
type ShareLimits struct {
	MaxTorrents int
	MaxBytes    int64
	MaxSize     int64
}

// DefaultShareLimits are the hub's defaults (TRACKER_HUB_SHARE_MAX_*).
var DefaultShareLimits = ShareLimits{MaxTorrents: 100, MaxBytes: 32 << 20, MaxSize: 4 << 20}

// MaxCatalog bounds how many torrents the hub reads of one node's catalog
// or inbox: a node whose catalog is longer offers nothing (it is refused
// whole, reason "catalog_too_large"), so a node cannot make the hub read
// an unbounded list.
const MaxCatalog = 1 << 17

// Why a shared torrent was refused (the reason label of
// hub_shared_refused_total and tracker_shared_torrents_refused_total).
const (
	RefusedInvalid      = "invalid"           // not metainfo within torrentfile's bounds
	RefusedWrongName    = "wrong_name"        // filed under a name that is not its info hash
	RefusedTooLarge     = "too_large"         // larger than ShareLimits.MaxSize
	RefusedOverCap      = "over_cap"          // beyond its member's ShareLimits this resync (it waits)
	RefusedCatalogLarge = "catalog_too_large" // a catalog or inbox longer than MaxCatalog
	RefusedDeclined     = "declined"          // the receiving operator deleted it (node side)
)

// ShareReport is what one Share did.
type ShareReport struct {
	Copied  int
	Refused map[string]int // by reason
}

func (r *ShareReport) refuse(reason string) {
	if r.Refused == nil {
		r.Refused = map[string]int{}
	}
	r.Refused[reason]++
}

// Share is the hub's half: it copies torrents offered by nodes into the
// inbox of each accepting node that neither carries, has waiting, nor
// declined them, when the offering member consents (Place.ShareTo),
// reading and writing each node where it is (nodes of several members:
// several Redis). What the hub reads, another operator wrote, so it is
// bounded before it is read: catalogs by MaxCatalog, each torrent's size
// (HSTRLEN) before its bytes, each member's copies by lim; and a torrent
// is copied only when it checks (torrentfile.Check, no decoding) and its
// name is its own info hash. Refusals are counted in the report by reason.
// A node that cannot be read or written now is skipped, and the first such
// error returned after the rest was done.
func Share(ctx context.Context, nodes map[string]Place, lim ShareLimits) (ShareReport, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var rep ShareReport
	var first error
	failed := func(err error) {
		if first == nil {
			first = err
		}
	}
	names := slices.Sorted(maps.Keys(nodes))
	states := map[string]*shareState{}
	offered := map[string][]string{} // hex ih -> nodes that offer it, by name
	for _, n := range names {
		st, err := readShareState(ctx, n, nodes[n], &rep)
		if err != nil {
			// Unreadable now (its shard or member down): neither offers
			// nor receives this time; the next resync tries again.
			failed(fmt.Errorf("share: read %s: %w", n, err))
			continue
		}
		states[n] = st
		for _, k := range st.catalog {
			offered[k] = append(offered[k], n)
		}
	}
	src := &sources{nodes: nodes, lim: lim, rep: &rep, spent: map[string]*budget{}, body: map[string][]byte{}, bad: map[string]bool{}}
	for _, ih := range slices.Sorted(maps.Keys(offered)) {
		for _, n := range names {
			st := states[n]
			if st == nil || !st.accept || st.has[ih] {
				continue
			}
			body, from, err := src.pick(ctx, ih, offered[ih], n)
			if err != nil {
				failed(err)
				continue
			}
			if body == nil {
				continue
			}
			b := src.budget(from)
			if !b.allows(lim, int64(len(body))) {
				rep.refuse(RefusedOverCap)
				continue
			}
			if err := nodes[n].Keys.Deliver(ctx, n, ih, body); err != nil {
				failed(fmt.Errorf("share: write %s: %w", n, err))
				continue
			}
			b.n++
			b.bytes += int64(len(body))
			st.has[ih] = true
			rep.Copied++
		}
	}
	return rep, first
}

// budget is what one member's offers cost this resync: every copy
// written, and every torrent read that was refused (a member that offers
// garbage spends its own allowance, not the hub's time).
type budget struct {
	n     int
	bytes int64
}

func (b *budget) allows(lim ShareLimits, size int64) bool {
	return b.n < lim.MaxTorrents && b.bytes+size <= lim.MaxBytes
}

// shareState is one node as sharing sees it: whether it accepts, what it
// has (carries, has waiting in its inbox, or declined), what it offers.
type shareState struct {
	accept  bool
	has     map[string]bool
	catalog []string
}

// readShareState reads node n in two round trips: the lengths first, then
// only lists within MaxCatalog (and what a node that accepts has).
func readShareState(ctx context.Context, n string, at Place, rep *ShareReport) (*shareState, error) {
	lens, err := at.Keys.Lens(ctx, n)
	if err != nil {
		return nil, err
	}
	st := &shareState{accept: lens.Accept, has: map[string]bool{}}
	if lens.Catalog > MaxCatalog {
		rep.refuse(RefusedCatalogLarge)
	}
	if lens.Inbox > MaxCatalog {
		// A full inbox takes nothing more until the node empties it.
		rep.refuse(RefusedCatalogLarge)
		st.accept = false
	}
	lists, err := at.Keys.Lists(ctx, n, lens.Catalog > 0 && lens.Catalog <= MaxCatalog, st.accept, MaxDeclined)
	if err != nil {
		return nil, err
	}
	st.catalog = lists.Catalog
	if st.accept {
		for _, m := range lists.Carried {
			st.has[hex.EncodeToString([]byte(m))] = true
		}
		for _, k := range lists.Inbox {
			st.has[k] = true
		}
		for _, k := range lists.Declined {
			st.has[k] = true
		}
	}
	return st, nil
}

// sources reads offered torrents, each at most once per resync: its size
// first, its bytes only when the size is within bounds and its member's
// budget, and remembers which (node, info hash) were refused.
type sources struct {
	nodes map[string]Place
	lim   ShareLimits
	rep   *ShareReport
	spent map[string]*budget // by offering member
	body  map[string][]byte
	bad   map[string]bool
}

// budget returns the budget of node f's member.
func (s *sources) budget(f string) *budget {
	m := s.nodes[f].Member
	b := s.spent[m]
	if b == nil {
		b = &budget{}
		s.spent[m] = b
	}
	return b
}

// pick returns the torrent ih for node to from the first of the nodes
// offering it whose member consents and whose copy is valid (nil: none).
func (s *sources) pick(ctx context.Context, ih string, from []string, to string) ([]byte, string, error) {
	for _, f := range from {
		if f == to || !s.nodes[f].sharesWith(s.nodes[to].Member) {
			continue
		}
		b, err := s.read(ctx, f, ih)
		if err != nil {
			return nil, "", err
		}
		if b != nil {
			return b, f, nil
		}
	}
	return nil, "", nil
}

// read returns node f's torrent ih, or nil when it is refused (counted
// once).
func (s *sources) read(ctx context.Context, f, ih string) ([]byte, error) {
	id := f + " " + ih
	if b, ok := s.body[id]; ok || s.bad[id] {
		return b, nil
	}
	bud := s.budget(f)
	if !bud.allows(s.lim, 0) {
		s.rep.refuse(RefusedOverCap)
		return nil, nil
	}
	at := s.nodes[f]
	size, err := at.Keys.OfferedSize(ctx, f, ih)
	if err != nil {
		return nil, fmt.Errorf("share: read %s: %w", f, err)
	}
	if size > s.lim.MaxSize || size > torrentfile.MaxSize {
		s.bad[id] = true
		bud.n++
		s.rep.refuse(RefusedTooLarge)
		return nil, nil
	}
	if !bud.allows(s.lim, size) {
		// The member's bytes are spent: its other offers wait for the
		// next resync, without a round trip each.
		bud.n = s.lim.MaxTorrents
		s.rep.refuse(RefusedOverCap)
		return nil, nil
	}
	b, ok, err := at.Keys.Offered(ctx, f, ih)
	if err != nil {
		return nil, fmt.Errorf("share: read %s: %w", f, err)
	}
	if !ok {
		s.bad[id] = true // withdrawn meanwhile
		return nil, nil
	}
	if int64(len(b)) > s.lim.MaxSize {
		s.bad[id] = true // grew since its size was read
		bud.n++
		bud.bytes += int64(len(b))
		s.rep.refuse(RefusedTooLarge)
		return nil, nil
	}
	named, err := torrentfile.NamedBy(b, ih)
	if err != nil || !named {
		s.bad[id] = true
		bud.n++
		bud.bytes += int64(len(b))
		if err != nil {
			s.rep.refuse(RefusedInvalid)
		} else {
			s.rep.refuse(RefusedWrongName)
		}
		return nil, nil
	}
	s.body[id] = b
	return b, nil
}
