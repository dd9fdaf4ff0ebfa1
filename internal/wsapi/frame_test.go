package wsapi

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tracklink/tracklink/internal/testkit"
)

// rawDial opens a WebSocket by hand (the handshake written out), for
// frames no client library would send.
func rawDial(t *testing.T, url string) (net.Conn, *bufio.Reader) {
	t.Helper()
	host := strings.TrimPrefix(strings.TrimSuffix(url, "/announce"), "ws://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.Write([]byte("GET /announce HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The RFC's own example key and accept value.
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	return nc, br
}

// clientFrame is a masked frame as a client sends it; b0 is the first
// byte (FIN, reserved bits, opcode).
func clientFrame(b0 byte, payload []byte, masked bool) []byte {
	f := []byte{b0}
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		f = append(f, mbit|byte(n))
	default:
		f = append(f, mbit|126, byte(n>>8), byte(n))
	}
	if !masked {
		return append(f, payload...)
	}
	mask := [4]byte{1, 2, 3, 4}
	f = append(f, mask[:]...)
	p := append([]byte(nil), payload...)
	unmask(p, mask, 0)
	return append(f, p...)
}

// readServerFrame reads one server frame: opcode and payload.
func readServerFrame(t *testing.T, nc net.Conn, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := br.Read(h[:1]); err != nil {
		t.Fatalf("read: %v", err)
	}
	if _, err := br.Read(h[1:]); err != nil {
		t.Fatalf("read: %v", err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var x [2]byte
		br.Read(x[:1])
		br.Read(x[1:])
		n = int(binary.BigEndian.Uint16(x[:]))
	}
	p := make([]byte, n)
	for got := 0; got < n; {
		k, err := br.Read(p[got:])
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got += k
	}
	return h[0] & 0x0f, p
}

// TestFrames: frames that break the protocol close the socket with 1002
// (a close frame first), and nothing of the socket is kept; fragments,
// pings and a client's close are handled as the protocol says.
func TestFrames(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	p := startProc(t, onRedis(rdb), testConfig(), allowAll{})
	bad := []struct {
		name  string
		frame []byte
	}{
		{"unmasked", clientFrame(0x81, []byte(`{}`), false)},
		{"reserved bit", clientFrame(0xc1, []byte(`{}`), true)},
		{"unknown opcode", clientFrame(0x83, []byte(`{}`), true)},
		{"fragmented ping", clientFrame(0x09, []byte(`x`), true)},
		{"continuation first", clientFrame(0x80, []byte(`{}`), true)},
		{"new message inside one", append(clientFrame(0x01, []byte(`{`), true), clientFrame(0x81, []byte(`}`), true)...)},
		{"close of one byte", clientFrame(0x88, []byte{3}, true)},
		{"close with a reserved code", clientFrame(0x88, []byte{0x03, 0xed}, true)},
		{"length with the top bit", []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			nc, br := rawDial(t, p.url)
			nc.Write(tc.frame)
			op, pl := readServerFrame(t, nc, br)
			if op != opClose || len(pl) < 2 || binary.BigEndian.Uint16(pl) != closeProtocolError {
				t.Fatalf("got opcode %d %q, want a close with 1002", op, pl)
			}
		})
	}
	testkit.Eventually(t, 5*time.Second, "every connection closed", func() bool { return p.srv.Status().Connections == 0 })
	if n := testutil.ToFloat64(p.srv.m.closed.WithLabelValues("malformed")); n != float64(len(bad)) {
		t.Errorf("closed as malformed: %v, want %d", n, len(bad))
	}

	t.Run("fragments, ping, close", func(t *testing.T) {
		nc, br := rawDial(t, p.url)
		// A ping between two fragments of a scrape.
		msg := `{"action":"scrape","info_hash":` + jq(l1(id20(1))) + `}`
		nc.Write(clientFrame(0x01, []byte(msg[:10]), true))
		nc.Write(clientFrame(0x89, []byte("hi"), true))
		nc.Write(clientFrame(0x80, []byte(msg[10:]), true))
		if op, pl := readServerFrame(t, nc, br); op != opPong || string(pl) != "hi" {
			t.Fatalf("pong: %d %q", op, pl)
		}
		if op, pl := readServerFrame(t, nc, br); op != opText || !strings.Contains(string(pl), `"action":"scrape"`) {
			t.Fatalf("scrape: %d %q", op, pl)
		}
		nc.Write(clientFrame(0x88, []byte{0x03, 0xe8}, true))
		if op, pl := readServerFrame(t, nc, br); op != opClose || binary.BigEndian.Uint16(pl) != closeNormal {
			t.Fatalf("close: %d %q", op, pl)
		}
		testkit.Eventually(t, 5*time.Second, "every connection closed", func() bool { return p.srv.Status().Connections == 0 })
	})
}

