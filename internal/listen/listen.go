// Package listen opens a tracker's sockets: one address, a range of ports
// (replicas on one host each take the first free one) or, with reuseport,
// one address shared by every replica of a node.
package listen

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/reuseport"
	"github.com/tracklink/tracklink/internal/udpapi"
)

// Port ranges. An address (TRACKER_HTTP_ADDR, TRACKER_ADMIN_ADDR) may name a range of ports, "host:first-last":
// the node listens on the first port of the range that is free, for TCP and,
// when TRACKER_UDP_ADDR names the same range, for UDP on the same port. This
// is how replicas that share one network namespace (docker compose with
// host networking, several processes on one machine) each get a port of
// their own without being told which; "{port}" in TRACKER_NODE_ID is then
// replaced by the port taken, so each replica has a node id that is stable
// across restarts.

// maxRangePorts bounds how many ports one range may name.
const maxRangePorts = 1024

// Range is a parsed "host:first-last" (or "host:port": not IsRange).
type Range struct {
	Host        string
	First, Last int
	IsRange     bool
}

// ParseRange parses "host:port" or "host:first-last".
func ParseRange(addr string) (Range, error) {
	host, ports, err := net.SplitHostPort(addr)
	if err != nil {
		return Range{}, err
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		return Range{Host: host}, nil
	}
	first, err1 := strconv.Atoi(lo)
	last, err2 := strconv.Atoi(hi)
	switch {
	case err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last:
		return Range{}, fmt.Errorf("port range %q: want first-last, from 1 to 65535", ports)
	case last-first+1 > maxRangePorts:
		return Range{}, fmt.Errorf("port range %q: at most %d ports", ports, maxRangePorts)
	}
	return Range{Host: host, First: first, Last: last, IsRange: true}, nil
}

// Front opens a node's HTTP listener on httpAddr and its UDP sockets on
// udpAddr (none when udpAddr is ""). With a port range it takes the first
// port free for both; the error says so when every port is taken. With
// shared, the address is shared with the node's other replicas
// (SO_REUSEPORT).
func Front(httpAddr, udpAddr string, shared bool) (net.Listener, []*net.UDPConn, error) {
	h, err := ParseRange(httpAddr)
	if err != nil {
		return nil, nil, err
	}
	if shared {
		// One replica of the node: the address is shared.
		ln, err := reuseport.Listen(httpAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen on %s (shared with the node's replicas): %w", httpAddr, err)
		}
		if udpAddr == "" {
			return ln, nil, nil
		}
		udp, err := udpapi.ListenWith(reuseport.ListenConfig(), udpAddr)
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
		return ln, udp, nil
	}
	if !h.IsRange {
		ln, err := httpapi.Listen(httpAddr)
		if err != nil || udpAddr == "" {
			return ln, nil, err
		}
		udp, err := udpapi.Listen(udpAddr)
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
		return ln, udp, nil
	}
	u, _ := ParseRange(udpAddr)
	var last error
	for p := h.First; p <= h.Last; p++ {
		port := strconv.Itoa(p)
		ln, err := httpapi.Listen(net.JoinHostPort(h.Host, port))
		if err != nil {
			last = err
			continue
		}
		if udpAddr == "" {
			return ln, nil, nil
		}
		udpAddr := udpAddr
		if u.IsRange {
			udpAddr = net.JoinHostPort(u.Host, port)
		}
		udp, err := udpapi.Listen(udpAddr)
		if err == nil {
			return ln, udp, nil
		}
		ln.Close()
		if !u.IsRange {
			return nil, nil, err // a fixed UDP port: no other HTTP port helps
		}
		last = err
	}
	return nil, nil, fmt.Errorf("TRACKER_HTTP_ADDR=%q: no port of the range is free (one per replica: widen the range to run more); last: %v", httpAddr, last)
}

// Admin opens the admin listener on addr, or on the first free port of a
// range (replicas on one host each take one, as with TRACKER_HTTP_ADDR).
func Admin(addr string) (net.Listener, error) {
	r, err := ParseRange(addr)
	if err != nil {
		return nil, fmt.Errorf("TRACKER_ADMIN_ADDR=%q: %v", addr, err)
	}
	if !r.IsRange {
		ln, err := httpapi.Listen(addr)
		if err != nil {
			return nil, fmt.Errorf("TRACKER_ADMIN_ADDR: %w (another node or hub on this host? give each its own port, a range, or off)", err)
		}
		return ln, nil
	}
	var last error
	for p := r.First; p <= r.Last; p++ {
		ln, err := httpapi.Listen(net.JoinHostPort(r.Host, strconv.Itoa(p)))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, fmt.Errorf("TRACKER_ADMIN_ADDR=%q: no port of the range is free (one per replica); last: %v", addr, last)
}

// ExpandNodeID puts the port the node listens on into "{port}" of
// TRACKER_NODE_ID.
func ExpandNodeID(id string, ln net.Listener) string {
	return strings.ReplaceAll(id, "{port}", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

// ListeningPorts returns the TCP ports that process pid listens on, read
// from /proc: the inodes of its socket descriptors matched against the
// listening sockets of its network namespace. The health check uses it to
// find which port of a range its container's node took.
func ListeningPorts(pid int) ([]int, error) {
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

// HealthPort is the port `tracker healthcheck` asks: the one of
// TRACKER_HTTP_ADDR, or, for a range, the one of the range that process 1
// (the node, in its container) listens on.
func HealthPort(addr string) (string, error) {
	r, err := ParseRange(addr)
	if err != nil {
		return "", fmt.Errorf("TRACKER_HTTP_ADDR %q: %w", addr, err)
	}
	if !r.IsRange {
		_, port, _ := net.SplitHostPort(addr)
		return port, nil
	}
	ports, err := ListeningPorts(1)
	if err != nil {
		return "", fmt.Errorf("the node's port in %q: %w", addr, err)
	}
	for _, p := range ports {
		if p >= r.First && p <= r.Last {
			return strconv.Itoa(p), nil
		}
	}
	return "", fmt.Errorf("process 1 listens on no port of %q (yet)", addr)
}
