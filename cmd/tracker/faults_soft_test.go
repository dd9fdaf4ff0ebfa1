package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestFaultsWriteBehind: a node that writes refreshes behind (a window of
// 1 s, so that the kill lands inside it) is killed -9 right after joins,
// refreshes and stops: every join and every stop is in Redis, and only
// refreshes are lost. Stopped with SIGTERM instead, it writes every
// refresh before it exits. Part of the fault suite (TRACKLINK_FAULTS).
func TestFaultsWriteBehind(t *testing.T) {
	if os.Getenv(faultsVar) == "" {
		t.Skip("the fault suite runs with " + faultsVar + "=short or long")
	}
	r := &rig{t: t, bin: buildTracker(t), dir: t.TempDir(), channel: fmt.Sprintf("tlsoft%d", os.Getpid())}
	r.redis = testkit.StartRedis(t)
	r.rdb = r.redis.Client(t)
	for round, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			r.t = t
			n := &osProc{name: fmt.Sprintf("soft%d", round), role: "node", port: testkit.FreePort(t),
				env: []string{"TRACKER_READ_CACHE=1m", "TRACKER_WRITE_BEHIND=1s"}}
			r.start(n)
			t.Cleanup(func() { r.stop(n, syscall.SIGKILL) })
			ks, err := redisstore.NewKeyspace("tl", n.name)
			if err != nil {
				t.Fatal(err)
			}
			const torrents, per, stops, late = 10, 20, 5, 5
			ih := func(i int) string { return fmt.Sprintf("softfault-%d-%08d", round, i) }
			base := n.url()
			for i := range torrents {
				for j := range per {
					announceTo(t, base, ih(i), 20000+j, j%2, "started")
				}
			}
			time.Sleep(20 * time.Millisecond)
			refreshedAt := time.Now().UnixMilli()
			for i := range torrents {
				for j := range per {
					announceTo(t, base, ih(i), 20000+j, j%2, "")
				}
			}
			for i := range torrents {
				for j := range stops {
					announceTo(t, base, ih(i), 20000+j, j%2, "stopped")
				}
				for j := range late {
					announceTo(t, base, ih(i), 21000+j, 1, "started")
				}
			}
			queued := nodeMetric(t, base, `tracker_write_behind_total{result="queued"}`)
			if queued < torrents*per/2 {
				t.Fatalf("%v refreshes queued of %d: the write-behind was not exercised", queued, torrents*per)
			}
			r.stop(n, sig)

			ctx := context.Background()
			var lost, written int
			for i := range torrents {
				key := ks.Swarm(bittorrent.InfoHash([]byte(ih(i)))).Peers
				score := func(port int) (int64, bool) {
					m := make([]byte, 6)
					copy(m, []byte{127, 0, 0, 1})
					binary.BigEndian.PutUint16(m[4:], uint16(port))
					sc, err := r.rdb.ZScore(ctx, key, string(m)).Result()
					if err != nil {
						return 0, false
					}
					_, seen := redisstore.PeerClass(sc)
					return seen, true
				}
				for j := range per {
					seen, ok := score(20000 + j)
					switch {
					case j < stops && ok:
						t.Errorf("torrent %d: peer %d stopped before the %s and is in Redis", i, j, sig)
					case j >= stops && !ok:
						t.Errorf("torrent %d: peer %d joined before the %s and is not in Redis", i, j, sig)
					case j >= stops && seen < refreshedAt:
						lost++
					case j >= stops:
						written++
					}
				}
				for j := range late {
					if _, ok := score(21000 + j); !ok {
						t.Errorf("torrent %d: peer %d joined last, before the %s, and is not in Redis", i, 21000+j, sig)
					}
				}
			}
			t.Logf("%s within the write-behind window: %v refreshes queued; of the %d peers refreshed and not stopped, %d refreshes written, %d lost (their joins kept)",
				sig, queued, torrents*(per-stops), written, lost)
			if sig == syscall.SIGTERM && lost > 0 {
				t.Errorf("a clean stop lost %d refreshes; it must write every one", lost)
			}
		})
	}
}

// nodeMetric reads one sample (name with its labels) from a node's
// /metrics; 0 when it is not there.
func nodeMetric(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	re := regexp.MustCompile("^" + regexp.QuoteMeta(sample) + " (\\S+)$")
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
	}
	return 0
}
