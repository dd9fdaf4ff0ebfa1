package panel

import (
	"log/slog"
	"maps"
	"net/http"
	"slices"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/hub"
)

// HubSource is the hub as its page sees it.
type HubSource interface {
	Status() hub.Status
	Reset()
}

var _ HubSource = (*hub.Hub)(nil)

// Hub is what the hub's panel is given.
type Hub struct {
	Name, Version string
	Token         string
	Admin         Config
	Hub           HubSource
	Gatherer      prometheus.Gatherer
	Registerer    prometheus.Registerer
	Log           *slog.Logger
}

// NewHub returns the panel of the hub.
func NewHub(h Hub) (*Panel, error) {
	series := []Series{{Name: "Relayed changes (propagation)", Family: "hub_propagation_seconds"}}
	p, err := newPanel(base{Kind: "hub", Name: h.Name, Version: h.Version, Token: h.Token, Admin: h.Admin,
		Series: series, Gatherer: h.Gatherer, Registerer: h.Registerer, Log: h.Log}, "hub")
	if err != nil {
		return nil, err
	}
	hp := &hubPanel{Panel: p, h: h}
	p.routes(func(r chi.Router) {
		r.Get("/", hp.page)
		r.Post("/admin/link/reset", hp.reset)
	})
	return p, nil
}

type hubPanel struct {
	*Panel
	h Hub
}

// hubData is the hub page.
type hubData struct {
	Status   hub.Status
	Members  []string
	Nodes    []string
	Rates    []rateView
	Rejects  map[string]float64
	Requests map[string]float64
	Resyncs  []hub.ResyncRecord // newest first
}

func (hp *hubPanel) page(w http.ResponseWriter, r *http.Request) {
	st := hp.h.Hub.Status()
	fams, _ := hp.h.Gatherer.Gather()
	d := hubData{Status: st, Members: slices.Sorted(maps.Keys(st.Members)), Nodes: slices.Sorted(maps.Keys(st.Nodes)), Rates: hp.rates(),
		Rejects:  counters(fams, "hub_rejected_total", "reason"),
		Requests: counters(fams, "hub_resync_requests_total", "reason")}
	d.Resyncs = slices.Clone(st.Recent)
	slices.Reverse(d.Resyncs)
	hp.render(w, r, http.StatusOK, "hub", view{Flash: flashes[r.URL.Query().Get("done")], Data: d})
}

func (hp *hubPanel) reset(w http.ResponseWriter, r *http.Request) {
	hp.h.Hub.Reset()
	hp.log.Info("hub link reset requested", "by", authBy(r))
	hp.done(w, r, http.StatusOK, "hub link reset requested", "reset")
}
