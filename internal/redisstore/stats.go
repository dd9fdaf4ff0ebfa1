package redisstore

import (
	"context"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Stats reads a Redis server's own figures (INFO), for the load generator
// and the benchmarks: memory used, connections accepted, CPU time.
type Stats struct {
	rdb redis.UniversalClient
}

// DialStats returns the figures of the Redis at addr (host:port); Close
// it when done.
func DialStats(addr string) *Stats { return &Stats{rdb: redis.NewClient(&redis.Options{Addr: addr})} }

// NewStats returns the figures of the Redis rdb talks to.
func NewStats(rdb redis.UniversalClient) *Stats { return &Stats{rdb: rdb} }

// Close closes the connection DialStats made.
func (s *Stats) Close() error { return s.rdb.Close() }

// Info returns the integer field of INFO's section (0 when it cannot be
// read).
func (s *Stats) Info(ctx context.Context, section, field string) int64 {
	v, err := s.rdb.Info(ctx, section).Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(v, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// CommandStat is one command's line of INFO commandstats: calls and the
// microseconds they took.
type CommandStat struct{ Calls, Usec int64 }

// Commands returns INFO commandstats by command (nil when it cannot be
// read).
func (s *Stats) Commands(ctx context.Context) map[string]CommandStat {
	v, err := s.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil
	}
	out := map[string]CommandStat{}
	for _, line := range strings.Split(v, "\r\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || len(name) == len(line) {
			continue
		}
		var c CommandStat
		for _, f := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				c.Calls = n
			case "usec":
				c.Usec = n
			}
		}
		out[name] = c
	}
	return out
}

// CPU returns the CPU seconds Redis has used so far (user + system).
func (s *Stats) CPU(ctx context.Context) float64 { return RedisCPU(ctx, s.rdb) }

// RedisCPU returns the CPU seconds the Redis rdb talks to has used so far
// (user + system).
func RedisCPU(ctx context.Context, rdb redis.UniversalClient) float64 {
	s, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(s, "\r\n") {
		for _, f := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, f); ok {
				x, _ := strconv.ParseFloat(v, 64)
				total += x
			}
		}
	}
	return total
}
