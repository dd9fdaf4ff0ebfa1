package redisstore

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Client is a connection to one Redis or a Redis Cluster, as every
// constructor of this package takes it (go-redis's UniversalClient).
// Outside this package it is only passed around and closed.
type Client = redis.UniversalClient

// ClientOptions bound a Client.
type ClientOptions struct {
	// Cluster: the URL names a Redis Cluster (redis.ParseClusterURL's
	// form), else one Redis.
	Cluster bool
	// Timeout bounds every dial, read, write and wait for a pooled
	// connection, so that a dead Redis costs a caller one timeout, never
	// a hang.
	Timeout time.Duration
	// PoolSize is the connections per Redis (0: go-redis's default).
	PoolSize int
	// ClusterRefresh is how often a Cluster client reloads the slot map.
	ClusterRefresh time.Duration
	// TLS, when set, completes the TLS settings of a rediss:// URL (CA,
	// client certificate); not called for redis://.
	TLS func(*tls.Config) error
}

// URLError is a Redis URL that does not parse.
type URLError struct{ Err error }

func (e *URLError) Error() string { return e.Err.Error() }
func (e *URLError) Unwrap() error { return e.Err }

// Dial returns a client of the Redis (or Redis Cluster) at url, bounded
// by o. It connects lazily: a Redis that is down fails the first command,
// not Dial.
func Dial(url string, o ClientOptions) (Client, error) {
	if o.Cluster {
		co, err := redis.ParseClusterURL(url)
		if err != nil {
			return nil, &URLError{err}
		}
		bound(o, &co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout, &co.PoolTimeout, &co.MaxRetries, &co.PoolSize)
		// One dial per attempt, not go-redis's five 100 ms apart: a
		// refused dial (a dead master) then costs milliseconds, and a
		// pipeline that spans shards answers for the live ones instead
		// of running out of time and failing whole. (On one Redis the
		// retries are kept: they carry announces through a restart.)
		co.DialerRetries = 1
		// A dead master sends no MOVED: without a short refresh its slots
		// stay mapped to it for go-redis's default minute after Redis has
		// promoted a replica.
		co.ClusterStateReloadInterval = o.ClusterRefresh
		if err := completeTLS(o, co.TLSConfig); err != nil {
			return nil, err
		}
		return redis.NewClusterClient(co), nil
	}
	so, err := redis.ParseURL(url)
	if err != nil {
		return nil, &URLError{err}
	}
	bound(o, &so.DialTimeout, &so.ReadTimeout, &so.WriteTimeout, &so.PoolTimeout, &so.MaxRetries, &so.PoolSize)
	if err := completeTLS(o, so.TLSConfig); err != nil {
		return nil, err
	}
	return redis.NewClient(so), nil
}

// Where returns a Redis URL's address(es) and database, for telling Redis
// apart ("" when the URL does not parse: Dial's error says why).
func Where(url string, cluster bool) string {
	if cluster {
		o, err := redis.ParseClusterURL(url)
		if err != nil {
			return ""
		}
		return strings.Join(o.Addrs, ",")
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s/%d", o.Addr, o.DB)
}

func completeTLS(o ClientOptions, t *tls.Config) error {
	if t == nil || o.TLS == nil {
		return nil
	}
	return o.TLS(t)
}

// bound sets a client's timeouts, retries and pool size.
func bound(o ClientOptions, dial, read, write, pool *time.Duration, retries, size *int) {
	*dial, *read, *write, *pool = o.Timeout, o.Timeout, o.Timeout, o.Timeout
	*retries = 1
	if o.PoolSize > 0 {
		*size = o.PoolSize
	}
}

// SetLogger sends go-redis's own messages (dial failures and the like) to
// log, as warnings. It applies to every client of the process.
func SetLogger(log *slog.Logger) { redis.SetLogger(redisLogger{log}) }

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// CountRoundTrips calls count for every round trip c makes to Redis: one
// per command or pipeline sent, whatever a script runs inside Redis.
func CountRoundTrips(c Client, count func()) { c.AddHook(roundTripCounter(count)) }

type roundTripCounter func()

func (h roundTripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h roundTripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h()
		return next(ctx, cmd)
	}
}

func (h roundTripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h()
		return next(ctx, cmds)
	}
}
