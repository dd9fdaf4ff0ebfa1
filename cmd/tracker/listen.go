package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/panel"
	"github.com/tracklink/tracklink/internal/reuseport"
	"github.com/tracklink/tracklink/internal/udpapi"
)

// Port ranges. TRACKER_HTTP_ADDR may name a range of ports, "host:first-last":
// the node listens on the first port of the range that is free, for TCP and,
// when TRACKER_UDP_ADDR names the same range, for UDP on the same port. This
// is how replicas that share one network namespace (docker compose with
// host networking, several processes on one machine) each get a port of
// their own without being told which; "{port}" in TRACKER_NODE_ID is then
// replaced by the port taken, so each replica has a node id that is stable
// across restarts.

// maxRangePorts bounds how many ports one range may name.
const maxRangePorts = 1024

// portRange is a parsed "host:first-last" (or "host:port", first == last).
type portRange struct {
	host        string
	first, last int
	isRange     bool
}

func parsePortRange(addr string) (portRange, error) {
	host, ports, err := net.SplitHostPort(addr)
	if err != nil {
		return portRange{}, err
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		return portRange{host: host}, nil
	}
	first, err1 := strconv.Atoi(lo)
	last, err2 := strconv.Atoi(hi)
	switch {
	case err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last:
		return portRange{}, fmt.Errorf("port range %q: want first-last, from 1 to 65535", ports)
	case last-first+1 > maxRangePorts:
		return portRange{}, fmt.Errorf("port range %q: at most %d ports", ports, maxRangePorts)
	}
	return portRange{host: host, first: first, last: last, isRange: true}, nil
}

// validateListen checks TRACKER_HTTP_ADDR and TRACKER_UDP_ADDR: a range
// in TRACKER_UDP_ADDR must be the one in TRACKER_HTTP_ADDR (both take the
// same port). Only a node may listen on a range.
func (c Config) validateListen(node bool) error {
	h, err := parsePortRange(c.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("TRACKER_HTTP_ADDR=%q: %v", c.HTTP.Addr, err)
	}
	if h.isRange && !node {
		return fmt.Errorf("TRACKER_HTTP_ADDR=%q: a port range is for tracker nodes; the hub listens on one port", c.HTTP.Addr)
	}
	if !c.UDP.Enabled() {
		return nil
	}
	u, err := parsePortRange(c.UDP.Addr)
	if err != nil {
		return fmt.Errorf("TRACKER_UDP_ADDR=%q: %v", c.UDP.Addr, err)
	}
	if u.isRange && (!h.isRange || u.first != h.first || u.last != h.last) {
		return fmt.Errorf("TRACKER_UDP_ADDR=%q: a port range must be the one of TRACKER_HTTP_ADDR (%q): UDP takes the port HTTP takes", c.UDP.Addr, c.HTTP.Addr)
	}
	if strings.Contains(c.NodeID, "{port}") && !h.isRange {
		return errors.New("TRACKER_NODE_ID has {port}, which needs a port range in TRACKER_HTTP_ADDR")
	}
	return nil
}