// TestPartialFrames: frames that arrive in pieces are joined, and sockets
// that stop in the middle of a frame hold no reader: more of them than
// there are readers do not delay anyone else.
func TestPartialFrames(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	cfg := testConfig()
	cfg.MaxSockets = 1000
	p := startProc(t, onRedis(rdb), cfg, allowAll{})
	scrape := clientFrame(0x81, []byte(`{"action":"scrape","info_hash":`+jq(l1(id20(1)))+`}`), true)
	type half struct {
		nc net.Conn
		br *bufio.Reader
	}
	var halves []half
	for range readers + 20 {
		nc, br := rawDial(t, p.url)
		nc.Write(scrape[:1]) // one byte of the header
		halves = append(halves, half{nc, br})
	}
	// A large message in pieces (its header split too), and one after it
	// in the same write as its last piece.
	nc, br := rawDial(t, p.url)
	big := clientFrame(0x81, []byte(`{"action":"scrape","info_hash":`+jq(l1(id20(2)))+`,"pad":"`+strings.Repeat("x", 20000)+`"}`), true)
	for _, piece := range [][]byte{big[:1], big[1:3], big[3:9], big[9:5000], big[5000:17000]} {
		nc.Write(piece)
		time.Sleep(20 * time.Millisecond)
	}
	nc.Write(append(big[17000:], scrape...))
	for range 2 {
		if op, pl := readServerFrame(t, nc, br); op != opText || !strings.Contains(string(pl), `"action":"scrape"`) {
			t.Fatalf("reply: %d %q", op, pl)
		}
	}
	for _, h := range halves {
		h.nc.Write(scrape[1:])
	}
	for _, h := range halves {
		if op, pl := readServerFrame(t, h.nc, h.br); op != opText || !strings.Contains(string(pl), `"action":"scrape"`) {
			t.Fatalf("reply: %d %q", op, pl)
		}
	}
}

// TestHandshake: what is not a WebSocket opening handshake is refused
// with the status the protocol names.
func TestHandshake(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	p := startProc(t, onRedis(rdb), testConfig(), allowAll{})
	url := "http" + strings.TrimPrefix(p.url, "ws")
	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
	}{
		{"version 8", map[string]string{"Sec-WebSocket-Version": "8"}, http.StatusUpgradeRequired},
		{"no key", map[string]string{"Sec-WebSocket-Key": ""}, http.StatusBadRequest},
		{"short key", map[string]string{"Sec-WebSocket-Key": "c2hvcnQ="}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Connection", "keep-alive, Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	if n := testutil.ToFloat64(p.srv.m.refused.WithLabelValues("handshake")); n != 3 {
		t.Errorf("refused handshakes: %v", n)
	}
	if st := p.srv.Status(); st.Connections != 0 {
		t.Errorf("connections left: %d", st.Connections)
	}
}

// TestIdleHoldsNoGoroutine: an idle connection (announced, then silent,
// answering pings) has no goroutine of its own: the poller waits for it.
func TestIdleHoldsNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is epoll's")
	}
	rdb := testkit.StartRedis(t).Client(t)
	cfg := testConfig()
	cfg.MaxSockets = 1000
	p := startProc(t, onRedis(rdb), cfg, allowAll{})
	const n = 200
	cs := make([]*client, n)
	for i := range cs {
		cs[i] = dial(t, p.url)
	}
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for i, c := range cs {
		c.send(announceMsg(id20(byte(i%7)), id20(byte(i)), 5, 0, 0))
		c.recv()
	}
	var now int
	testkit.Eventually(t, 5*time.Second, "the goroutines back", func() bool { now = runtime.NumGoroutine(); return now <= before+n/20 })
	t.Logf("%d idle connections: %d goroutines before their announces, %d after", n, before, now)
}
