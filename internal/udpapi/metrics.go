package udpapi

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Requests are counted by action and outcome, drops by reason: every label
// comes from these fixed lists, never from a packet. The counters are plain
// atomics (the hot path pays one add) exported by a collector.

type action int

const (
	actConnect action = iota
	actAnnounce
	actScrape
	actUnknown
	numActions
)

var actionNames = [numActions]string{"connect", "announce", "scrape", "unknown"}

func actionOf(a uint32) action {
	switch a {
	case actionConnect:
		return actConnect
	case actionAnnounce:
		return actAnnounce
	case actionScrape:
		return actScrape
	}
	return actUnknown
}

type outcome int

const (
	outOK outcome = iota
	outClientError
	outError
	outBadConnID
	outCanceled
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "client_error", "error", "bad_connection_id", "canceled"}

func outcomeOf(name string) outcome {
	for i, n := range outcomeNames {
		if n == name {
			return outcome(i)
		}
	}
	return outError
}

type dropReason int

const (
	dropShort dropReason = iota
	dropTooLong
	dropBadProtocol
	dropReceiveBuffer
	dropSendError
	numDrops
)

var dropNames = [numDrops]string{"short", "too_long", "bad_protocol_id", "receive_buffer_full", "send_error"}

// durBuckets are the latency buckets of announces and scrapes, seconds.
var durBuckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5}

type metrics struct {
	requests [numActions][numOutcomes]atomic.Uint64
	dropped  [numDrops]atomic.Uint64
	dur      [numActions]prometheus.Histogram

	reqDesc, dropDesc *prometheus.Desc
}

func newMetrics() *metrics {
	m := &metrics{
		reqDesc:  prometheus.NewDesc("tracker_udp_requests_total", "UDP requests by action and outcome.", []string{"action", "outcome"}, nil),
		dropDesc: prometheus.NewDesc("tracker_udp_dropped_total", "UDP datagrams dropped without a reply, by reason.", []string{"reason"}, nil),
	}
	for _, a := range []action{actAnnounce, actScrape} {
		m.dur[a] = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "tracker_udp_request_duration_seconds",
			Help:        "Store time of a UDP announce (its batch's round trip) or scrape.",
			Buckets:     durBuckets,
			ConstLabels: prometheus.Labels{"action": actionNames[a]},
		})
	}
	return m
}

func (m *metrics) request(a action, o outcome)  { m.requests[a][o].Add(1) }
func (m *metrics) drop(r dropReason)            { m.dropped[r].Add(1) }
func (m *metrics) dropN(r dropReason, n uint64) { m.dropped[r].Add(n) }
func (m *metrics) observe(a action, d time.Duration) {
	if h := m.dur[a]; h != nil {
		h.Observe(d.Seconds())
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.reqDesc
	ch <- m.dropDesc
	for _, h := range m.dur {
		if h != nil {
			h.Describe(ch)
		}
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for a := range numActions {
		for o := range numOutcomes {
			ch <- prometheus.MustNewConstMetric(m.reqDesc, prometheus.CounterValue, float64(m.requests[a][o].Load()), actionNames[a], outcomeNames[o])
		}
	}
	for r := range numDrops {
		ch <- prometheus.MustNewConstMetric(m.dropDesc, prometheus.CounterValue, float64(m.dropped[r].Load()), dropNames[r])
	}
	for _, h := range m.dur {
		if h != nil {
			h.Collect(ch)
		}
	}
}

func (m *metrics) status() Status {
	st := Status{Requests: map[string]map[string]uint64{}, Dropped: map[string]uint64{}}
	for a := range numActions {
		byOutcome := map[string]uint64{}
		for o := range numOutcomes {
			byOutcome[outcomeNames[o]] = m.requests[a][o].Load()
		}
		st.Requests[actionNames[a]] = byOutcome
	}
	for r := range numDrops {
		st.Dropped[dropNames[r]] = m.dropped[r].Load()
	}
	return st
}