// listenFront opens the node's HTTP listener and UDP sockets (nil when UDP
// is off). With a port range it takes the first port free for both; the
// error says so when every port is taken.
func listenFront(cfg Config) (net.Listener, []*net.UDPConn, error) {
	h, err := parsePortRange(cfg.HTTP.Addr)
	if err != nil {
		return nil, nil, err
	}
	if cfg.ReusePort {
		// One replica of the node: the address is shared.
		ln, err := reuseport.Listen(cfg.HTTP.Addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen on %s (shared with the node's replicas): %w", cfg.HTTP.Addr, err)
		}
		if !cfg.UDP.Enabled() {
			return ln, nil, nil
		}
		udp, err := udpapi.ListenWith(reuseport.ListenConfig(), cfg.UDP.Addr)
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
		return ln, udp, nil
	}
	if !h.isRange {
		ln, err := httpapi.Listen(cfg.HTTP.Addr)
		if err != nil || !cfg.UDP.Enabled() {
			return ln, nil, err
		}
		udp, err := udpapi.Listen(cfg.UDP.Addr)
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
		return ln, udp, nil
	}
	u, _ := parsePortRange(cfg.UDP.Addr)
	var last error
	for p := h.first; p <= h.last; p++ {
		port := strconv.Itoa(p)
		ln, err := httpapi.Listen(net.JoinHostPort(h.host, port))
		if err != nil {
			last = err
			continue
		}
		if !cfg.UDP.Enabled() {
			return ln, nil, nil
		}
		udpAddr := cfg.UDP.Addr
		if u.isRange {
			udpAddr = net.JoinHostPort(u.host, port)
		}
		udp, err := udpapi.Listen(udpAddr)
		if err == nil {
			return ln, udp, nil
		}
		ln.Close()
		if !u.isRange {
			return nil, nil, err // a fixed UDP port: no other HTTP port helps
		}
		last = err
	}
	return nil, nil, fmt.Errorf("TRACKER_HTTP_ADDR=%q: no port of the range is free (one per replica: widen the range to run more); last: %v", cfg.HTTP.Addr, last)
}

// adminAddr is where the admin listener listens: TRACKER_ADMIN_ADDR, or
// the role's default; "" when there is none (no TRACKER_ADMIN_TOKEN: no
// panel and no admin API, or TRACKER_ADMIN_ADDR=off).
func (c Config) adminAddr(hub bool) string {
	switch {
	case c.AdminToken == "" || c.Admin.Addr == "off":
		return ""
	case c.Admin.Addr != "":
		return c.Admin.Addr
	case hub:
		return panel.DefaultHubAddr
	}
	return panel.DefaultNodeAddr
}

// listenAdmin opens the admin listener on addr, or on the first free port
// of a range (replicas on one host each take one, as with
// TRACKER_HTTP_ADDR).
func listenAdmin(addr string) (net.Listener, error) {
	r, err := parsePortRange(addr)
	if err != nil {
		return nil, fmt.Errorf("TRACKER_ADMIN_ADDR=%q: %v", addr, err)
	}
	if !r.isRange {
		ln, err := httpapi.Listen(addr)
		if err != nil {
			return nil, fmt.Errorf("TRACKER_ADMIN_ADDR: %w (another node or hub on this host? give each its own port, a range, or off)", err)
		}
		return ln, nil
	}
	var last error
	for p := r.first; p <= r.last; p++ {
		ln, err := httpapi.Listen(net.JoinHostPort(r.host, strconv.Itoa(p)))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, fmt.Errorf("TRACKER_ADMIN_ADDR=%q: no port of the range is free (one per replica); last: %v", addr, last)
}

// expandNodeID puts the port the node listens on into "{port}" of
// TRACKER_NODE_ID.
func expandNodeID(id string, ln net.Listener) string {
	return strings.ReplaceAll(id, "{port}", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

// listeningPorts returns the TCP ports that process pid listens on, read
// from /proc: the inodes of its socket descriptors matched against the
// listening sockets of its network namespace. The health check uses it to
// find which port of a range its container's node took.
func listeningPorts(pid int) ([]int, error) {
	dir := fmt.Sprintf("/proc/%d", pid)
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"net/tcp", "net/tcp6"} {
		f, err := os.Open(filepath.Join(dir, table))
		if err != nil {
			continue // no IPv6 in this kernel
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil {
				ports = append(ports, int(p))
			}
		}
		f.Close()
	}
	return ports, nil
}

// healthPort is the port `tracker healthcheck` asks: the one of
// TRACKER_HTTP_ADDR, or, for a range, the one of the range that process 1
// (the node, in its container) listens on.
func healthPort(addr string) (string, error) {
	r, err := parsePortRange(addr)
	if err != nil {
		return "", fmt.Errorf("TRACKER_HTTP_ADDR %q: %w", addr, err)
	}
	if !r.isRange {
		_, port, _ := net.SplitHostPort(addr)
		return port, nil
	}
	ports, err := listeningPorts(1)
	if err != nil {
		return "", fmt.Errorf("the node's port in %q: %w", addr, err)
	}
	for _, p := range ports {
		if p >= r.first && p <= r.last {
			return strconv.Itoa(p), nil
		}
	}
	return "", fmt.Errorf("process 1 listens on no port of %q (yet)", addr)
}
