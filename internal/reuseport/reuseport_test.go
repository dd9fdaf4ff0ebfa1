package reuseport

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// sources are loopback addresses a test may send from (all of 127/8 is
// this host's).
func sources(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 0, byte(1 + i/200), byte(2 + i%200)})
	}
	return out
}

// TestSteerUDP: three sockets share a UDP port; datagrams from 40 source
// addresses, each from 8 source ports, land by address: every address on
// one socket, and every socket gets some. Without steering the kernel
// hashes each source port apart (the test fails).
func TestSteerUDP(t *testing.T) {
	const n = 3
	var conns []*net.UDPConn
	addr := "127.0.0.1:0"
	for i := range n {
		pc, err := ListenConfig().ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := pc.(*net.UDPConn)
		defer c.Close()
		conns = append(conns, c)
		if i == 0 {
			addr = c.LocalAddr().String()
		}
	}
	if err := Steer(conns[0], n); err != nil {
		t.Fatal(err)
	}
	type hit struct {
		src  netip.Addr
		sock int
	}
	hits := make(chan hit, 4096)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			buf := make([]byte, 64)
			for {
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				_, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				hits <- hit{from.Addr().Unmap(), i}
			}
		})
	}
	srcs := sources(40)
	sent := 0
	for _, src := range srcs {
		for range 8 {
			s, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			if err != nil {
				t.Fatal(err)
			}
			s.Write([]byte("x"))
			s.Close()
			sent++
		}
	}
	wg.Wait()
	close(hits)
	by := map[netip.Addr]map[int]bool{}
	per := make([]int, n)
	got := 0
	for h := range hits {
		if by[h.src] == nil {
			by[h.src] = map[int]bool{}
		}
		by[h.src][h.sock] = true
		per[h.sock]++
		got++
	}
	if got != sent {
		t.Fatalf("%d of %d datagrams read", got, sent)
	}
	for src, socks := range by {
		if len(socks) != 1 {
			t.Errorf("datagrams from %s landed on %d sockets, want 1", src, len(socks))
		}
	}
	for i, c := range per {
		if c == 0 {
			t.Errorf("socket %d got nothing: %v", i, per)
		}
	}
}

func TestProgramBounds(t *testing.T) {
	for _, n := range []int{0, -1, MaxReplicas + 1} {
		if _, err := program(n); err == nil {
			t.Errorf("program(%d) accepted", n)
		}
	}
	for _, n := range []int{1, 2, MaxReplicas} {
		if p, err := program(n); err != nil || len(p) == 0 {
			t.Errorf("program(%d): %v", n, err)
		}
	}
}
