// Package panel is the administration panel of a node and of the hub: the
// admin listener's web pages (sign-in, the node page, the hub page) and
// the admin API (link reset, allowed torrents) that used to share the
// public port. Pages are server-rendered with html/template from files
// embedded in the binary, charts are inline SVG drawn on the server, and
// nothing is fetched from anywhere else: trackers run on closed networks.
// Without JavaScript every page works (the only script reloads the live
// part of a page every few seconds).
//
// It reads what the node's or hub's packages already know (their status,
// their own Prometheus registry) and owns only its sessions and the
// charts' ten-minute history.
package panel

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Config is the admin listener's part of the configuration.
type Config struct {
	// Addr is where the admin listener listens; empty: the role's
	// default (DefaultNodeAddr, DefaultHubAddr); "off": nowhere.
	Addr string `env:"ADMIN_ADDR"`
	// SessionTTL is how long a sign-in lasts.
	SessionTTL time.Duration `env:"ADMIN_SESSION_TTL" envDefault:"12h"`
	// ChartStep is how often the charts are sampled (they show the last
	// 120 steps).
	ChartStep time.Duration `env:"ADMIN_CHART_STEP" envDefault:"5s"`
	// Hosts are the host names (besides localhost) the listener answers
	// to, for an operator who reaches it by name; a request with any other
	// name in its Host header is refused (against DNS rebinding). IP
	// addresses need not be listed: they are always answered.
	Hosts []string `env:"ADMIN_HOSTS" envSeparator:","`
}

// The default admin addresses: loopback only, the node's and, on the
// next port, the hub's, so that both run on one machine.
const (
	DefaultNodeAddr = "127.0.0.1:6980"
	DefaultHubAddr  = "127.0.0.1:6981"
)

// Validate checks the settings; errors name the variable.
func (c Config) Validate() error {
	if c.SessionTTL < time.Minute || c.SessionTTL > 30*24*time.Hour {
		return errors.New("TRACKER_ADMIN_SESSION_TTL must be from 1m to 720h")
	}
	if c.ChartStep < 100*time.Millisecond || c.ChartStep > time.Minute {
		return errors.New("TRACKER_ADMIN_CHART_STEP must be from 100ms to 1m")
	}
	for _, h := range c.Hosts {
		if len(h) > 253 || !hostNameRE.MatchString(h) {
			return fmt.Errorf("TRACKER_ADMIN_HOSTS: %q is not a host name (comma-separated names, without scheme, port or wildcard)", h)
		}
	}
	return nil
}

// hostNameRE matches a DNS host name (letters, digits, hyphens; dotted).
var hostNameRE = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Panel is one admin listener's handler. Run keeps its history.
type Panel struct {
	kind    string // "node" or "hub"
	name    string
	version string
	started time.Time
	auth    *auth
	hist    *history
	tick    func(context.Context)
	stop    func(context.Context)
	pages   map[string]*template.Template
	handler http.Handler
	log     *slog.Logger
}

// base is what every panel is made of.
type base struct {
	Kind, Name, Version string
	Token               string
	Admin               Config
	Series              []Series
	Gatherer            prometheus.Gatherer
	Registerer          prometheus.Registerer
	Log                 *slog.Logger
}

func newPanel(b base, pages ...string) (*Panel, error) {
	if err := b.Admin.Validate(); err != nil {
		return nil, err
	}
	a, err := newAuth(b.Token, b.Admin.SessionTTL, b.Admin.Hosts, b.Registerer)
	if err != nil {
		return nil, err
	}
	p := &Panel{kind: b.Kind, name: b.Name, version: b.Version, started: time.Now(), auth: a,
		hist: newHistory(b.Gatherer, b.Series, b.Admin.ChartStep), pages: map[string]*template.Template{}, log: b.Log}
	for _, name := range append(pages, "signin", "message") {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("panel template %s: %w", name, err)
		}
		p.pages[name] = t
	}
	return p, nil
}

// routes mounts what every panel has, then role's pages and actions
// (behind sign-in) on a router, and wraps it in the cross-origin check.
func (p *Panel) routes(role func(r chi.Router)) {
	r := chi.NewRouter()
	static, _ := fs.Sub(assetFS, "assets")
	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(static)))
	r.Get("/signin", p.signinPage)
	r.Post("/signin", p.signinPost)
	r.Group(func(r chi.Router) {
		r.Use(func(h http.Handler) http.Handler { return p.auth.require(h) })
		r.Post("/signout", func(w http.ResponseWriter, r *http.Request) {
			if s := sessionFrom(r.Context()); s != nil {
				p.auth.signOut(w, r, s)
			}
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
		})
		role(r)
	})
	p.handler = http.NewCrossOriginProtection().Handler(r)
}

// ServeHTTP serves the panel with headers that keep its pages out of
// frames, caches and other origins' scripts.
func (p *Panel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if !p.auth.hostOK(r.Host) {
		p.auth.count("bad_host")
		http.Error(w, "misdirected request: this admin listener answers to its IP addresses, localhost and the names of TRACKER_ADMIN_HOSTS", http.StatusMisdirectedRequest)
		return
	}
	// An upload is the largest request: a .torrent and a form around it.
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	p.handler.ServeHTTP(w, r)
}

// maxBody bounds every request body on the admin listener.
const maxBody = 16<<20 + 64<<10

