package panel

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// NodeStore is what the node page reads from the store.
type NodeStore interface {
	Held(ctx context.Context, limit int, also []bittorrent.InfoHash) (redisstore.Held, error)
	Scrape(ctx context.Context, hashes []bittorrent.InfoHash) ([]bittorrent.Scrape, error)
	Beat(ctx context.Context, proc string) error
	Leave(ctx context.Context, proc string) error
	Processes(ctx context.Context, window time.Duration) ([]string, error)
}

// NodeLink is the node's end of the link.
type NodeLink interface {
	Status() link.NodeStatus
	Reset()
}

// Torrents is the allowed-torrents set.
type Torrents interface {
	Torrents(ctx context.Context) ([]allowed.Torrent, error)
	Add(ctx context.Context, b []byte) (bittorrent.InfoHash, error)
	Remove(ctx context.Context, ih bittorrent.InfoHash) error
}

var (
	_ NodeStore = (*redisstore.Store)(nil)
	_ NodeLink  = (*link.Node)(nil)
	_ Torrents  = (*allowed.Set)(nil)
)

// Node is what a node's panel is given.
type Node struct {
	ID, Version string
	// Proc is this process's id in the node's registry of processes
	// (shared with the replicas' group; "": one of its own).
	Proc       string
	Token      string
	Admin      Config
	Store      NodeStore
	Link       NodeLink // nil: the link is off
	Torrents   Torrents // nil: an open tracker
	UDP        bool     // UDP is on: its charts are shown
	WS         bool     // WebSocket (WebTorrent) is on: its charts are shown
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// heldLimit bounds the swarms one count of the node's peers reads (they
// are counted at most once per chart step).
const (
	heldLimit = 100_000
	// maxListed bounds the torrents the page lists (with their peers).
	maxListed = 500
)

// NewNode returns the panel of a node.
func NewNode(n Node) (*Panel, error) {
	np, err := buildNode(n)
	if err != nil {
		return nil, err
	}
	return np.Panel, nil
}

func buildNode(n Node) (*nodePanel, error) {
	series := []Series{{Name: "HTTP announces", Family: "tracker_announce_duration_seconds"}}
	if n.UDP {
		series = append(series, Series{Name: "UDP announces", Family: "tracker_udp_request_duration_seconds", Match: map[string]string{"action": "announce"}})
	}
	if n.WS {
		series = append(series, Series{Name: "WebSocket announces", Family: "tracker_ws_message_duration_seconds", Match: map[string]string{"type": "announce"}},
			Series{Name: "WebSocket answers", Family: "tracker_ws_message_duration_seconds", Match: map[string]string{"type": "answer"}})
	}
	series = append(series, Series{Name: "HTTP scrapes", Family: "tracker_scrape_duration_seconds"})
	if n.UDP {
		series = append(series, Series{Name: "UDP scrapes", Family: "tracker_udp_request_duration_seconds", Match: map[string]string{"action": "scrape"}})
	}
	p, err := newPanel(base{Kind: "node", Name: n.ID, Version: n.Version, Token: n.Token, Admin: n.Admin,
		Series: series, Gatherer: n.Gatherer, Registerer: n.Registerer, Log: n.Log}, "node")
	if err != nil {
		return nil, err
	}
	np := &nodePanel{Panel: p, n: n, proc: cmp.Or(n.Proc, newProcID())}
	p.tick = func(ctx context.Context) {
		if err := n.Store.Beat(ctx, np.proc); err != nil && ctx.Err() == nil {
			np.beatErr.Store(err.Error())
		} else {
			np.beatErr.Store("")
		}
	}
	p.stop = func(ctx context.Context) { n.Store.Leave(ctx, np.proc) }
	np.beatErr.Store("")
	p.routes(func(r chi.Router) {
		r.Get("/", np.page)
		if n.Link != nil {
			r.Post("/admin/link/reset", np.reset)
		}
		if n.Torrents != nil {
			r.Get("/admin/torrents", np.listTorrents)
			r.Post("/admin/torrents", np.upload)
			r.Delete("/admin/torrents/{infohash}", np.remove)
			r.Post("/admin/torrents/{infohash}/delete", np.remove)
		}
	})
	return np, nil
}

func newProcID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type nodePanel struct {
	*Panel
	n       Node
	proc    string
	beatErr atomic.Value // string: the last registry write's error

	heldMu sync.Mutex
	held   redisstore.Held
	heldAt time.Time
	heldE  error
}

// nodeData is the node page.
type nodeData struct {
	ID         string
	Self       string
	Processes  []string
	ProcErr    string
	Rates      []rateView
	Held       redisstore.Held
	HeldAt     time.Time
	HeldErr    string
	Link       *link.NodeStatus
	LinkCounts map[string]float64
	Allowed    bool
	Torrents   []torrentRow
	More       int
	TorrentErr string
}

type torrentRow struct {
	allowed.Torrent
	Seeders, Leechers int
	Unavailable       bool
}

func (np *nodePanel) page(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := nodeData{ID: np.n.ID, Self: np.proc, Rates: np.rates(), ProcErr: np.beatErr.Load().(string)}
	if procs, err := np.n.Store.Processes(ctx, 3*np.hist.step); err != nil {
		d.ProcErr = err.Error()
	} else {
		slices.Sort(procs)
		d.Processes = procs
	}
	// The carried torrents are read once: listed, and counted in.
	var carried []allowed.Torrent
	var carriedErr error
	if np.n.Torrents != nil {
		d.Allowed = true
		carried, carriedErr = np.n.Torrents.Torrents(ctx)
		d.Torrents, d.More, d.TorrentErr = np.torrents(ctx, carried, carriedErr)
	}
	d.Held, d.HeldAt, d.HeldErr = np.heldNow(ctx, carried)
	if np.n.Link != nil {
		st := np.n.Link.Status()
		d.Link = &st
		fams, _ := np.n.Gatherer.Gather()
		d.LinkCounts = map[string]float64{
			"published": counters(fams, "tracker_link_published_changes_total", "")[""],
			"dropped":   counters(fams, "tracker_link_dropped_changes_total", "")[""],
			"splits":    counters(fams, "tracker_link_splits_total", "")[""],
			"resets":    counters(fams, "tracker_link_resets_total", "")[""],
		}
	}
	np.render(w, r, http.StatusOK, "node", view{Flash: flashes[r.URL.Query().Get("done")], Data: d})
}

// heldNow counts the node's peers at most once per chart step.
func (np *nodePanel) heldNow(ctx context.Context, carried []allowed.Torrent) (redisstore.Held, time.Time, string) {
	np.heldMu.Lock()
	defer np.heldMu.Unlock()
	if time.Since(np.heldAt) >= np.hist.step {
		hashes := make([]bittorrent.InfoHash, 0, len(carried))
		for _, t := range carried {
			if ih, err := bittorrent.ParseInfoHash(t.InfoHash); err == nil {
				hashes = append(hashes, ih)
			}
		}
		np.held, np.heldE = np.n.Store.Held(ctx, heldLimit, hashes)
		np.heldAt = time.Now()
	}
	if np.heldE != nil {
		return np.held, np.heldAt, np.heldE.Error()
	}
	return np.held, np.heldAt, ""
}

// recount makes the next page count the peers again (the carried set
// changed).
func (np *nodePanel) recount() {
	np.heldMu.Lock()
	np.heldAt = time.Time{}
	np.heldMu.Unlock()
}

// torrents is the table of carried torrents (the first maxListed), with
// each one's peers.
func (np *nodePanel) torrents(ctx context.Context, ts []allowed.Torrent, err error) ([]torrentRow, int, string) {
	more := max(0, len(ts)-maxListed)
	ts = ts[:min(len(ts), maxListed)]
	rows := make([]torrentRow, len(ts))
	hashes := make([]bittorrent.InfoHash, len(ts))
	for i, t := range ts {
		rows[i].Torrent = t
		hashes[i], _ = bittorrent.ParseInfoHash(t.InfoHash)
	}
	if len(hashes) > 0 {
		sc, serr := np.n.Store.Scrape(ctx, hashes)
		for i := range sc {
			rows[i].Seeders, rows[i].Leechers, rows[i].Unavailable = sc[i].Complete, sc[i].Incomplete, sc[i].Unavailable
		}
		err = errors.Join(err, serr)
	}
	if err != nil {
		return rows, more, err.Error()
	}
	return rows, more, ""
}

func (np *nodePanel) reset(w http.ResponseWriter, r *http.Request) {
	np.n.Link.Reset()
	np.log.Info("link reset requested", "by", authBy(r))
	np.done(w, r, http.StatusOK, "link reset requested", "reset")
}

func (np *nodePanel) listTorrents(w http.ResponseWriter, r *http.Request) {
	ts, err := np.n.Torrents.Torrents(r.Context())
	if err != nil {
		http.Error(w, "reading torrents failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ts)
}

// upload takes a .torrent as the request body (the API) or as the file
// field "torrent" of a form (the page).
func (np *nodePanel) upload(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		f, _, err := r.FormFile("torrent")
		if err != nil {
			np.fail(w, r, http.StatusBadRequest, "choose a .torrent file to upload")
			return
		}
		defer f.Close()
		body = f
	}
	b, err := io.ReadAll(io.LimitReader(body, torrentfile.MaxSize+1))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig) || len(b) > torrentfile.MaxSize:
		np.fail(w, r, http.StatusRequestEntityTooLarge, "torrent too large")
		return
	case err != nil:
		np.fail(w, r, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	ih, err := np.n.Torrents.Add(r.Context(), b)
	if err != nil {
		if ce, ok := bittorrent.IsClientError(err); ok {
			np.fail(w, r, http.StatusBadRequest, string(ce))
			return
		}
		np.log.Error("storing an uploaded torrent failed", "err", err)
		np.fail(w, r, http.StatusInternalServerError, "storing torrent failed")
		return
	}
	np.log.Info("torrent uploaded", "info_hash", ih.String(), "by", authBy(r))
	np.recount()
	np.done(w, r, http.StatusCreated, ih.String(), "uploaded")
}

func (np *nodePanel) remove(w http.ResponseWriter, r *http.Request) {
	ih, err := bittorrent.ParseInfoHash(chi.URLParam(r, "infohash"))
	if err != nil {
		np.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if err := np.n.Torrents.Remove(r.Context(), ih); err != nil {
		if errors.Is(err, allowed.ErrNotCarried) {
			np.fail(w, r, http.StatusNotFound, err.Error())
			return
		}
		np.log.Error("deleting a torrent failed", "info_hash", ih.String(), "err", err)
		np.fail(w, r, http.StatusInternalServerError, "deleting torrent failed")
		return
	}
	np.log.Info("torrent deleted", "info_hash", ih.String(), "by", authBy(r))
	np.recount()
	if sessionFrom(r.Context()) == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	np.done(w, r, http.StatusNoContent, "", "deleted")
}

// authBy says, for the log, how an action was authorised.
func authBy(r *http.Request) string {
	if sessionFrom(r.Context()) != nil {
		return "panel session"
	}
	return "api token"
}
