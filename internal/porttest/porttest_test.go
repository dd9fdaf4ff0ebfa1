package porttest

import (
	"fmt"
	"net"
	"testing"
)

// TestRange: a run is below the ephemeral range and every port of it can
// be listened on, over TCP and UDP.
func TestRange(t *testing.T) {
	for _, n := range []int{1, 3, 8} {
		base := Range(t, n)
		if base < lowest || base+n > ephemeralStart() {
			t.Fatalf("run of %d at %d: outside [%d, %d)", n, base, lowest, ephemeralStart())
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

// TestRangeSkipsTakenPorts: a run never holds a port already listened on.
func TestRangeSkipsTakenPorts(t *testing.T) {
	base := Range(t, 4)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+2))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if free(base, 4) {
		t.Fatalf("run at %d counted as free with %d taken", base, base+2)
	}
}
