package panel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
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
// Every token sent, at sign-in or in a Bearer header, is compared (see
// try): the right one is always let in, so that nobody who can reach the
// listener can lock the operator out with wrong ones. Wrong tokens spend a
// bucket per client address (authBurst at once, one more every
// authRefill) and are answered 429 once it is empty. Requests whose Host
// is a name the listener does not answer to are refused first (hostOK).
// Every outcome is counted in admin_auth_total{outcome}.

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
	// sum is the SHA-256 of the token: tokens are compared as digests, so
	// the comparison takes the same time whatever their lengths.
	sum   [sha256.Size]byte
	hosts map[string]bool // names the listener answers to besides localhost and IP addresses
	ttl   time.Duration
	now   func() time.Time

	mu       sync.Mutex
	sessions map[string]*session
	buckets  map[netip.Addr]*bucket
	shared   bucket // for addresses beyond maxBuckets

	outcomes *prometheus.CounterVec
}

func newAuth(token string, ttl time.Duration, hosts []string, reg prometheus.Registerer) (*auth, error) {
	if token == "" {
		return nil, errors.New("the admin panel needs TRACKER_ADMIN_TOKEN")
	}
	a := &auth{
		sum: sha256.Sum256([]byte(token)), hosts: map[string]bool{}, ttl: ttl, now: time.Now,
		sessions: map[string]*session{}, buckets: map[netip.Addr]*bucket{},
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "admin_auth_total",
			Help: "Admin listener authentication by outcome: signed_in, signed_out, wrong_token, limited (a wrong token from an address out of tries), bad_csrf, expired, bad_host (a Host the listener does not answer to, refused 421)."}, []string{"outcome"}),
	}
	for _, h := range hosts {
		a.hosts[strings.ToLower(h)] = true
	}
	a.shared = bucket{tokens: authBurst, last: a.now()}
	for _, o := range []string{"signed_in", "signed_out", "wrong_token", "limited", "bad_csrf", "expired", "bad_host"} {
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

// What try says of a token.
type verdict int

const (
	tokenRight   verdict = iota
	tokenWrong           // answer 401
	tokenLimited         // wrong, and its address is out of tries: answer 429
)

// try checks a token sent from addr. Every attempt is compared, and the
// right token is let in whatever addr's bucket holds: a bucket that
// refused the right token too would let anyone who reaches the listener
// from the operator's address (on loopback, any local process) lock the
// operator out with five wrong tokens. A wrong token spends one of addr's
// tries, or is limited when none is left; both are counted. So guessing
// is bounded by the token's length, not by the bucket: the token is at
// least 16 characters (TRACKER_ADMIN_TOKEN, checked at start), and a
// guesser's flood is answered 429 and counted, for the operator to see.
func (a *auth) try(addr netip.Addr, got string) verdict {
	if a.tokenOK(got) {
		return tokenRight
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.bucketOf(addr)
	b.refill(a.now())
	if b.tokens < 1 {
		a.count("limited")
		return tokenLimited
	}
	b.tokens--
	a.count("wrong_token")
	return tokenWrong
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
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], a.sum[:]) == 1
}

// hostOK reports whether the listener answers to a request's Host (port
// aside): an IP address, localhost, or a name of TRACKER_ADMIN_HOSTS.
// Anything else is a name someone else's DNS may point at us (DNS
// rebinding: a page of evil.example, whose name then resolves to
// 127.0.0.1, would be same-origin with the panel and could read it); a
// browser sends the name it resolved, so such requests are refused. An IP
// address is not a name anyone can rebind: a browser that sends one
// connected to that very address, so it is accepted whatever the address
// (the listener's own, loopback, or a published port's, as compose's
// 127.0.0.1:6990 in front of the container's address). The port is not
// checked for the same reason.
func (a *auth) hostOK(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.ToLower(host)
	return host == "localhost" || a.hosts[host]
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
			switch a.try(addr, bearer) {
			case tokenLimited:
				http.Error(w, "too many wrong tokens; try again later", http.StatusTooManyRequests)
			case tokenWrong:
				w.Header().Set("WWW-Authenticate", `Bearer realm="tracklink admin"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
			default:
				h.ServeHTTP(w, r)
			}
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
