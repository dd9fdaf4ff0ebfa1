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
