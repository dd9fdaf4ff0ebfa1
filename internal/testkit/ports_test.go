package testkit

import (
	"fmt"
	"net"
	"testing"
)

// TestPortRange: a run is below the ephemeral range and every port of it can
// be listened on, over TCP and UDP.
func TestPortRange(t *testing.T) {
	for _, n := range []int{1, 3, 8} {
		base := PortRange(t, n)
		if base < lowestRunPort || base+n > ephemeralStart() {
			t.Fatalf("run of %d at %d: outside [%d, %d)", n, base, lowestRunPort, ephemeralStart())
		}
		for p := base; p < base+n; p++ {
			a := fmt.Sprintf("127.0.0.1:%d", p)
			l, err := net.Listen("tcp", a)
			if err != nil {
				t.Fatal(err)
			}
			u, err := net.ListenPacket("udp", a)
			l.Close()
			if err != nil {
				t.Fatal(err)
			}
			u.Close()
		}
	}
}

// TestPortRangeSkipsTakenPorts: a run never holds a port already listened on.
func TestPortRangeSkipsTakenPorts(t *testing.T) {
	base := PortRange(t, 4)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+2))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if freeRun(base, 4) {
		t.Fatalf("run at %d counted as free with %d taken", base, base+2)
	}
}
