package softstate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracklink/tracklink/internal/logsample"
)

// metrics are the soft state's counters (names in docs/soft-state.md).
type metrics struct {
	announceHit, announceMiss, announceRead      prometheus.Counter
	adopted                                      prometheus.Counter
	queued, writtenNow, full, written, addedBack prometheus.Counter
	failed                                       prometheus.Counter
	errLog                                       *logsample.Logger
}

func (m *metrics) register(reg prometheus.Registerer, s *Store) error {
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_read_cache_total",
		Help: "Announces of known peers (refreshes), by whether the read cache answered them (hit) or not (miss); read: refreshes answered after a plain read of their swarm; adopted: re-announces of peers this process did not know that such a read found in Redis, in their class and with their key, and made known."}, []string{"kind", "result"})
	m.announceHit, m.announceMiss = reads.WithLabelValues("announce", "hit"), reads.WithLabelValues("announce", "miss")
	m.announceRead, m.adopted = reads.WithLabelValues("announce", "read"), reads.WithLabelValues("announce", "adopted")
	behind := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracker_write_behind_total",
		Help: "Refreshes answered from the read cache, by what became of their write: queued (written behind), now (written before the answer: TRACKER_WRITE_BEHIND=0), full (queue full: the announce went to the store), written (refreshed in Redis), added_back (the peer was not in Redis and no stop was recorded: added again), failed (in writes that failed)."},
		[]string{"result"})
	m.queued, m.writtenNow, m.full = behind.WithLabelValues("queued"), behind.WithLabelValues("now"), behind.WithLabelValues("full")
	m.written, m.addedBack, m.failed = behind.WithLabelValues("written"), behind.WithLabelValues("added_back"), behind.WithLabelValues("failed")
	m.errLog = logsample.New(s.log, 10*time.Second)
	cs := []prometheus.Collector{reads, behind}
	if s.cache != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracker_read_cache_swarms", Help: "Swarms in the read cache."},
			func() float64 { return float64(s.cache.swarms()) }))
	}
	if s.behind != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracker_write_behind_pending", Help: "Refreshes waiting to be written."},
			func() float64 { return float64(s.behind.len()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
