//go:build linux

package reuseport

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestAffinity: two replicas share a TCP port; connections from 40
// addresses, 6 each from fresh source ports (which the kernel spreads over
// both listeners), are each served by their address's owner, and both
// replicas serve some. A replica that leaves the set hands everything to
// the other.
func TestAffinity(t *testing.T) {
	space := fmt.Sprintf("tracklink-test/%d", time.Now().UnixNano())
	var affs []*Affinity
	addr := "127.0.0.1:0"
	names := []string{"a", "b"}
	for i, name := range names {
		ln, err := Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			addr = ln.Addr().String()
		}
		a, err := NewAffinity(ln, space, name)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		a.SetReplicas(names)
		affs = append(affs, a)
	}
	type served struct {
		src  netip.Addr
		by   string
		text string
	}
	got := make(chan served, 1024)
	for i, a := range affs {
		go func() {
			for {
				c, err := a.Accept()
				if err != nil {
					return
				}
				buf := make([]byte, 8)
				n, _ := c.Read(buf)
				got <- served{c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(), names[i], string(buf[:n])}
				c.Write([]byte("ok"))
				c.Close()
			}
		}()
	}
	dial := func(src netip.Addr) {
		t.Helper()
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 2 * time.Second}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hi"))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 2)
		if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
			t.Fatalf("a connection from %s was not served: %v", src, err)
		}
	}
	srcs := sources(40)
	var wg sync.WaitGroup
	for _, src := range srcs {
		wg.Go(func() {
			for range 6 {
				dial(src)
			}
		})
	}
	wg.Wait()
	by := map[netip.Addr]map[string]bool{}
	count := map[string]int{}
	for range len(srcs) * 6 {
		s := <-got
		if s.text != "hi" {
			t.Errorf("a handed-over connection lost what its client sent: %q", s.text)
		}
		if by[s.src] == nil {
			by[s.src] = map[string]bool{}
		}
		by[s.src][s.by] = true
		count[s.by]++
		if want := affs[0].Owner(s.src); s.by != want {
			t.Errorf("%s served by %s, its owner is %s", s.src, s.by, want)
		}
	}
	for src, who := range by {
		if len(who) != 1 {
			t.Errorf("%s served by %d replicas", src, len(who))
		}
	}
	if count["a"] == 0 || count["b"] == 0 {
		t.Errorf("served: %v", count)
	}
	h0, _, _ := affs[0].Counts()
	h1, _, _ := affs[1].Counts()
	if h0+h1 == 0 {
		t.Error("no connection was handed over: the kernel gave every one to its owner by chance, or the test does not test")
	}
	// b leaves: both now serve every address at a.
	for _, a := range affs {
		a.SetReplicas([]string{"a"})
	}
	for _, src := range srcs[:10] {
		for range 4 {
			dial(src)
		}
	}
	for range 40 {
		if s := <-got; s.by != "a" {
			t.Fatalf("after b left, %s was served by %s", s.src, s.by)
		}
	}
}

// TestOwnerSpreadsAndMovesLittle: rendezvous hashing spreads addresses
// evenly over replicas, and a fourth replica takes about a quarter of
// them from the others, moving none between the three.
func TestOwnerSpreadsAndMovesLittle(t *testing.T) {
	three, four := []string{"p1", "p2", "p3"}, []string{"p1", "p2", "p3", "p4"}
	per := map[string]int{}
	moved, toNew := 0, 0
	const n = 30000
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		o3, o4 := owner(three, a), owner(four, a)
		per[o3]++
		if o3 != o4 {
			moved++
			if o4 == "p4" {
				toNew++
			}
		}
	}
	for _, p := range three {
		if per[p] < n/3*9/10 || per[p] > n/3*11/10 {
			t.Errorf("%s owns %d of %d addresses", p, per[p], n)
		}
	}
	if moved != toNew || moved < n/4*9/10 || moved > n/4*11/10 {
		t.Errorf("a fourth replica moved %d addresses (%d to it), want about %d, all to it", moved, toNew, n/4)
	}
	if owner(nil, netip.MustParseAddr("10.0.0.1")) != "" {
		t.Error("an owner among no replicas")
	}
}

// TestCloseHandsOver: a replica that closes hands to the other what it
// got and did not serve — connections its server never accepted, whose
// clients already sent their request — and each is served there; none is
// reset.
func TestCloseHandsOver(t *testing.T) {
	space := fmt.Sprintf("tracklink-test/%d", time.Now().UnixNano())
	lnA, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lnA.Addr().String()
	lnB, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAffinity(lnA, space, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewAffinity(lnB, space, "b")
	if err != nil {
		t.Fatal(err)
	}
	a.SetReplicas([]string{"a", "b"})
	b.SetReplicas([]string{"a", "b"})
	go func() {
		for {
			c, err := a.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 2)
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(buf); err == nil {
				c.Write([]byte("ok"))
			}
			c.Close()
		}
	}()
	// b's server accepts nothing: every connection b owns waits in b.
	srcs := sources(40)
	var conns []net.Conn
	for _, src := range srcs {
		for range 3 {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 2 * time.Second}
			c, err := d.Dial("tcp4", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("hi"))
			conns = append(conns, c)
		}
	}
	waiting := 0
	for _, src := range srcs {
		if b.Owner(src) == "b" {
			waiting += 3
		}
	}
	if waiting == 0 {
		t.Fatal("b owns none of 40 addresses: the test does not test")
	}
	// Every connection of an address b owns reaches b (the kernel gave
	// some to a, which hands them over) and waits there.
	for deadline := time.Now().Add(3 * time.Second); len(b.conns) < waiting; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections reached b", len(b.conns), waiting)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// b leaves, then closes.
	before, _, _ := b.Counts()
	b.SetReplicas([]string{"a"})
	a.SetReplicas([]string{"a"})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	after, _, _ := b.Counts()
	if after-before < int64(waiting) {
		t.Errorf("b handed %d connections on close, %d waited in it", after-before, waiting)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 2)
		if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
			t.Fatalf("connection %d (from %s) was not served after b closed: %v", i, c.LocalAddr(), err)
		}
	}
}
