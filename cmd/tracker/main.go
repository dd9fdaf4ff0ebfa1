// Command tracker is Tracklink: a BitTorrent tracker node on Redis (the
// default), and the tools that go with it.
//
//	tracker            run a tracker node (configured by TRACKER_* variables)
//	tracker hub        run the link's hub
//	tracker cluster    run redis, a hub and N nodes as local processes
//	tracker healthcheck  exit 0 when the local node answers /healthz
//	tracker torrent    reannounce, show and create .torrent files
//	tracker link key   print one node's link credentials
//	tracker acl        print Redis ACL users for the hub and the nodes
//	tracker redis-setup  load the store's Redis functions (administrator)
//	tracker version    print the version
//	tracker loadgen    measure a running node (see scripts/bench-node.sh)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Stamped at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "tracker:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "tracker:", err)
		os.Exit(1)
	}
}

// usageError is a command line the program does not understand.
type usageError string

func (e usageError) Error() string { return string(e) }

const usage = `usage:
  tracker            run a tracker node, configured by TRACKER_* environment variables
  tracker hub        run the link's hub (same variables; TRACKER_LINK_PASSWORD required)
  tracker cluster    run redis-server, a hub and N linked nodes locally (flags: -h)
  tracker healthcheck [URL]  exit 0 when the node at TRACKER_HTTP_ADDR answers /healthz
  tracker torrent    reannounce, show or create .torrent files (tracker torrent for usage)
  tracker link key NODE_ID  print a node's link key and the hub's public key (needs TRACKER_LINK_PASSWORD)
  tracker acl NODE_ID...    print Redis ACL users for the hub and each node (flags: -h)
  tracker redis-setup       load the store's Redis functions into TRACKER_REDIS_URL, as an administrator (flags: -h)
  tracker version    print the version and commit
  tracker loadgen    announce load against a running node (flags: -h)
`

func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "", "node":
		return runNode(ctx, environ, stderr, nil)
	case "hub":
		return runHub(ctx, environ, stderr, nil)
	case "torrent":
		return runTorrent(ctx, args[1:], stdout, stderr)
	case "link":
		return runLinkKey(args[1:], environ, stdout)
	case "acl":
		return runACL(args[1:], stdout, stderr)
	case "redis-setup":
		return runRedisSetup(ctx, args[1:], environ, stdout, stderr)
	case "cluster":
		return runLocalCluster(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, args[1:], environ)
	case "loadgen":
		return runLoadgen(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "tracker %s (commit %s)\n", version, commit)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError(fmt.Sprintf("unknown command %q\n%s", cmd, usage))
}
