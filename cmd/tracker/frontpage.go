package main

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/frontpage"
	"github.com/tracklink/tracklink/internal/hub"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// publicHeldLimit bounds the swarms the public page counts peers in (the
// most recent of the swarm index): with the page's one-second cache, at
// most this many swarms are counted a second, however many visit.
const publicHeldLimit = 10_000

// adminLine is where the public page says the admin panel is: not here,
// without telling a visitor the address.
const adminLine = "Operators: the admin panel is not served on this port. It has a listener of its own " +
	"(TRACKER_ADMIN_ADDR, on the host's loopback unless its operator chose otherwise)."

// nodePage is a node's public page.
func nodePage(id string, store *redisstore.Store, ln *link.Node, udpPort int, ws bool, reg prometheus.Gatherer) *frontpage.Page {
	links := []frontpage.Link{
		{Path: "/healthz", What: "200 while the process runs"},
		{Path: "/readyz", What: "200 while Redis answers"},
		{Path: "/metrics", What: "Prometheus metrics"},
	}
	if ln != nil {
		links = append(links, frontpage.Link{Path: "/link/status", What: "the tracker link's state (JSON)"})
	}
	if udpPort > 0 {
		links = append(links, frontpage.Link{Path: "/udp/status", What: "UDP addresses and counts (JSON)"})
	}
	if ws {
		links = append(links, frontpage.Link{Path: "/ws/status", What: "WebTorrent connections and peers (JSON)"})
	}
	about := "This is a BitTorrent tracker: clients announce here to find the other peers of their torrents."
	if ln != nil {
		about += " It is linked: peers announced at the other trackers of its network are returned here too, for the torrents they have in common."
	}
	return frontpage.New(frontpage.Config{
		Role: "tracker node", Name: id, Version: version, About: about,
		Announce: true, UDPPort: udpPort, WebSocket: ws, Links: links, Admin: adminLine,
		Figures: func(ctx context.Context) ([]frontpage.Figure, error) {
			h, err := store.Held(ctx, publicHeldLimit, nil)
			n := func(v int) string {
				if h.Truncated {
					return "at least " + strconv.Itoa(v)
				}
				return strconv.Itoa(v)
			}
			figs := []frontpage.Figure{
				{Label: "Swarms", Value: n(h.Swarms)},
				{Label: "Peers", Value: n(h.Peers())},
				{Label: "Seeders", Value: n(h.Seeders)},
				{Label: "Leechers", Value: n(h.Leechers)},
			}
			if err != nil {
				figs = nil
			}
			state := "off (a tracker of its own)"
			if ln != nil {
				state = ln.State()
			}
			return append(figs, frontpage.Figure{Label: "Tracker link", Value: state}), err
		},
		Rates: []frontpage.Rate{{Label: "Announces per second", Series: []frontpage.Series{
			{Metric: "tracker_announces_total"},
			{Metric: "tracker_udp_requests_total", Label: "action", Value: "announce"},
		}}},
		Gatherer: reg,
	})
}

// hubPage is a hub's public page.
func hubPage(name string, h *hub.Hub, reg prometheus.Gatherer) *frontpage.Page {
	return frontpage.New(frontpage.Config{
		Role: "hub", Name: name, Version: version,
		About: "This is the hub of a tracker network: it relays every peer change between the linked trackers, " +
			"so that trackers carrying the same torrent answer as one. It serves no announces: use a tracker's announce URL.",
		Links: []frontpage.Link{
			{Path: "/healthz", What: "200 while the process runs"},
			{Path: "/readyz", What: "200 while the hub reaches a member's Redis"},
			{Path: "/metrics", What: "Prometheus metrics"},
			{Path: "/status", What: "members, nodes and their live processes (JSON)"},
		},
		Admin: adminLine,
		Figures: func(context.Context) ([]frontpage.Figure, error) {
			s := h.Status()
			up, live, procs := 0, 0, 0
			for _, m := range s.Members {
				if m.Link == "up" {
					up++
				}
			}
			for _, n := range s.Nodes {
				if n.Live {
					live++
				}
				procs += n.LiveProcesses
			}
			link := "up"
			if up < len(s.Members) {
				link = strconv.Itoa(len(s.Members)-up) + " member(s) unreachable"
			}
			return []frontpage.Figure{
				{Label: "Members (link up / all)", Value: strconv.Itoa(up) + " / " + strconv.Itoa(len(s.Members))},
				{Label: "Tracker link", Value: link},
				{Label: "Nodes live", Value: strconv.Itoa(live)},
				{Label: "Node processes live", Value: strconv.Itoa(procs)},
				{Label: "Resyncs since start", Value: strconv.FormatInt(s.Resyncs, 10)},
			}, nil
		},
		Rates:    []frontpage.Rate{{Label: "Changes relayed per second", Series: []frontpage.Series{{Metric: "hub_relayed_updates_total"}}}},
		Gatherer: reg,
	})
}
