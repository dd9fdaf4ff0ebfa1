package redisstore

import (
	"context"
	"testing"

	"github.com/tracklink/tracklink/internal/testkit"
)

// TestStatsCommands: INFO commandstats is read by command, its calls and
// time counting what was run.
func TestStatsCommands(t *testing.T) {
	ctx := context.Background()
	rdb := testkit.SharedRedis(t).Client(t)
	st := NewStats(rdb)
	before := st.Commands(ctx)
	for range 3 {
		rdb.Ping(ctx)
	}
	after := st.Commands(ctx)
	if after == nil || after["ping"].Calls-before["ping"].Calls < 3 {
		t.Fatalf("ping calls %d then %d, want at least 3 more (the server is shared)", before["ping"].Calls, after["ping"].Calls)
	}
	if after["info"].Calls <= before["info"].Calls || after["ping"].Usec < before["ping"].Usec {
		t.Fatalf("info calls %d then %d, ping µs %d then %d", before["info"].Calls, after["info"].Calls, before["ping"].Usec, after["ping"].Usec)
	}
}
