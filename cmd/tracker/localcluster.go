package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/listen"
)

// runLocalCluster is `tracker cluster`: the compose topology as local
// processes, for trying a cluster without Docker: a redis-server, the hub
// (on 6968) and N linked nodes on consecutive loopback ports (6969 up),
// the ports the compose file uses (see the port plan in internal/config). It
// stops them all when ctx ends (Ctrl-C), and stops at once, with the
// child's own error, when any of them exits.
func runLocalCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracker cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 3, "number of tracker nodes")
	basePort := fs.Int("base-port", 6969, "HTTP and UDP port of node 1; node i listens on base-port+i-1")
	hubPort := fs.Int("hub-port", 6968, "the hub's public port (/, /status, /metrics)")
	redisPort := fs.Int("redis-port", 0, "port of the redis-server to start (0: a free one)")
	bin := fs.String("bin", "", "tracker binary to run (default: this one)")
	adminPort := fs.Int("admin-port", 6981, "with TRACKER_ADMIN_TOKEN set: the hub's admin panel port")
	nodeAdminPort := fs.Int("node-admin-port", config.DefaultNodeAdminPorts, "with TRACKER_ADMIN_TOKEN set: node 1's admin panel port; node i's is node-admin-port+i-1")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if *nodes < 1 || *nodes > 64 || *basePort < 1 || *basePort+*nodes > 65535 || *nodeAdminPort < 1 || *nodeAdminPort+*nodes > 65535 ||
		*hubPort < 1 || *hubPort > 65535 || *adminPort < 1 || *adminPort > 65535 {
		return usageError("cluster: 1 to 64 nodes, ports within 1..65535")
	}
	if *hubPort >= *basePort && *hubPort < *basePort+*nodes {
		return usageError(fmt.Sprintf("cluster: -hub-port %d is a node's port (-base-port %d, %d nodes)", *hubPort, *basePort, *nodes))
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return errors.New("cluster: redis-server is not installed (apt-get install redis-server)")
	}
	exe := *bin
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	if *redisPort == 0 {
		p, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		*redisPort = p
	}
	dir, err := os.MkdirTemp("", "tracklink-cluster")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// One link password and one UDP secret for this local network, shared
	// by all its processes.
	var pw, udpSecret [16]byte
	rand.Read(pw[:])
	rand.Read(udpSecret[:])
	common := []string{
		"TRACKER_REDIS_URL=redis://127.0.0.1:" + strconv.Itoa(*redisPort),
		"TRACKER_LINK_PASSWORD=" + hex.EncodeToString(pw[:]),
		"TRACKER_UDP_SECRET=" + hex.EncodeToString(udpSecret[:]),
	}
	var procs []*child
	defer func() { stopAll(procs) }()
	// A child that exits, while starting or later, stops the cluster at
	// once with the child's own last words (the tail of its stderr), not
	// a timeout of whoever waited for it.
	died := make(chan error, 2+*nodes)
	start := func(name string, env []string, argv ...string) error {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(append(os.Environ(), common...), env...)
		last := &tailWriter{max: 2048}
		out := io.MultiWriter(stderr, last) // one writer: one pipe for both
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("cluster: start %s: %w", name, err)
		}
		c := &child{cmd: cmd, exited: make(chan struct{})}
		go func() {
			err := cmd.Wait()
			close(c.exited)
			died <- fmt.Errorf("cluster: %s exited (%v): %s", name, err, last.lastLine())
		}()
		procs = append(procs, c)
		return nil
	}
	if err := start("redis", nil, "redis-server", "--port", strconv.Itoa(*redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning",
		"--zset-max-listpack-entries", "1024"); err != nil { // the swarm index compact: see "How peers are stored"
		return err
	}
	if err := waitTCP(ctx, died, "127.0.0.1:"+strconv.Itoa(*redisPort)); err != nil {
		return waitErr("redis", err)
	}
	hubAddr := "127.0.0.1:" + strconv.Itoa(*hubPort)
	panels := os.Getenv("TRACKER_ADMIN_TOKEN") != ""
	adminAddr := func(i int) string { // 0: the hub's
		if i == 0 {
			return "127.0.0.1:" + strconv.Itoa(*adminPort)
		}
		return "127.0.0.1:" + strconv.Itoa(*nodeAdminPort+i-1)
	}
	if err := start("hub", []string{"TRACKER_HTTP_ADDR=" + hubAddr, "TRACKER_UDP_ADDR=off", "TRACKER_HUB_NAME=hub", "TRACKER_ADMIN_ADDR=" + adminAddr(0)}, exe, "hub"); err != nil {
		return err
	}
	urls := []string{}
	for i := 1; i <= *nodes; i++ {
		addr := "127.0.0.1:" + strconv.Itoa(*basePort+i-1)
		env := []string{"TRACKER_NODE_ID=node" + strconv.Itoa(i), "TRACKER_HTTP_ADDR=" + addr, "TRACKER_UDP_ADDR=" + addr, "TRACKER_ADMIN_ADDR=" + adminAddr(i)}
		if err := start(fmt.Sprintf("node%d", i), env, exe); err != nil {
			return err
		}
		urls = append(urls, "http://"+addr)
	}
	for _, u := range append([]string{"http://" + hubAddr}, urls...) {
		if err := waitReady(ctx, died, u+"/readyz"); err != nil {
			return waitErr(u, err)
		}
	}
	fmt.Fprintf(stdout, "cluster ready: redis 127.0.0.1:%d, hub http://%s/ (status: /status)\n", *redisPort, hubAddr)
	for i, u := range urls {
		fmt.Fprintf(stdout, "node%d announce URLs: %s/announce udp://%s/announce\n", i+1, u, strings.TrimPrefix(u, "http://"))
	}
	if panels {
		for i := 0; i <= *nodes; i++ {
			name := "node" + strconv.Itoa(i)
			if i == 0 {
				name = "hub"
			}
			fmt.Fprintf(stdout, "%s admin panel: http://%s/ (sign in with TRACKER_ADMIN_TOKEN)\n", name, adminAddr(i))
		}
	}
	// Until stopped, or until any process dies.
	select {
	case <-ctx.Done():
		return nil
	case err := <-died:
		return err
	}
}

