package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/testkit"
)

// BenchmarkHubsRelay: the relay over 1 and 2 hub processes (the built
// binary, so that each one's CPU is its own, read from its
// process_cpu_seconds_total). A source publishes full batches as a node
// does, each change on its partition's channel; three other nodes are
// live. Reports changes taken in per second, the hubs' CPU per relayed
// change (summed over the hubs, per change taken in and written into
// three nodes), and the largest share of the writes one hub made. The
// hubs' backlog is raised so that the burst is queued, not dropped.
func BenchmarkHubsRelay(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "tracker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	srv := testkit.StartRedis(b)
	rdb := srv.Client(b)
	for _, hubs := range []int{1, 2} {
		b.Run(fmt.Sprintf("hubs=%d", hubs), func(b *testing.B) {
			channel := fmt.Sprintf("tlbench%d", time.Now().UnixNano())
			var urls []string
			for i := range hubs {
				port, err := freeLoopbackPort()
				if err != nil {
					b.Fatal(err)
				}
				cmd := exec.Command(bin, "hub")
				cmd.Env = append(os.Environ(), "TRACKER_REDIS_URL="+srv.URL(), "TRACKER_LINK_PASSWORD="+testPassword,
					"TRACKER_LINK_CHANNEL="+channel, "TRACKER_HTTP_ADDR="+fmt.Sprintf("127.0.0.1:%d", port), "TRACKER_UDP_ADDR=off",
					"TRACKER_HUB_NAME="+fmt.Sprintf("hub%d", i+1), "TRACKER_LOG_LEVEL=warn",
					// The burst of b.N batches is published at once, each
					// batch as 16 messages (one per partition): a backlog
					// of 1,024 messages would drop most of it (then resync).
					"TRACKER_HUB_BACKLOG=65536")
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
				urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d", port))
			}
			testkit.Eventually(b, 15*time.Second, "the hubs split the partitions", func() bool {
				for _, u := range urls {
					st, err := hubStatus(u)
					if err != nil || len(st.Partitions) != link.DefaultPartitions/hubs {
						return false
					}
				}
				return true
			})
			src := newBenchSource(b, rdb, channel+":up", "benchsrc")
			nodes := []*benchSource{src}
			for i := range 3 {
				nodes = append(nodes, newBenchSource(b, rdb, channel+":up", fmt.Sprintf("target%d", i+1)))
			}
			testkit.Eventually(b, 10*time.Second, "every hub hears every node", func() bool {
				for _, s := range nodes {
					s.hello()
				}
				for _, u := range urls {
					for _, s := range nodes {
						if !hubKnows(b, u, s.node) {
							return false
						}
					}
				}
				return true
			})
			time.Sleep(500 * time.Millisecond) // the join resyncs run
			sum := func(metric string) (total, most float64) {
				for _, u := range urls {
					v := hubCounter(b, u, metric)
					total += v
					most = max(most, v)
				}
				return total, most
			}
			relayedBefore, _ := sum("hub_relayed_updates_total")
			cpuBefore, _ := sum("process_cpu_seconds_total")
			const perMsg = link.MaxChanges
			now := time.Now().UnixMilli()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				// Torrents over every partition (their first byte).
				src.publishPartitioned(channel, relayChanges(i, perMsg, now, true))
			}
			want := relayedBefore + float64(3*perMsg*b.N)
			for {
				got, _ := sum("hub_relayed_updates_total")
				if got >= want {
					break
				}
				if time.Since(start) > 2*time.Minute {
					b.Fatalf("relayed %v of %v", got-relayedBefore, want-relayedBefore)
				}
				time.Sleep(5 * time.Millisecond)
			}
			el := time.Since(start).Seconds()
			b.StopTimer()
			time.Sleep(200 * time.Millisecond)
			relayed, most := sum("hub_relayed_updates_total")
			cpu, _ := sum("process_cpu_seconds_total")
			changes := float64(perMsg * b.N)
			b.ReportMetric(changes/el, "changes/s")
			b.ReportMetric((cpu-cpuBefore)/changes*1e6, "hub-cpu-µs/change")
			b.ReportMetric(100*most/relayed, "%-of-writes-by-busiest-hub")
		})
	}
}

// publishPartitioned publishes changes as a node does: each partition's
// on its channel, numbered in its own stream.
func (s *benchSource) publishPartitioned(channel string, changes []bittorrent.PeerChange) {
	cfg := link.Config{Channel: channel}
	parts := make([][]bittorrent.PeerChange, cfg.PartitionCount())
	for _, c := range changes {
		p := link.Partition(c.InfoHash, len(parts))
		parts[p] = append(parts[p], c)
	}
	if s.streams == nil {
		s.streams = map[int]uint64{}
	}
	for p, cs := range parts {
		if len(cs) == 0 {
			continue
		}
		s.streams[p]++
		msg, err := link.EncodeUp(s.key, &link.Message{Kind: link.KindUpdates, Partitions: uint16(len(parts)), Stream: uint16(p + 1),
			Node: s.node, Session: s.session, Seq: s.streams[p], Time: time.Now().UnixMilli(), Changes: cs})
		if err != nil {
			s.b.Fatal(err)
		}
		if err := s.rdb.Publish(context.Background(), cfg.PartitionChannel(p), msg).Err(); err != nil {
			s.b.Fatal(err)
		}
	}
}
