package reuseport

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/tracklink/tracklink/internal/logsample"
)

// Registry is the node's registry of its live processes (the store's).
type Registry interface {
	Beat(ctx context.Context, proc string) error
	Leave(ctx context.Context, proc string) error
	Processes(ctx context.Context, window time.Duration) ([]string, error)
}

// Group keeps one replica in step with the others: it says in the
// registry, every Every, that this process runs, reads which replicas do,
// and from that sets the TCP listener's owners (Affinity) and steers the
// UDP sockets' groups (Steer) by their number. When its context ends the
// replica leaves: it takes itself out of the registry and out of its own
// owners (so it hands every connection it still gets to the others), waits
// Drain for the others to see it gone, and returns; the caller then closes
// the listeners.
type Group struct {
	Registry Registry
	Self     string
	Every    time.Duration // 0: one second
	Drain    time.Duration // 0: two Every
	TCP      *Affinity     // nil: none
	UDP      []*net.UDPConn
	Log      *slog.Logger
	// Changed, if set, is told the number of live replicas when it
	// changes (a gauge).
	Changed func(n int)

	sampled *logsample.Logger // failures, at most a line per 10 s
}

func (g *Group) errLog() *logsample.Logger {
	if g.sampled == nil {
		g.sampled = logsample.New(g.Log, 10*time.Second)
	}
	return g.sampled
}

// Run runs until ctx ends, then leaves as above.
func (g *Group) Run(ctx context.Context) error {
	every := g.Every
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	steered := 0
	for {
		g.step(ctx, every, &steered)
		select {
		case <-ctx.Done():
			return g.leave(every)
		case <-t.C:
		}
	}
}

func (g *Group) step(ctx context.Context, every time.Duration, steered *int) {
	if err := g.Registry.Beat(ctx, g.Self); err != nil {
		if ctx.Err() == nil {
			g.errLog().Log(slog.LevelWarn, "replica registry: beat failed; keeping the last view", "err", err)
		}
		return
	}
	procs, err := g.Registry.Processes(ctx, 3*every)
	if err != nil {
		return
	}
	if !slices.Contains(procs, g.Self) {
		procs = append(procs, g.Self)
	}
	if g.TCP != nil {
		g.TCP.SetReplicas(procs)
	}
	n := min(len(procs), MaxReplicas)
	if n == *steered {
		return
	}
	for _, c := range g.UDP {
		if err := Steer(c, n); err != nil {
			g.errLog().Log(slog.LevelWarn, "replicas: UDP datagrams are spread by the kernel's hash, not by client address", "err", err)
		}
	}
	g.Log.Info("replicas of this node", "live", n)
	*steered = n
	if g.Changed != nil {
		g.Changed(n)
	}
}

func (g *Group) leave(every time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.Registry.Leave(ctx, g.Self); err != nil {
		g.Log.Warn("replica registry: could not leave; the others see this process gone within three beats", "err", err)
	}
	drain := g.Drain
	if drain <= 0 {
		drain = 2 * every
	}
	g.Log.Info("leaving the replicas: handing new connections to the others", "drain", drain)
	// Others may be leaving at the same time (a scale down stops several):
	// read the registry again through the drain, so that nothing is
	// handed to a replica that is about to close.
	end := time.Now().Add(drain)
	for {
		if g.TCP != nil {
			rctx, rcancel := context.WithTimeout(context.Background(), every)
			if procs, err := g.Registry.Processes(rctx, 3*every); err == nil {
				g.TCP.SetReplicas(slices.DeleteFunc(procs, func(p string) bool { return p == g.Self }))
			}
			rcancel()
		}
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		time.Sleep(min(left, leaveRead))
	}
}

// leaveRead is how often a leaving replica reads who else still serves.
const leaveRead = 100 * time.Millisecond
