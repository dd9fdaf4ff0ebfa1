package clients

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tracklink/tracklink/internal/testkit"
)

// TestWSSideBySide measures tracklink's WebSocket tracker against
// bittorrent-tracker's own server (npm), each pinned to CPU 0 (tracklink
// with its redis-server, GOMAXPROCS=1), loaded from the other CPU:
// announces with 5 offers a second, memory per idle connection at 10,000
// connections, and offer-to-answer latency across two tracklink processes.
// It runs when TRACKLINK_WS_BENCH=1 (and needs Node, npm and taskset) and
// logs a table for docs/architecture.md.
//
//	TRACKLINK_WS_BENCH=1 go test -count=1 -run TestWSSideBySide -v ./cmd/tracker/clients/
func TestWSSideBySide(t *testing.T) {
	if os.Getenv("TRACKLINK_WS_BENCH") != "1" {
		t.Skip("set TRACKLINK_WS_BENCH=1 to measure against bittorrent-tracker's server")
	}
	t.Setenv(testkit.WebTorrent.Var, "1")
	node := npmHarness(t)
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		t.Fatal("taskset is needed (util-linux)")
	}
	// The load (this process) runs on CPU 1, the servers on CPU 0.
	if out, err := exec.Command(taskset, "-a", "-p", "-c", "1", strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
		t.Fatalf("taskset: %v\n%s", err, out)
	}
	const idle = 10_000
	ports := testkit.PortRange(t, 4)

	// bittorrent-tracker's server.
	bt := exec.Command(taskset, "-c", "0", node, "server.mjs", strconv.Itoa(ports))
	bt.Dir = webtorrentDir
	btOut, _ := bt.StdoutPipe()
	startProcess(t, bt)
	waitLine(t, btOut, "listening")
	btURL := fmt.Sprintf("ws://127.0.0.1:%d/announce", ports)

	// tracklink: redis-server and two processes of one node, the first
	// pinned with Redis on CPU 0.
	redisPort := strconv.Itoa(ports + 3)
	rcmd := exec.Command(taskset, "-c", "0", "redis-server", "--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	startProcess(t, rcmd)
	redisURL := "redis://127.0.0.1:" + redisPort
	testkit.Eventually(t, 10*time.Second, "redis ready", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+redisPort)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	var tlURL [2]string
	var tlPID int
	for i := range 2 {
		addr := "127.0.0.1:" + strconv.Itoa(ports+1+i)
		args := []string{bin}
		if i == 0 {
			args = []string{taskset, "-c", "0", bin}
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TRACKER_REDIS_URL="+redisURL, "TRACKER_NODE_ID=bench", "TRACKER_HTTP_ADDR="+addr,
			"TRACKER_UDP_ADDR=off", "TRACKER_LOG_LEVEL=warn", "GOMAXPROCS=1", "TRACKER_HTTP_MAX_CONNS=30000", "TRACKER_WS_MAX_CONNS=30000")
		startProcess(t, cmd)
		tlURL[i] = "ws://" + addr + "/announce"
		if i == 0 {
			tlPID = cmd.Process.Pid
		}
		testkit.Eventually(t, 10*time.Second, "node ready", func() bool {
			c, _, err := websocket.DefaultDialer.Dial(tlURL[i], nil)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}

	// Three rounds, the two servers in turn; medians.
	var btRates, tlRates, btCPU, tlCPU []float64
	for range 3 {
		r, c := announceRate(t, btURL, 3*time.Second)
		btRates, btCPU = append(btRates, r), append(btCPU, c)
		r, c = announceRate(t, tlURL[0], 3*time.Second)
		tlRates, tlCPU = append(tlRates, r), append(tlCPU, c)
	}
	// The same with gorilla's client, once each.
	gbt, gbtCPU := announceRateGorilla(t, btURL, 3*time.Second)
	gtl, gtlCPU := announceRateGorilla(t, tlURL[0], 3*time.Second)
	t.Logf("gorilla's client, one round each: bittorrent-tracker %.0f (client CPU %.0f %%), tracklink %.0f (%.0f %%)", gbt, 100*gbtCPU, gtl, 100*gtlCPU)
	btRate, tlRate := median(btRates), median(tlRates)
	t.Logf("announce rates, three rounds: bittorrent-tracker %.0f, tracklink %.0f; load client's CPU %.0f / %.0f %% of its core (median)",
		btRates, tlRates, 100*median(btCPU), 100*median(tlCPU))
	btMem := idleMemory(t, btURL, bt.Process.Pid, idle)
	tlMem := idleMemory(t, tlURL[0], tlPID, idle)
	p50, p99 := offerToAnswer(t, tlURL[0], tlURL[1], 2000)
	t.Logf("| | bittorrent-tracker %s (Node %s) | tracklink | target |", npmVersion(t, node), nodeVersion(t, node))
	t.Logf("| announces with 5 offers a second, one core | %.0f | %.0f (%.1f×) | ≥ 5× |", btRate, tlRate, tlRate/btRate)
	t.Logf("| memory per idle connection at %d | %.1f KB | %.1f KB | ≤ 4 KB |", idle, btMem/1024, tlMem/1024)
	t.Logf("| offer → answer across two processes | | p50 %.2f ms, p99 %.2f ms | p99 ≤ 20 ms |", p50, p99)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func waitLine(t *testing.T, r interface{ Read([]byte) (int, error) }, want string) {
	t.Helper()
	done := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				done <- true
				return
			}
		}
		done <- false
	}()
	select {
	case ok := <-done:
		if !ok {
			t.Fatalf("never printed %q", want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%q not printed within 10s", want)
	}
}

// l1s is b as the clients send binary: a string of code points 0-255.
func l1s(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

func benchID(kind byte, n int) []byte {
	b := make([]byte, 20)
	copy(b, fmt.Sprintf("%c%019d", kind, n))
	return b
}

func announce(ih, peer []byte, offers int, seq int) []byte {
	m := map[string]any{"action": "announce", "info_hash": l1s(ih), "peer_id": l1s(peer), "left": 1000,
		"uploaded": 0, "downloaded": 0, "numwant": offers}
	if offers > 0 {
		var os []any
		for i := range offers {
			os = append(os, map[string]any{"offer_id": l1s(benchID('o', seq*10+i)),
				"offer": map[string]any{"type": "offer", "sdp": strings.Repeat("a=candidate:0 1 UDP 2122252543 192.0.2.1 54321 typ host\r\n", 5)}})
		}
		m["offers"] = os
	}
	b, _ := json.Marshal(m)
	return b
}

// announceRate runs 64 connections, 8 swarms of 8 peers, each announcing
// with 5 offers and waiting for its reply before the next, for d; offers
// that arrive meanwhile are read and dropped. It returns announces
// answered a second. The client is made light, so that it measures the
// servers and not itself (near its core's limit it would flatter the
// slower server): each connection's announce is framed and masked once
// and written whole in one system call (a fixed masking key per
// connection; servers unmask any key alike), one goroutine per connection
// reads the server's frames into one buffer and tells a reply from an
// offer by its first bytes, without decoding either, and the client runs
// one processor (it is pinned to one CPU) with a lazier GC. Both servers
// see the same bytes as from any client: one masked text frame an
// announce. It returns too the CPU the client itself used meanwhile, as
// a fraction of its one core: near 1, the client and not the server sets
// the rate.
func announceRate(t *testing.T, url string, d time.Duration) (rate, clientCPU float64) {
	return drive(t, url, d, func(c *websocket.Conn, i int) func() bool {
		nc := c.NetConn()
		frame := maskedFrame(announce(benchID('h', i%8), benchID('p', i), 5, i), [4]byte{byte(i), 0x5a, 0xa5, byte(i >> 8)})
		fr := frameReader{nc: nc, buf: make([]byte, 64<<10)}
		return func() bool {
			if _, err := nc.Write(frame); err != nil {
				return false
			}
			for {
				head, err := fr.next()
				if err != nil {
					return false
				}
				if isReply(head) {
					return true
				}
			}
		}
	})
}

// announceRateGorilla is announceRate through gorilla/websocket's reader
// and writer (a message reader and a masking a message): about a
// quarter more of the client's CPU an announce. TestWSSideBySide runs it
// once a server beside announceRate's rounds, to show that the lighter
// client changes neither server's rate where the client is not the
// limit.
func announceRateGorilla(t *testing.T, url string, d time.Duration) (rate, clientCPU float64) {
	return drive(t, url, d, func(c *websocket.Conn, i int) func() bool {
		msg := announce(benchID('h', i%8), benchID('p', i), 5, i)
		head := make([]byte, 160) // holds a reply (its interval) or an offer's start
		return func() bool {
			if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
				return false
			}
			for {
				_, r, err := c.NextReader()
				if err != nil {
					return false
				}
				n, _ := io.ReadFull(r, head)
				if n == len(head) {
					io.Copy(io.Discard, r)
				}
				if isReply(head[:n]) {
					return true
				}
			}
		}
	})
}

// drive opens the 64 connections of announceRate and, on each, calls the
// round that conn makes for it until d has passed or a round fails; a
// round announces once and reads up to its reply. It returns replies a
// second and the client's CPU as a fraction of its core.
func drive(t *testing.T, url string, d time.Duration, conn func(c *websocket.Conn, i int) (round func() bool)) (rate, clientCPU float64) {
	t.Helper()
	const conns = 64
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	var replies atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A server that stops answering ends the run at this deadline.
		c.SetReadDeadline(stop.Add(5 * time.Second))
		round := conn(c, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && round() {
				replies.Add(1)
			}
		}()
	}
	start, cpu0 := time.Now(), selfCPU(t)
	wg.Wait()
	took := time.Since(start)
	return float64(replies.Load()) / took.Seconds(), (selfCPU(t) - cpu0).Seconds() / took.Seconds()
}

// isReply tells a reply to an announce (it carries the interval) from an
// offer by the start of its payload.
func isReply(head []byte) bool {
	return bytes.Contains(head, []byte(`"interval"`)) && !bytes.Contains(head, []byte(`"offer"`))
}

// maskedFrame is payload as a client's text frame, masked with key.
func maskedFrame(payload []byte, key [4]byte) []byte {
	f := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// frameReader reads a server's frames (unmasked) from a connection.
type frameReader struct {
	nc       net.Conn
	buf      []byte
	from, to int
}

// next returns the start (up to 160 bytes) of the next frame's payload.
func (r *frameReader) next() ([]byte, error) {
	for {
		if b := r.buf[r.from:r.to]; len(b) >= 2 {
			n, h := int(b[1]&0x7f), 2
			switch n {
			case 126:
				if len(b) >= 4 {
					n, h = int(b[2])<<8|int(b[3]), 4
				} else {
					h = -1
				}
			case 127:
				if len(b) >= 10 {
					n, h = int(binary.BigEndian.Uint64(b[2:10])), 10
				} else {
					h = -1
				}
			}
			if h > 0 && n > len(r.buf)-h {
				return nil, fmt.Errorf("frame of %d bytes", n)
			}
			if h > 0 && len(b) >= h+n {
				r.from += h + n
				return b[h : h+min(n, 160)], nil
			}
		}
		// Room for the rest of the frame: what is left moves to the front.
		if r.from > 0 {
			r.to = copy(r.buf, r.buf[r.from:r.to])
			r.from = 0
		}
		n, err := r.nc.Read(r.buf[r.to:])
		if err != nil {
			return nil, err
		}
		r.to += n
	}
}

// selfCPU is the CPU this process has used, user and system.
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's closing parenthesis: utime and stime are
	// the 12th and 13th (fields 14 and 15 of proc(5)), in clock ticks.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100
}

// idleMemory opens n connections, each announcing once (its own peer in
// one of n/10 swarms), then holds them idle, and returns the growth of the
// server's resident memory per connection.
func idleMemory(t *testing.T, url string, pid, n int) float64 {
	t.Helper()
	before := rss(t, pid)
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if err := c.WriteMessage(websocket.TextMessage, announce(benchID('i', i%(n/10)), benchID('q', i), 0, 0)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	time.Sleep(3 * time.Second) // let both runtimes settle (GC)
	return float64(rss(t, pid)-before) / float64(n)
}

func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// offerToAnswer measures, n times, from an announce with one offer on
// process a to its answer, sent by a peer on process b as soon as the
// offer arrived.
func offerToAnswer(t *testing.T, a, b string, n int) (p50, p99 float64) {
	t.Helper()
	ih, pa, pb := benchID('l', 1), benchID('a', 1), benchID('b', 1)
	ca, _, err := websocket.DefaultDialer.Dial(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, _, err := websocket.DefaultDialer.Dial(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	cb.WriteMessage(websocket.TextMessage, announce(ih, pb, 0, 0))
	cb.ReadMessage()
	go func() { // b answers every offer
		for {
			_, data, err := cb.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) != nil || m["offer"] == nil {
				continue
			}
			ans, _ := json.Marshal(map[string]any{"action": "announce", "info_hash": l1s(ih), "peer_id": l1s(pb), "to_peer_id": m["peer_id"],
				"offer_id": m["offer_id"], "answer": map[string]any{"type": "answer", "sdp": "v=0"}})
			cb.WriteMessage(websocket.TextMessage, ans)
		}
	}()
	var lat []float64
	for i := range n {
		start := time.Now()
		ca.WriteMessage(websocket.TextMessage, announce(ih, pa, 1, i))
		ca.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, data, err := ca.ReadMessage()
			if err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
			if strings.Contains(string(data), `"answer"`) {
				break
			}
		}
		lat = append(lat, float64(time.Since(start).Microseconds())/1000)
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

func npmVersion(t *testing.T, node string) string {
	b, err := os.ReadFile(webtorrentDir + "/node_modules/bittorrent-tracker/package.json")
	if err != nil {
		return "?"
	}
	var p struct{ Version string }
	json.Unmarshal(b, &p)
	return p.Version
}

func nodeVersion(t *testing.T, node string) string {
	out, _ := exec.Command(node, "--version").Output()
	return strings.TrimSpace(string(out))
}