// Run samples the history (and runs the role's periodic work) until ctx
// ends.
func (p *Panel) Run(ctx context.Context) error {
	p.hist.run(ctx, p.tick)
	if p.stop != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		p.stop(sctx)
		cancel()
	}
	return nil
}

// view is what every page template gets.
type view struct {
	Kind, Name, Version string
	Uptime, Step, Span  time.Duration
	CSRF                string // empty: not signed in
	Flash, Error        string
	Data                any
}

func (p *Panel) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	v.Kind, v.Name, v.Version, v.Uptime = p.kind, p.name, p.version, time.Since(p.started).Truncate(time.Second)
	v.Step, v.Span = p.hist.step, p.hist.step*Points
	if s := sessionFrom(r.Context()); s != nil {
		v.CSRF = s.csrf
	}
	var b strings.Builder
	if err := p.pages[page].Execute(&b, v); err != nil {
		p.log.Error("admin page failed", "page", page, "err", err)
		http.Error(w, "page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}

// fail shows an action's error: text for the API, a page for a browser.
func (p *Panel) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if sessionFrom(r.Context()) == nil {
		http.Error(w, msg, status)
		return
	}
	p.render(w, r, status, "message", view{Error: msg})
}

// done answers an action that worked: text for the API, and for a
// browser a redirect to the page with what happened (POST, redirect, GET:
// a reload does not repeat the action).
func (p *Panel) done(w http.ResponseWriter, r *http.Request, status int, text, flash string) {
	if sessionFrom(r.Context()) == nil {
		w.WriteHeader(status)
		w.Write([]byte(text + "\n"))
		return
	}
	http.Redirect(w, r, "/?done="+flash, http.StatusSeeOther)
}

// flashes are the messages a redirect may ask a page to show.
var flashes = map[string]string{
	"reset":    "Link reset: the link goes down and comes back up within a few heartbeats.",
	"uploaded": "Torrent uploaded: this node carries it now.",
	"deleted":  "Torrent deleted: this node no longer carries it.",
}

func (p *Panel) signinPage(w http.ResponseWriter, r *http.Request) {
	if p.auth.sessionOf(r) != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	p.render(w, r, http.StatusOK, "signin", view{})
}

func (p *Panel) signinPost(w http.ResponseWriter, r *http.Request) {
	switch p.auth.try(clientAddr(r), r.FormValue("token")) {
	case tokenLimited:
		p.render(w, r, http.StatusTooManyRequests, "signin", view{Error: "Too many wrong tokens from your address; wait a minute and try again."})
		return
	case tokenWrong:
		p.render(w, r, http.StatusUnauthorized, "signin", view{Error: "Wrong token."})
		return
	}
	p.auth.signIn(w, r)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := time.Since(t)
		switch {
		case d < time.Second:
			return "just now"
		case d < time.Minute:
			return fmt.Sprintf("%ds ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"bytes": humanBytes,
	"ms": func(secs float64) string {
		if math.IsNaN(secs) {
			return "–"
		}
		return fmt.Sprintf("%.1f ms", secs*1000)
	},
	"rate": func(f float64) string {
		if f >= 100 {
			return fmt.Sprintf("%.0f/s", f)
		}
		return fmt.Sprintf("%.1f/s", f)
	},
	"dur": func(d time.Duration) string {
		if d < time.Second {
			return d.Round(time.Millisecond).String()
		}
		return d.Round(100 * time.Millisecond).String()
	},
	"join": strings.Join,
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// rateView is one series as a page shows it: the last step's figures and
// its charts.
type rateView struct {
	Name           string
	Rate, P50, P99 float64
	// PeakRate and PeakP99 are the charts' tops.
	PeakRate, PeakP99 float64
	RateChart         template.HTML
	LatencyChart      template.HTML
}

func (p *Panel) rates() []rateView {
	out := make([]rateView, len(p.hist.series))
	for i, s := range p.hist.series {
		pts := p.hist.get(i)
		v := rateView{Name: s.Name, P50: math.NaN(), P99: math.NaN(), PeakP99: math.NaN()}
		rate, p50, p99 := make([]float64, len(pts)), make([]float64, len(pts)), make([]float64, len(pts))
		for j, pt := range pts {
			rate[j], p50[j], p99[j] = pt.Rate, pt.P50, pt.P99
			v.PeakRate = max(v.PeakRate, pt.Rate)
			if !math.IsNaN(pt.P99) && (math.IsNaN(v.PeakP99) || pt.P99 > v.PeakP99) {
				v.PeakP99 = pt.P99
			}
		}
		if n := len(pts); n > 0 {
			v.Rate, v.P50, v.P99 = pts[n-1].Rate, pts[n-1].P50, pts[n-1].P99
		}
		v.RateChart = chart(s.Name+" per second", line{"rate", rate})
		v.LatencyChart = chart(s.Name+" p50 and p99", line{"p99", p99}, line{"p50", p50})
		out[i] = v
	}
	return out
}

// counters reads the counters (or gauges) of one family of fams (one
// Gather of a registry), by the value of one label ("" for the sum of
// all).
func counters(fams []*dto.MetricFamily, family, label string) map[string]float64 {
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != family {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					key = l.GetValue()
				}
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out[key] += v
		}
	}
	return out
}
