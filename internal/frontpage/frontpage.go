// Package frontpage owns the public page at / of a node and of a hub: what
// the process is, its announce URLs, a few live figures, and where to look
// next (health, metrics, status JSON). It is for anyone who opens the
// tracker's address in a browser, a text browser included: plain HTML from
// html/template, no script, nothing fetched from elsewhere.
//
// Cost: the figures are read at most once a second, under a mutex, whatever
// the number of visitors (a visitor in that second gets the cached ones);
// rates come from the process's own Prometheus counters, sampled once a
// second by Run. Nothing here is on the announce path.
package frontpage

import (
	"context"
	"embed"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

//go:embed page.html
var files embed.FS

var page = template.Must(template.ParseFS(files, "page.html"))

// CacheFor is how long figures are reused, and the page's max-age.
const CacheFor = time.Second

// Figure is one live figure: a label and its value, as shown.
type Figure struct{ Label, Value string }

// Link is a path on this port and what it gives.
type Link struct{ Path, What string }

// Rate is a figure computed from counters of the process's registry: the
// increase of the sum of the matching series per second.
type Rate struct {
	Label string
	// Series are the counters summed: a metric name, with an optional
	// label that must have a value ("" label: every series of it).
	Series []Series
}

// Series names counters of one metric, all of them or those whose Label
// is Value.
type Series struct{ Metric, Label, Value string }

// Config says what the page shows.
type Config struct {
	Role    string // "tracker node" or "hub"
	Name    string // node id or hub name
	Version string
	About   string // one paragraph: what this process is
	// Announce: the page gives announce URLs on the host the visitor
	// used: HTTP on the port it reached, UDP on UDPPort (0: no UDP).
	Announce bool
	UDPPort  int
	// WebSocket: WebTorrent's WebSocket protocol is served on the HTTP
	// port's /announce (ws://, wss:// behind TLS).
	WebSocket bool
	Links     []Link
	Admin     string // one line on where the admin panel is
	// Figures reads the live figures (at most once per CacheFor).
	Figures  func(ctx context.Context) ([]Figure, error)
	Rates    []Rate
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
}

// Page serves the public page. Run samples the rates.
type Page struct {
	cfg Config

	mu      sync.Mutex
	at      time.Time
	figures []Figure
	err     string

	rmu     sync.Mutex
	samples []sample // the last rateWindow+1 seconds, oldest first
}

type sample struct {
	at     time.Time
	values []float64
}

// rateWindow is how many one-second samples a rate spans.
const rateWindow = 10

// New returns the page of cfg.
func New(cfg Config) *Page { return &Page{cfg: cfg} }

// Run samples the rates' counters once a second until ctx ends.
func (p *Page) Run(ctx context.Context) error {
	if len(p.cfg.Rates) == 0 || p.cfg.Gatherer == nil {
		return nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		p.sample(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Page) sample(now time.Time) {
	fams, err := p.cfg.Gatherer.Gather()
	if err != nil && len(fams) == 0 {
		return
	}
	s := sample{at: now, values: make([]float64, len(p.cfg.Rates))}
	for i, r := range p.cfg.Rates {
		s.values[i] = sum(fams, r.Series)
	}
	p.rmu.Lock()
	p.samples = append(p.samples, s)
	if len(p.samples) > rateWindow+1 {
		p.samples = append(p.samples[:0], p.samples[len(p.samples)-rateWindow-1:]...)
	}
	p.rmu.Unlock()
}

// rates are the rates over the samples held ("–" until two are).
func (p *Page) rates() []Figure {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	out := make([]Figure, len(p.cfg.Rates))
	for i, r := range p.cfg.Rates {
		out[i] = Figure{Label: r.Label, Value: "–"}
		if n := len(p.samples); n >= 2 {
			first, last := p.samples[0], p.samples[n-1]
			if d := last.at.Sub(first.at).Seconds(); d > 0 {
				out[i].Value = strconv.FormatFloat(max(0, last.values[i]-first.values[i])/d, 'f', 1, 64)
			}
		}
	}
	return out
}

func sum(fams []*dto.MetricFamily, series []Series) float64 {
	var v float64
	for _, s := range series {
		for _, f := range fams {
			if f.GetName() != s.Metric {
				continue
			}
			for _, m := range f.GetMetric() {
				if s.Label != "" && !hasLabel(m, s.Label, s.Value) {
					continue
				}
				switch {
				case m.GetCounter() != nil:
					v += m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					v += m.GetGauge().GetValue()
				}
			}
		}
	}
	return v
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// current returns the figures, read again when older than CacheFor.
func (p *Page) current(ctx context.Context) ([]Figure, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Figures != nil && time.Since(p.at) >= CacheFor {
		// A visitor who leaves does not cancel the read for the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		figs, err := p.cfg.Figures(ctx)
		cancel()
		p.figures, p.err, p.at = figs, "", time.Now()
		if err != nil {
			p.err = "figures unavailable right now"
			if p.cfg.Log != nil {
				p.cfg.Log.Warn("public page: figures", "err", err)
			}
		}
	}
	return p.figures, p.err
}

// view is what the template gets.
type view struct {
	Config
	HTTPURL, UDPURL, WSURL string
	Figures                []Figure
	FiguresErr             string
}

// ServeHTTP serves the page at / (and 404 for any other path it is given).
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	figs, ferr := p.current(r.Context())
	v := view{Config: p.cfg, Figures: append(append([]Figure{}, figs...), p.rates()...), FiguresErr: ferr}
	if p.cfg.Announce {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		v.HTTPURL = scheme + "://" + r.Host + "/announce"
		if p.cfg.WebSocket {
			v.WSURL = map[string]string{"http": "ws", "https": "wss"}[scheme] + "://" + r.Host + "/announce"
		}
		if p.cfg.UDPPort > 0 {
			host := r.Host
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			}
			v.UDPURL = "udp://" + net.JoinHostPort(host, strconv.Itoa(p.cfg.UDPPort)) + "/announce"
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=1")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodHead {
		return
	}
	if err := page.Execute(w, v); err != nil && p.cfg.Log != nil {
		p.cfg.Log.Debug("public page", "err", err)
	}
}
