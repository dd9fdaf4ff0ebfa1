package frontpage

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPage(t *testing.T) {
	var reads atomic.Int64
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total"}, []string{"action"})
	reg.MustRegister(c)
	p := New(Config{
		Role: "tracker node", Name: "n<1>", Version: "v1", About: "About.", Announce: true, UDPPort: 7000, WebSocket: true,
		Links: []Link{{Path: "/metrics", What: "metrics"}}, Admin: "Not here.",
		Figures: func(context.Context) ([]Figure, error) {
			reads.Add(1)
			return []Figure{{Label: "Peers", Value: "42"}}, nil
		},
		Rates:    []Rate{{Label: "Announces per second", Series: []Series{{Metric: "x_total", Label: "action", Value: "announce"}}}},
		Gatherer: reg,
	})
	now := time.Now()
	p.sample(now.Add(-2 * time.Second))
	c.WithLabelValues("announce").Add(10)
	c.WithLabelValues("connect").Add(1000) // not counted
	p.sample(now)

	get := func(host, path string) (*http.Response, string) {
		r := httptest.NewRequest("GET", path, nil)
		r.Host = host
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Result(), string(b)
	}
	resp, body := get("tracker.example:6969", "/")
	for _, want := range []string{
		"http://tracker.example:6969/announce", "udp://tracker.example:7000/announce", "ws://tracker.example:6969/announce",
		"<th scope=\"row\">Peers</th><td class=\"n\">42</td>",
		"<th scope=\"row\">Announces per second</th><td class=\"n\">5.0</td>",
		"n&lt;1&gt;", `<a href="/metrics">/metrics</a>`, "Not here.",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=1" {
		t.Errorf("Cache-Control %q", cc)
	}
	if _, body := get("[2001:db8::1]:6969", "/"); !strings.Contains(body, "udp://[2001:db8::1]:7000/announce") {
		t.Errorf("IPv6 host: %s", body)
	}
	if resp, _ := get("x", "/nope"); resp.StatusCode != 404 {
		t.Errorf("/nope: %d", resp.StatusCode)
	}

	// Many visitors within a second: the figures are read once.
	reads.Store(0)
	p.mu.Lock()
	p.at = time.Time{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { get("x", "/") })
	}
	wg.Wait()
	if n := reads.Load(); n != 1 {
		t.Fatalf("figures read %d times for 50 visits within a second", n)
	}
}
