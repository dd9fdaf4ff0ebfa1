// Test hosts: a network namespace joined to this host by a veth pair,
// with an IPv4 and an IPv6 address on each side, for tests where an
// address matters (a client that is neither loopback nor
// Docker's, a tracker member on a machine of its own). It needs root and
// iproute2; everything it makes is removed at the end of the test.

package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// NetnsHost is a network namespace. Outer4 and Outer6 are this host's
// addresses on the veth pair (where services of this host are reached
// from the namespace), Inner4 and Inner6 the namespace's.
type NetnsHost struct {
	NS             string
	Outer4, Outer6 string
	Inner4, Inner6 string
}

var netnsSeq atomic.Int32

// NeedNetns fails t, never skips, when this process cannot make a network
// namespace (it tries one, rather than asking who it runs as) or iproute2
// is missing: the tests that need namespaces are in a tier that is on
// (Netns, Compose), so a missing right or tool is a failure. A test calls
// it first, before it builds what it would need the hosts for.
func NeedNetns(t testing.TB) {
	t.Helper()
	if err := canMakeNetns(); err != nil {
		t.Fatalf("a network namespace cannot be made here (it needs root, or CAP_SYS_ADMIN): %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip is not installed (apt-get install iproute2; .ci/run installs it): %v", err)
	}
}

// NewNetns makes a host whose name starts with prefix (a few letters). Its
// traffic to other networks goes through this host (a default route), so
// that two hosts reach each other's services on this host's addresses.
// It fails t, never skips, where NeedNetns does.
func NewNetns(t testing.TB, prefix string) *NetnsHost {
	t.Helper()
	NeedNetns(t)
	// Unique among the test binaries running at once: the pid, and a
	// counter within this one.
	n := os.Getpid()%120*2 + int(netnsSeq.Add(1))
	h := &NetnsHost{
		NS:     fmt.Sprintf("%s%d", prefix, n),
		Outer4: fmt.Sprintf("10.213.%d.1", n), Inner4: fmt.Sprintf("10.213.%d.2", n),
		Outer6: fmt.Sprintf("fd00:213:%x::1", n), Inner6: fmt.Sprintf("fd00:213:%x::2", n),
	}
	hostIf, nsIf := fmt.Sprintf("tlh%d", n), fmt.Sprintf("tlc%d", n)
	exec.Command("ip", "netns", "del", h.NS).Run() // left by a killed run
	exec.Command("ip", "link", "del", hostIf).Run()
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", h.NS).Run()
		exec.Command("ip", "link", "del", hostIf).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", h.NS},
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", h.NS},
		{"addr", "add", h.Outer4 + "/24", "dev", hostIf},
		{"addr", "add", h.Outer6 + "/64", "dev", hostIf, "nodad"},
		{"link", "set", hostIf, "up"},
		{"-n", h.NS, "addr", "add", h.Inner4 + "/24", "dev", nsIf},
		{"-n", h.NS, "addr", "add", h.Inner6 + "/64", "dev", nsIf, "nodad"},
		{"-n", h.NS, "link", "set", nsIf, "up"},
		{"-n", h.NS, "link", "set", "lo", "up"},
		{"-n", h.NS, "route", "add", "default", "via", h.Outer4},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	return h
}

// AddAddrs gives the namespace n more IPv4 addresses on its side of the
// veth pair (10.213.<host>.10 and up), for tests that need a client to
// come from several addresses, and returns them.
func (h *NetnsHost) AddAddrs(t testing.TB, n int) []string {
	t.Helper()
	if n < 1 || n > 200 {
		t.Fatalf("AddAddrs(%d): from 1 to 200", n)
	}
	var third int
	fmt.Sscanf(h.Inner4, "10.213.%d.", &third)
	nsIf := ""
	out, err := exec.Command("ip", "-n", h.NS, "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip -n %s link show: %v", h.NS, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "tlc") {
			nsIf = strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		}
	}
	if nsIf == "" {
		t.Fatalf("no veth in namespace %s", h.NS)
	}
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.213.%d.%d", third, 10+i)
		if out, err := exec.Command("ip", "-n", h.NS, "addr", "add", addrs[i]+"/24", "dev", nsIf).CombinedOutput(); err != nil {
			t.Fatalf("ip addr add %s: %v\n%s", addrs[i], err, out)
		}
	}
	return addrs
}
