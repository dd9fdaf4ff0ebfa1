package wsapi

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	conns       prometheus.Gauge
	refused     *prometheus.CounterVec
	closed      *prometheus.CounterVec
	messages    *prometheus.CounterVec
	offers      *prometheus.CounterVec
	answers     *prometheus.CounterVec
	delivered   prometheus.Counter
	dropped     *prometheus.CounterVec
	storeErrors *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	soft        *prometheus.CounterVec
	behind      *prometheus.CounterVec

	// The hot path's children, looked up once.
	announces                 prometheus.Counter
	announceTime              prometheus.Observer
	softHit                   prometheus.Counter
	offersLocal, offersRemote prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tracker_ws_connections", Help: "Open WebSocket connections of this process."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_connections_refused_total",
			Help: "WebSocket connections refused, by reason: cap (TRACKER_WS_MAX_CONNS), per_address, handshake, no_address, not_ready (signalling channel not subscribed yet), shutdown."}, []string{"reason"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_closed_total",
			Help: "WebSocket connections closed, by reason: client, idle, ping_timeout, malformed, too_big, shutdown, error."}, []string{"reason"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_messages_total",
			Help: "WebSocket messages received, by type: announce, answer, scrape, invalid."}, []string{"type"}),
		offers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_offers_sent_total",
			Help: "Offers sent to a peer, by path: local (its socket is held by this process), remote (by another process of the node, through Redis)."}, []string{"path"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_answers_sent_total",
			Help: "Answers sent to the peer that made the offer, by path (as offers)."}, []string{"path"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracker_ws_signals_delivered_total",
			Help: "Offers and answers queued for a socket of this process (each socket's pending output is written in one write)."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_dropped_total",
			Help: "Offers, answers and announces dropped, by reason: no_peer (no live peer to send it to), not_here (its socket closed), queue_full (256 KB already pending for its socket), write_failed, publish_full and publish_failed (offers for other processes found by the soft state), bad_signal, offers_over_cap, swarms_per_conn, not_in_swarm."}, []string{"reason"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_store_errors_total",
			Help: "Failed store (Redis) operations of the WebSocket front end, by operation."}, []string{"op"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tracker_ws_message_duration_seconds",
			Help:    "Time to handle one WebSocket message (store round trip and reply included), by type: announce, answer, scrape.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}}, []string{"type"}),
		soft: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_soft_total",
			Help: "WebSocket announces without event of a peer already on its socket (refreshes), by result: hit (answered from the soft state), read (the swarm was read first), unknown (not a refresh this process knows: to the store), miss (swarm being read), too_large (more than 256 live peers), queue_full (to the store)."}, []string{"result"}),
		behind: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_ws_write_behind_total",
			Help: "WebSocket refreshes written behind, by result: written, gone (the peer had stopped, left or moved: not written back), failed."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.conns, m.refused, m.closed, m.messages, m.offers, m.answers, m.delivered, m.dropped, m.storeErrors, m.duration, m.soft, m.behind} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.announces, m.announceTime = m.messages.WithLabelValues("announce"), m.duration.WithLabelValues("announce")
	m.softHit = m.soft.WithLabelValues("hit")
	m.offersLocal, m.offersRemote = m.offers.WithLabelValues("local"), m.offers.WithLabelValues("remote")
	return m, nil
}
