package panel

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The admin listener's authentication. Two ways in, both with the admin
// token (TRACKER_ADMIN_TOKEN):
//
//   - an API client sends "Authorization: Bearer <token>" on each request
//     (curl, scripts): no cookie, so no cross-site request can use it;
//   - a browser signs in once with the token and gets a session cookie
//     (HttpOnly, SameSite=Strict, expiring after the session TTL), and
//     every state-changing request it makes carries the session's CSRF
//     token (a hidden form field or the X-CSRF-Token header), on top of
//     net/http's cross-origin protection (Sec-Fetch-Site / Origin), which
//     refuses any unsafe request a browser marks as cross-site.
//
// Wrong tokens, at sign-in or in a Bearer header, spend a bucket per
// client address (authBurst at once, one more every authRefill); an
// address whose bucket is empty is answered 429 without the token being
// looked at. Every outcome is counted in admin_auth_total{outcome}.

const (
	cookiePrefix = "tl_admin"
	maxSessions  = 64   // the oldest is signed out beyond it
	authBurst    = 5    // wrong tokens an address may send at once
	maxBuckets   = 4096 // addresses with a bucket; beyond it one shared bucket
)

// authRefill is how often an address gets one more try.
var authRefill = 10 * time.Second

type session struct {
	id, csrf string
	expires  time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// auth holds the sessions and the wrong-token buckets of one admin
// listener. Both maps are bounded and guarded by mu.
type auth struct {
	token []byte
	ttl   time.Duration
	now   func() time.Time

	mu       sync.Mutex
	sessions map[string]*session
	buckets  map[netip.Addr]*bucket
	shared   bucket // for addresses beyond maxBuckets

	outcomes *prometheus.CounterVec
}

func newAuth(token string, ttl time.Duration, reg prometheus.Registerer) (*auth, error) {
	a := &auth{
		token: []byte(token), ttl: ttl, now: time.Now,
		sessions: map[string]*session{}, buckets: map[netip.Addr]*bucket{},
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "admin_auth_total",
			Help: "Admin listener authentication by outcome: signed_in, signed_out, wrong_token, limited (an address out of tries), bad_csrf, expired."}, []string{"outcome"}),
	}
	a.shared = bucket{tokens: authBurst, last: a.now()}
	for _, o := range []string{"signed_in", "signed_out", "wrong_token", "limited", "bad_csrf", "expired"} {
		a.outcomes.WithLabelValues(o)
	}
	return a, reg.Register(a.outcomes)
}

func (a *auth) count(outcome string) { a.outcomes.WithLabelValues(outcome).Inc() }

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// clientAddr is the request's peer address (the admin listener trusts no
// forwarding header: it is meant for loopback or an operator's network).
func clientAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	ip, _ := netip.ParseAddr(host)
	return ip.Unmap()
}

// allowed reports whether addr may try a token now.
func (a *auth) allowed(addr netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.bucketOf(addr)
	b.refill(a.now())
	return b.tokens >= 1
}

// wrong spends one try of addr.
func (a *auth) wrong(addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.bucketOf(addr)
	b.refill(a.now())
	b.tokens = max(0, b.tokens-1)
	a.count("wrong_token")
}

// bucketOf returns addr's bucket, making one while there is room (full
// buckets are forgotten first: they hold nothing).
func (a *auth) bucketOf(addr netip.Addr) *bucket {
	if b, ok := a.buckets[addr]; ok {
		return b
	}
	now := a.now()
	if len(a.buckets) >= maxBuckets {
		for k, b := range a.buckets {
			if b.refill(now); b.tokens >= authBurst {
				delete(a.buckets, k)
			}
		}
	}
	if len(a.buckets) >= maxBuckets {
		return &a.shared
	}
	b := &bucket{tokens: authBurst, last: now}
	a.buckets[addr] = b
	return b
}

func (b *bucket) refill(now time.Time) {
	b.tokens = min(authBurst, b.tokens+float64(now.Sub(b.last))/float64(authRefill))
	b.last = now
}

func (a *auth) tokenOK(got string) bool {
	return len(a.token) > 0 && subtle.ConstantTimeCompare([]byte(got), a.token) == 1
}

// signIn starts a session, signing out the oldest beyond maxSessions.
func (a *auth) signIn(w http.ResponseWriter, r *http.Request) {
	s := &session{id: randomToken(), csrf: randomToken(), expires: a.now().Add(a.ttl)}
	a.mu.Lock()
	if len(a.sessions) >= maxSessions {
		var oldest *session
		for _, o := range a.sessions {
			if oldest == nil || o.expires.Before(oldest.expires) {
				oldest = o
			}
		}
		delete(a.sessions, oldest.id)
	}
	a.sessions[s.id] = s
	a.mu.Unlock()
	a.count("signed_in")
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: s.id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, Expires: s.expires, MaxAge: int(a.ttl.Seconds())})
}

// cookieName is the session cookie's name for the listener a request came
// to. Browsers keep cookies by host, not by port, so the panels of a hub
// and of nodes on one machine would overwrite each other's session under
// one name: the name carries the port.
func cookieName(r *http.Request) string {
	_, port, err := net.SplitHostPort(r.Host)
	if err != nil || port == "" || strings.Trim(port, "0123456789") != "" {
		return cookiePrefix
	}
	return cookiePrefix + "_" + port
}

// signOut ends the request's session.
func (a *auth) signOut(w http.ResponseWriter, r *http.Request, s *session) {
	a.mu.Lock()
	delete(a.sessions, s.id)
	a.mu.Unlock()
	a.count("signed_out")
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// sessionOf returns the request's live session, or nil.
func (a *auth) sessionOf(r *http.Request) *session {
	c, err := r.Cookie(cookieName(r))
	if err != nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[c.Value]
	if s != nil && !a.now().Before(s.expires) {
		delete(a.sessions, s.id)
		a.count("expired")
		return nil
	}
	return s
}

type ctxKey struct{}

// sessionFrom returns the session a request came in with (nil: Bearer).
func sessionFrom(ctx context.Context) *session {
	s, _ := ctx.Value(ctxKey{}).(*session)
	return s
}

// safeMethod: requests that change nothing.
func safeMethod(m string) bool { return m == "GET" || m == "HEAD" || m == "OPTIONS" }

// require lets a request through with a valid Bearer token or a live
// session (and, for a state-changing request, its CSRF token). Pages
// send a browser without a session to the sign-in page; the API (under
// /admin/) answers 401.
func (a *auth) require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddr(r)
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			if !a.allowed(addr) {
				a.count("limited")
				http.Error(w, "too many wrong tokens; try again later", http.StatusTooManyRequests)
				return
			}
			if !a.tokenOK(bearer) {
				a.wrong(addr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="tracklink admin"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		s := a.sessionOf(r)
		if s == nil {
			if !strings.HasPrefix(r.URL.Path, "/admin/") && safeMethod(r.Method) {
				http.Redirect(w, r, "/signin", http.StatusSeeOther)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="tracklink admin"`)
			http.Error(w, "unauthorized: sign in at /signin, or send Authorization: Bearer <admin token>", http.StatusUnauthorized)
			return
		}
		if !safeMethod(r.Method) {
			got := r.Header.Get("X-CSRF-Token")
			if got == "" {
				got = r.FormValue("csrf")
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				a.count("bad_csrf")
				http.Error(w, "forbidden: missing or wrong CSRF token (reload the page)", http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
	})
}
