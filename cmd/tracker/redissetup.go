package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// runRedisSetup is `tracker redis-setup`: the administrative step that
// loads the store's Redis function library into the Redis of
// TRACKER_REDIS_URL (every master of a Redis Cluster with
// TRACKER_REDIS_CLUSTER), as a user that may: the tl-admin user `tracker
// acl` prints, or the default user of a Redis without ACLs. Nodes and hubs
// only call the functions. Run it before processes of a new release start
// (the library's name carries a hash of its code, so the releases' libraries
// coexist), and again on a master added to a cluster later.
func runRedisSetup(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracker redis-setup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	printLib := fs.Bool("print", false, "print the library instead of loading it (for: redis-cli -x FUNCTION LOAD REPLACE < file)")
	prune := fs.Bool("prune", false, "also delete the store's libraries of other releases (once no process of theirs runs)")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError("usage: tracker redis-setup [-print] [-prune]   (Redis from TRACKER_REDIS_URL, TRACKER_REDIS_CLUSTER)")
	}
	lib := redisstore.Functions()
	if *printLib {
		_, err := io.WriteString(stdout, lib.Code)
		return err
	}
	cfg, _, err := config.Load(environ)
	if err != nil {
		return err
	}
	if cfg.RedisURL == "" {
		return usageError("tracker redis-setup needs TRACKER_REDIS_URL, with credentials that may load functions (the embedded store needs no setup)")
	}
	rdb, err := newRedisClient(cfg.RedisURL, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// A cluster's masters are loaded side by side, each within the
	// timeout; a little more for the slot map.
	ctx, cancel := context.WithTimeout(ctx, 3*cfg.RedisTimeout)
	defer cancel()
	if err := redisstore.LoadFunctions(ctx, rdb); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loaded Redis function library %s\n", lib.Name)
	if *prune {
		gone, err := redisstore.PruneFunctions(ctx, rdb)
		for _, name := range gone {
			fmt.Fprintf(stdout, "deleted Redis function library %s\n", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// prepareFunctions runs a store's (or relayer's) check of its function
// library at start, as prepare, and says what happened: the library
// missing where this process may not load it ends the start, with the
// command to run; this process having loaded it is logged once (only
// credentials without ACLs may: a Redis of one's own, tests); a Redis
// that does not answer yet is logged, and the process serves failures
// until it does.
func prepareFunctions(ctx context.Context, prepare func(context.Context) (bool, error), log *slog.Logger, what string) error {
	loaded, err := prepare(ctx)
	switch {
	case errors.Is(err, redisstore.ErrFunctionsMissing):
		return fmt.Errorf("%s: %w", what, err)
	case err != nil:
		log.Warn("redis not ready at start; serving failures until it is", "redis", what, "err", err)
	case loaded:
		log.Info("loaded the Redis function library with this process's credentials (a Redis without ACLs); with ACLs, tracker redis-setup does", "redis", what, "library", redisstore.Functions().Name)
	}
	return nil
}
