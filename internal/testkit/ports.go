// Runs of free loopback ports, for tests that start processes on
// consecutive ports (`tracker cluster -base-port`, a node
// listening for HTTP and UDP on one port).
//
// A run is picked at random below the kernel's range of ephemeral ports
// (net.ipv4.ip_local_port_range): inside it, every client connection of a
// busy test run (and each of its TIME_WAIT sockets, which block a listener
// on their port) takes a port, and on a loaded machine a run of free ones
// there can be hard to find.

package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// lowestRunPort is the lowestRunPort port a run may start at.
const lowestRunPort = 10000

// PortRange returns the first of n consecutive loopback ports that are free
// for TCP and UDP, or fails the test.
func PortRange(tb testing.TB, n int) int {
	tb.Helper()
	top := ephemeralStart() - n
	if top <= lowestRunPort {
		tb.Fatalf("no room for %d ports below the ephemeral range", n)
	}
	for range 200 {
		base := lowestRunPort + rand.IntN(top-lowestRunPort)
		if freeRun(base, n) {
			return base
		}
	}
	tb.Fatalf("no run of %d free loopback ports found", n)
	return 0
}

// ephemeralStart is the first port of the kernel's ephemeral range
// (32768, Linux's default, where it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	p, err := strconv.Atoi(f[0])
	if err != nil || p <= lowestRunPort {
		return 32768
	}
	return p
}

func freeRun(base, n int) bool {
	for p := base; p < base+n; p++ {
		a := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", a)
		if err != nil {
			return false
		}
		u, err := net.ListenPacket("udp", a)
		l.Close()
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}

// FreePort returns a loopback TCP port that is free now (the kernel's
// pick), or fails tb.
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := freePort()
	if err != nil {
		tb.Fatalf("testkit: a free loopback port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