// waitErr is the error of a wait for what: a child's own error when one
// died, else what the wait says.
func waitErr(what string, err error) error {
	if d, ok := err.(errDied); ok {
		return d.err
	}
	return fmt.Errorf("cluster: %s: %w", what, err)
}

type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// stopAll sends SIGTERM to every process and waits for it; a process still
// running after 10 seconds gets SIGKILL.
func stopAll(procs []*child) {
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	expired := make(chan struct{})
	t := time.AfterFunc(10*time.Second, func() { close(expired) })
	defer t.Stop()
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-expired:
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// errDied is returned by the waits when a child exited meanwhile: the
// caller reports the child's own error instead.
type errDied struct{ err error }

func (e errDied) Error() string { return e.err.Error() }

// waitTCP waits until addr accepts connections, for at most 5 s, or until
// a child dies (its error is returned as is).
func waitTCP(ctx context.Context, died <-chan error, addr string) error {
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-died:
			return errDied{err}
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("not listening after 5s")
}

// waitReady waits until u answers 200, for at most 10 s, or until a child
// dies (its error is returned as is).
func waitReady(ctx context.Context, died <-chan error, u string) error {
	c := &http.Client{Timeout: time.Second}
	for i := 0; i < 200; i++ {
		if resp, err := c.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-died:
			return errDied{err}
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("not ready after 10s")
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = append(w.b[:0], w.b[len(w.b)-w.max:]...)
	}
	return len(p), nil
}

// lastLine is the last non-empty line written (a child's fatal error is
// its last words), or "no output".
func (w *tailWriter) lastLine() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(w.b)), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return "no output"
}

// runHealthcheck is `tracker healthcheck [URL]`: exit 0 when the node (or
// hub) answers /healthz. The container image's HEALTHCHECK runs it, so the
// image needs no shell or curl.
func runHealthcheck(ctx context.Context, args, environ []string) error {
	u := ""
	if len(args) > 0 {
		u = args[0]
	} else {
		addr := ":6969"
		if processOneIsHub() {
			addr = config.DefaultHubAddr
		}
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, "TRACKER_HTTP_ADDR="); ok && v != "" {
				addr = v
			}
		}
		port, err := listen.HealthPort(addr)
		if err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		u = "http://127.0.0.1:" + port + "/healthz"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("healthcheck: %s", resp.Status)
	}
	return nil
}

// processOneIsHub says whether process 1 (the container's process, where
// the image's health check runs) is `tracker hub`, whose port is the
// hub's, not a node's.
func processOneIsHub() bool {
	b, err := os.ReadFile("/proc/1/cmdline")
	return err == nil && isHubCmdline(b)
}

// isHubCmdline says whether a /proc/PID/cmdline is `tracker hub`.
func isHubCmdline(b []byte) bool {
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(args) > 1 && args[1] == "hub"
}
