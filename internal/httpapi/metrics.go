package httpapi

import "github.com/prometheus/client_golang/prometheus"

// metrics of the frontend. Labels are bounded: outcome is ok, client_error,
// error or canceled (the client left first); a refused connection's reason
// is max_conns or max_conns_per_addr.
type metrics struct {
	announces, scrapes     *prometheus.CounterVec
	announceDur, scrapeDur *prometheus.HistogramVec
	conns                  prometheus.Gauge
	connsRefused           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5}
	m := &metrics{
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracker_announces_total", Help: "Announces by outcome.",
		}, []string{"outcome"}),
		scrapes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracker_scrapes_total", Help: "Scrapes by outcome.",
		}, []string{"outcome"}),
		announceDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tracker_announce_duration_seconds", Help: "Time to answer an announce.", Buckets: buckets,
		}, []string{"outcome"}),
		scrapeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tracker_scrape_duration_seconds", Help: "Time to answer a scrape.", Buckets: buckets,
		}, []string{"outcome"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tracker_http_connections", Help: "HTTP connections open.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracker_http_connections_refused_total", Help: "HTTP connections closed at once, by reason: max_conns (TRACKER_HTTP_MAX_CONNS were open), max_conns_per_addr (TRACKER_HTTP_MAX_CONNS_PER_ADDR from the address were).",
		}, []string{"reason"}),
	}
	// Both reasons exist from the start, at 0, so that a rate over them
	// has data before the first refusal (the dashboard's panel).
	for _, reason := range []string{"max_conns", "max_conns_per_addr"} {
		m.connsRefused.WithLabelValues(reason)
	}
	for _, c := range []prometheus.Collector{m.announces, m.scrapes, m.announceDur, m.scrapeDur, m.conns, m.connsRefused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
