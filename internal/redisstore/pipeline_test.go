package redisstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/linger"
)

// TestPipelinerLinger: announces that arrive apart, none while another is
// out, share one script call when the worker lingers, and take one each
// when it does not (the control: the arrivals are far enough apart that
// only the linger joins them).
func TestPipelinerLinger(t *testing.T) {
	const apart = 20 * time.Millisecond
	for _, tc := range []struct {
		linger    time.Duration
		wantCalls func(int64) bool
		want      string
	}{
		{0, func(n int64) bool { return n >= 2 }, "at least 2"},
		{time.Second, func(n int64) bool { return n == 1 }, "1"},
	} {
		s, rdb := storeOnOwnRedis(t)
		ctx, cancel := context.WithCancel(context.Background())
		p := NewPipeliner(s, 1, 64, 64).WithLinger(tc.linger)
		go p.Run(ctx)
		before := scriptCallCount(t, rdb)
		var wg sync.WaitGroup
		for i := range linger.Fill {
			time.Sleep(apart)
			wg.Go(func() {
				res, err := p.Announce(ctx, req(benchHash(i), peer(i, false), 1, bittorrent.Started), 10)
				if err != nil || res.Leechers != 1 {
					t.Errorf("announce %d: %+v %v", i, res, err)
				}
			})
		}
		wg.Wait()
		if n := scriptCallCount(t, rdb) - before; !tc.wantCalls(n) {
			t.Errorf("linger %v: %d announces %v apart took %d script calls, want %s", tc.linger, linger.Fill, apart, n, tc.want)
		}
		cancel()
	}
}

// TestPipelinerLingerLoneClient: a client announcing one request at a
// time, alone, pays the linger only now and then: after two lingers in a
// row that caught nothing the worker sends the next 1, 2, 4, ... batches
// at once.
func TestPipelinerLingerLoneClient(t *testing.T) {
	s, _ := storeOnOwnRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const linger, n = 100 * time.Millisecond, 16
	p := NewPipeliner(s, 1, 64, 64).WithLinger(linger)
	go p.Run(ctx)
	waited := 0
	for i := range n {
		start := time.Now()
		if _, err := p.Announce(ctx, req(benchHash(0), peer(i, false), 1, bittorrent.Started), 10); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) >= linger {
			waited++
		}
	}
	// The 1st, 2nd, 4th, 7th and 12th wait (the 2nd, 4th, 7th and 12th
	// each make the worker send the next 1, 2, 4 and 8 at once).
	if waited != 5 {
		t.Fatalf("%d of %d sequential announces waited the linger, want 5", waited, n)
	}
}
