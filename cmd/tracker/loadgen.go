package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/tracklink/tracklink/internal/loadgen"
)

// runLoadgen is `tracker loadgen`: the announce benchmark against a running node.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracker loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg loadgen.Config
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:6969/announce", "announce URL of the node, http:// or udp:// (loopback only)")
	fs.StringVar(&cfg.MetricsURL, "metrics", "", "the node's /metrics URL, for round trips and CPU per announce (default: from an http:// -url)")
	fs.IntVar(&cfg.Conns, "conns", 64, "concurrent clients: keep-alive connections, or UDP sockets that connect once and then announce")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the measured phase")
	fs.IntVar(&cfg.Torrents, "torrents", 10000, "torrents")
	fs.IntVar(&cfg.Peers, "peers", 10, "peers per torrent")
	fs.IntVar(&cfg.NumWant, "numwant", 50, "numwant of each announce")
	fs.StringVar(&cfg.Redis, "redis", "", "host:port of the node's Redis, for round trips, connections and memory per peer")
	fs.Float64Var(&cfg.Rate, "rate", 0, "announces a second in all, paced (0: as fast as the node answers)")
	fs.IntVar(&cfg.Sources, "sources", 0, "spread the clients over this many loopback source addresses, 127.0.0.2 and up (replicas on one port serve each address in one of them; 0: one address)")
	fs.IntVar(&cfg.Mux, "mux", 0, "udp:// only: drive the measured clients from this many shared sockets, one goroutine each (cheaper per request for the load generator; no -rate, at most 1m); 0: a socket and a goroutine per client")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if cfg.Duration > 10*time.Minute || cfg.Conns > 4096 {
		return usageError("loadgen: at most 10m and 4096 connections")
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, res)
	return nil
}
