package listen

import (
	"net"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, last int
		isRange     bool
		err         string
	}{
		{in: ":6969"},
		{in: "127.0.0.1:0"},
		{in: ":6969-6971", first: 6969, last: 6971, isRange: true},
		{in: "[::1]:7000-7000", first: 7000, last: 7000, isRange: true},
		{in: ":6971-6969", err: "first-last"},
		{in: ":0-5", err: "first-last"},
		{in: ":6969-70000", err: "first-last"},
		{in: ":a-b", err: "first-last"},
		{in: ":1000-3000", err: "at most 1024"},
		{in: "6969", err: "missing port"},
	} {
		r, err := ParseRange(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.First != tc.first || r.Last != tc.last || r.IsRange != tc.isRange {
			t.Errorf("%q: %+v %v, want %d-%d range=%v", tc.in, r, err, tc.first, tc.last, tc.isRange)
		}
	}
}

func TestListeningPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l6.Close()
	ports, err := ListeningPorts(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{l, l6} {
		if p := ln.Addr().(*net.TCPAddr).Port; !slices.Contains(ports, p) {
			t.Errorf("listening on %d, listeningPorts says %v", p, ports)
		}
	}
	// A connected socket is not a listening one.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ports, _ = ListeningPorts(os.Getpid())
	if p := c.LocalAddr().(*net.TCPAddr).Port; slices.Contains(ports, p) {
		t.Errorf("client port %d reported as listening", p)
	}
}
