package testkit

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// Within polls cond every 10 ms until it holds (true) or d has passed
// (false).
func Within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Eventually polls cond every 10 ms until it holds, failing tb with what
// if it does not within d, and returns how long it took.
func Eventually(tb testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	if !Within(d, cond) {
		tb.Fatalf("%s: not within %s", what, d)
	}
	return time.Since(start)
}

// UDPAnnounceURL returns the udp:// announce URL of the running node
// whose HTTP base URL is base, read from its /udp/status.
func UDPAnnounceURL(tb testing.TB, base string) string {
	tb.Helper()
	resp, err := http.Get(base + "/udp/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Addrs []string }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st.Addrs) == 0 {
		tb.Fatalf("/udp/status: %v %+v", err, st)
	}
	return "udp://" + st.Addrs[0] + "/announce"
}
