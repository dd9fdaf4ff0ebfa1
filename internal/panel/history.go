package panel

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The charts' history. Every step (TRACKER_ADMIN_CHART_STEP) the panel reads its process's own
// Prometheus registry (no request pays for it, and nothing on the hot path
// changes) and keeps, for each series, the rate and the p50/p99 of the
// last step, from the difference of a histogram's buckets between two
// reads, the way Prometheus's histogram_quantile does.

// Points is how many samples the history keeps (ten minutes at the
// default step of 5 s).
const Points = 120

// Series is one chart: a histogram family of the registry, restricted to
// the metrics whose labels include Match (nil: all of them, summed).
type Series struct {
	Name   string // shown on the page
	Family string
	Match  map[string]string
}

// Point is one step of a series: events per second, and the median and
// 99th percentile of their durations (seconds; NaN without events).
type Point struct {
	T              time.Time
	Rate, P50, P99 float64
}

// history keeps the last Points points of each series.
type history struct {
	g      prometheus.Gatherer
	series []Series
	step   time.Duration

	mu     sync.Mutex
	prev   []cumulative
	at     time.Time
	points [][]Point
}

// cumulative is a histogram read: bucket upper bounds, cumulative counts.
type cumulative struct {
	bounds []float64
	counts []uint64
	total  uint64
}

func newHistory(g prometheus.Gatherer, series []Series, step time.Duration) *history {
	return &history{g: g, series: series, step: step, points: make([][]Point, len(series))}
}

// run samples every step until ctx ends.
func (h *history) run(ctx context.Context, tick func(context.Context)) {
	t := time.NewTicker(h.step)
	defer t.Stop()
	h.sample(time.Now())
	for {
		if tick != nil {
			tick(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.sample(now)
		}
	}
}

func (h *history) sample(now time.Time) {
	fams, err := h.g.Gather()
	if err != nil && len(fams) == 0 {
		return
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	cur := make([]cumulative, len(h.series))
	for i, s := range h.series {
		cur[i] = read(byName[s.Family], s.Match)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.prev != nil {
		secs := now.Sub(h.at).Seconds()
		for i := range h.series {
			p := delta(h.prev[i], cur[i], secs)
			p.T = now
			if len(h.points[i]) == Points {
				h.points[i] = append(h.points[i][:0], h.points[i][1:]...)
			}
			h.points[i] = append(h.points[i], p)
		}
	}
	h.prev, h.at = cur, now
}

// read sums the histograms of f whose labels include match.
func read(f *dto.MetricFamily, match map[string]string) cumulative {
	var c cumulative
	if f == nil {
		return c
	}
metrics:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range match {
			if labels[k] != v {
				continue metrics
			}
		}
		hg := m.GetHistogram()
		if hg == nil {
			continue
		}
		if c.bounds == nil {
			for _, b := range hg.GetBucket() {
				c.bounds = append(c.bounds, b.GetUpperBound())
			}
			c.counts = make([]uint64, len(c.bounds))
		}
		if len(hg.GetBucket()) != len(c.bounds) {
			continue // another layout: not summed
		}
		for j, b := range hg.GetBucket() {
			c.counts[j] += b.GetCumulativeCount()
		}
		c.total += hg.GetSampleCount()
	}
	return c
}

// delta is the point between two reads secs apart. A counter that went
// down (a restart of the registry: not in one process) gives no point.
func delta(a, b cumulative, secs float64) Point {
	p := Point{P50: math.NaN(), P99: math.NaN()}
	if b.total < a.total || secs <= 0 {
		return p
	}
	n := b.total - a.total
	p.Rate = float64(n) / secs
	if n == 0 || len(b.counts) == 0 {
		return p
	}
	d := make([]uint64, len(b.counts))
	for i := range d {
		d[i] = b.counts[i]
		if i < len(a.counts) {
			d[i] -= min(d[i], a.counts[i])
		}
	}
	p.P50 = quantile(0.5, b.bounds, d, n)
	p.P99 = quantile(0.99, b.bounds, d, n)
	return p
}

// quantile interpolates linearly inside the bucket that holds rank q×n;
// above the last bound it answers the last bound.
func quantile(q float64, bounds []float64, cum []uint64, n uint64) float64 {
	rank := q * float64(n)
	lower, below := 0.0, uint64(0)
	for i, ub := range bounds {
		if float64(cum[i]) >= rank {
			in := cum[i] - below
			if in == 0 {
				return ub
			}
			return lower + (ub-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = ub, cum[i]
	}
	return lower
}

// get returns a copy of series i's points.
func (h *history) get(i int) []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Point(nil), h.points[i]...)
}
