package httpapi

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// RequireToken guards an admin endpoint: the request must carry
// "Authorization: Bearer <token>". With an empty token the endpoint is off
// (404), so an unconfigured node has no admin surface at all.
func RequireToken(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			http.NotFound(w, r)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tracklink admin"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
