package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestUpgradeAnnounce: WebSocket upgrades of /announce go to the upgrade
// handler, everything else (plain announces, other paths) to the tracker.
func TestUpgradeAnnounce(t *testing.T) {
	s := &Server{handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })}
	s.UpgradeAnnounce(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusSwitchingProtocols) }))
	for _, tc := range []struct {
		path, upgrade, connection string
		want                      int
	}{
		{"/announce", "websocket", "Upgrade", http.StatusSwitchingProtocols},
		{"/announce", "WebSocket", "keep-alive, upgrade", http.StatusSwitchingProtocols},
		{"/announce", "", "", http.StatusTeapot},
		{"/announce", "websocket", "keep-alive", http.StatusTeapot},
		{"/announce", "h2c", "Upgrade", http.StatusTeapot},
		{"/scrape", "websocket", "Upgrade", http.StatusTeapot},
	} {
		r := httptest.NewRequest("GET", tc.path, nil)
		if tc.upgrade != "" {
			r.Header.Set("Upgrade", tc.upgrade)
		}
		if tc.connection != "" {
			r.Header.Set("Connection", tc.connection)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s Upgrade=%q Connection=%q: %d, want %d", tc.path, tc.upgrade, tc.connection, w.Code, tc.want)
		}
	}
}
