package udpapi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	trk "github.com/anacrolix/torrent/tracker"
	"github.com/anacrolix/torrent/tracker/udp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/redisstore"
	"github.com/tracklink/tracklink/internal/testkit"
	"github.com/tracklink/tracklink/internal/tracker"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

const testSecret = "udp-secret-of-the-tests"

var nodeSeq atomic.Int64

// testNode is a UDP front end on a real Redis (or the in-memory store),
// listening on 127.0.0.1 and [::1].
type testNode struct {
	srv    *Server
	v4, v6 string
	store  tracker.Store
	// stop ends Serve's context and returns what Serve returned.
	stop func() error
}

type nodeOpts struct {
	secret  string
	store   tracker.Store // default: a keyspace of its own on the shared Redis, or with fake an in-memory store
	fake    bool
	gate    tracker.Gate
	workers int
	rbuf    int           // read buffer, bytes
	clock   time.Duration // how far this node's clock is ahead
	allowIP bool          // honour the IPv4 address field
	rdb     *redis.Client // the default store's Redis client (default: a new one on the shared Redis)
	tune    func(*tracker.Config)
	wrap    func(tracker.Store) tracker.Store // wraps the store the service uses
}

// onEachStore runs test on the in-memory store (fake) and on a real one.
func onEachStore(t *testing.T, test func(t *testing.T, fake bool)) {
	t.Run("fake", func(t *testing.T) { test(t, true) })
	t.Run("redis", func(t *testing.T) { test(t, false) })
}

func startNode(t *testing.T, o nodeOpts) *testNode {
	t.Helper()
	if o.secret == "" {
		o.secret = testSecret
	}
	if o.store == nil && o.fake {
		o.store = &testkit.Store{}
	}
	if o.store == nil {
		if o.rdb == nil {
			o.rdb = testkit.SharedRedis(t).Client(t)
		}
		s, err := redisstore.New(o.rdb, redisstore.Config{
			Prefix: "udptest", NodeID: fmt.Sprintf("n%d", nodeSeq.Add(1)),
			PeerLifetime: time.Hour, CompletedTTL: 2 * time.Hour, Timeout: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		o.store = s
	}
	if o.wrap != nil {
		o.store = o.wrap(o.store)
	}
	if o.workers == 0 {
		o.workers = 8
	}
	if o.rbuf == 0 {
		o.rbuf = 1 << 20
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	cfg := tracker.Config{Interval: 30 * time.Minute, MinInterval: 5 * time.Minute, NumWantDefault: 50, NumWantMax: 200, AllowIPParam: o.allowIP}
	if o.tune != nil {
		o.tune(&cfg)
	}
	svc, err := tracker.New(cfg, o.store, tracker.Options{Gate: o.gate}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Addr: "127.0.0.1:0", Workers: o.workers, ReadBuffer: o.rbuf, ScrapeMaxHashes: 74}, []byte(o.secret), svc, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	if o.clock != 0 {
		srv.now = func() time.Time { return time.Now().Add(o.clock) }
	}
	c4, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c6, err := Listen("[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, append(c4, c6...)) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("Serve did not return within 5s of the end of its context")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testNode{srv: srv, v4: c4[0].LocalAddr().String(), v6: c6[0].LocalAddr().String(), store: o.store, stop: stop}
}

// client is anacrolix/torrent's UDP tracker client, which this project did
// not write.
func client(t *testing.T, network, host string) *udp.ConnClient {
	t.Helper()
	cc, err := udp.NewConnClient(udp.NewConnClientOpts{Network: network, Host: host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func announce(t *testing.T, cc *udp.ConnClient, ih string, port uint16, left int64, ev udp.AnnounceEvent, numWant int32) (udp.AnnounceResponseHeader, []netip.AddrPort) {
	t.Helper()
	h, peers, err := announceErr(cc, ih, port, left, ev, numWant)
	if err != nil {
		t.Fatalf("announce: %v", err)
	}
	return h, peers
}

func announceErr(cc *udp.ConnClient, ih string, port uint16, left int64, ev udp.AnnounceEvent, numWant int32) (udp.AnnounceResponseHeader, []netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var req udp.AnnounceRequest
	copy(req.InfoHash[:], ih)
	copy(req.PeerId[:], fmt.Sprintf("-AN0001-%012d", port))
	req.Left, req.Event, req.NumWant, req.Port = left, ev, numWant, port
	h, nas, err := cc.Announce(ctx, req, udp.Options{RequestUri: "/announce"})
	if err != nil {
		return h, nil, err
	}
	var out []netip.AddrPort
	for _, na := range nas.NodeAddrs() {
		a, _ := netip.AddrFromSlice(na.IP)
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(na.Port)))
	}
	return h, out, nil
}

func portsOf(ps []netip.AddrPort) map[uint16]bool {
	m := map[uint16]bool{}
	for _, p := range ps {
		m[p.Port()] = true
	}
	return m
}

func TestAnnounceAndScrapeWithRealClient(t *testing.T) {
	onEachStore(t, testAnnounceAndScrapeWithRealClient)
}

func testAnnounceAndScrapeWithRealClient(t *testing.T, fake bool) {
	n := startNode(t, nodeOpts{fake: fake})
	cc := client(t, "udp4", n.v4)
	ih := strings.Repeat("a", 20)
	h, peers := announce(t, cc, ih, 7001, 100, trk.Started, -1)
	if h.Leechers != 1 || h.Seeders != 0 || len(peers) != 0 || h.Interval < 1800 {
		t.Fatalf("first: %+v %v", h, peers)
	}
	h, peers = announce(t, cc, ih, 7002, 0, trk.Started, -1)
	if h.Leechers != 1 || h.Seeders != 1 || len(peers) != 1 || !portsOf(peers)[7001] || peers[0].Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("seeder: %+v %v", h, peers)
	}
	h, peers = announce(t, cc, ih, 7003, 50, trk.Started, -1)
	if h.Leechers != 2 || h.Seeders != 1 || len(peers) != 2 || !portsOf(peers)[7001] || !portsOf(peers)[7002] {
		t.Fatalf("second leecher: %+v %v", h, peers)
	}
	// Seeders are not sent to seeders.
	_, peers = announce(t, cc, ih, 7002, 0, trk.None, -1)
	if len(peers) != 2 || portsOf(peers)[7002] {
		t.Fatalf("seeder got %v, want the two leechers", peers)
	}
	// numwant is honoured.
	_, peers = announce(t, cc, ih, 7003, 50, trk.None, 1)
	if len(peers) != 1 {
		t.Fatalf("numwant 1 gave %d peers", len(peers))
	}
	announce(t, cc, ih, 7003, 0, trk.Completed, -1)
	announce(t, cc, ih, 7001, 100, trk.Stopped, -1)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	other := strings.Repeat("b", 20)
	var ihs []udp.InfoHash
	for _, s := range []string{ih, other} {
		var x udp.InfoHash
		copy(x[:], s)
		ihs = append(ihs, x)
	}
	sc, err := cc.Client.Scrape(ctx, ihs)
	if err != nil {
		t.Fatal(err)
	}
	if len(sc) != 2 || sc[0].Seeders != 2 || sc[0].Leechers != 0 || sc[0].Completed != 1 || sc[1] != (udp.ScrapeInfohashResult{}) {
		t.Fatalf("scrape: %+v", sc)
	}
	st := n.srv.Status()
	if st.Requests["announce"]["ok"] != 7 || st.Requests["scrape"]["ok"] != 1 || st.Requests["connect"]["ok"] < 1 {
		t.Fatalf("status: %+v", st)
	}
}

// TestFamilies: an answer carries the family of the socket the request
// came on; counts cover both; HTTP-style mixing never happens.
func TestFamilies(t *testing.T) { onEachStore(t, testFamilies) }

func testFamilies(t *testing.T, fake bool) {
	n := startNode(t, nodeOpts{fake: fake})
	c4, c6 := client(t, "udp4", n.v4), client(t, "udp6", n.v6)
	ih := strings.Repeat("f", 20)
	announce(t, c4, ih, 8001, 10, trk.Started, -1)
	announce(t, c6, ih, 8002, 10, trk.Started, -1)
	h, peers := announce(t, c6, ih, 8003, 10, trk.Started, -1)
	if h.Leechers != 3 || len(peers) != 1 || peers[0] != netip.MustParseAddrPort("[::1]:8002") {
		t.Fatalf("IPv6 answer: %+v %v", h, peers)
	}
	h, peers = announce(t, c4, ih, 8004, 10, trk.Started, -1)
	if h.Leechers != 4 || len(peers) != 1 || peers[0] != netip.MustParseAddrPort("127.0.0.1:8001") {
		t.Fatalf("IPv4 answer: %+v %v", h, peers)
	}
}

// rawConn is a UDP socket for hand-made datagrams.
type rawConn struct {
	t *testing.T
	c net.Conn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t, c}
}

// roundTrip sends b and returns the reply, or nil when none came within wait.
func (r *rawConn) roundTrip(b []byte, wait time.Duration) []byte {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
	r.c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 8192)
	n, err := r.c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return buf[:n]
}

func connectBytes(txID uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, protocolID), actionConnect), txID)
}

func (r *rawConn) connect() uint64 {
	r.t.Helper()
	rep := r.roundTrip(connectBytes(77), 2*time.Second)
	if len(rep) != 16 || binary.BigEndian.Uint32(rep) != actionConnect || binary.BigEndian.Uint32(rep[4:]) != 77 {
		r.t.Fatalf("connect reply %x", rep)
	}
	return binary.BigEndian.Uint64(rep[8:])
}

func errorText(t *testing.T, rep []byte) string {
	t.Helper()
	if len(rep) < 8 || binary.BigEndian.Uint32(rep) != actionError {
		t.Fatalf("reply %x is not an error", rep)
	}
	return string(rep[8:])
}

func TestConnectionIDsAcrossNodes(t *testing.T) { onEachStore(t, testConnectionIDsAcrossNodes) }

func testConnectionIDsAcrossNodes(t *testing.T, fake bool) {
	a := startNode(t, nodeOpts{fake: fake})
	b := startNode(t, nodeOpts{store: a.store}) // a replica: same secret, same keyspace
	c := startNode(t, nodeOpts{fake: fake, secret: "a different secret of another tracker"})
	late := startNode(t, nodeOpts{store: a.store, clock: 141 * time.Second})
	ra := dialRaw(t, a.v4)
	id := ra.connect()
	ih := strings.Repeat("x", 20)
	req := announceBytes(id, 5, ih, testPID, 10, 2, -1, 9001, nil)

	// The ID from node a is good at node b, from the same client address.
	rb := &rawConn{t, nil}
	lc := ra.c.LocalAddr().(*net.UDPAddr)
	bc, err := net.DialUDP("udp", &net.UDPAddr{IP: lc.IP}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(b.v4)))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	rb.c = bc
	rep := rb.roundTrip(req, 2*time.Second)
	if len(rep) != 20 || binary.BigEndian.Uint32(rep) != actionAnnounce || binary.BigEndian.Uint32(rep[4:]) != 5 || binary.BigEndian.Uint32(rep[12:]) != 1 {
		t.Fatalf("node b's reply to node a's connection ID: %x", rep)
	}
	// Node c has another secret: refused, with a reply no longer than the request.
	rc := dialRaw(t, c.v4)
	rep = rc.roundTrip(req, 2*time.Second)
	if msg := errorText(t, rep); !strings.Contains(msg, "connection ID") || len(rep) > len(req) {
		t.Fatalf("node c: %q", rep)
	}
	if got := c.srv.Status().Requests["announce"]["bad_connection_id"]; got != 1 {
		t.Fatalf("bad connection IDs counted: %d", got)
	}
	// An ID older than the validity window is refused: a node whose clock
	// is 141 s ahead sees it so.
	rl := dialRaw(t, late.v4)
	rep = rl.roundTrip(req, 2*time.Second)
	if msg := errorText(t, rep); !strings.Contains(msg, "expired") {
		t.Fatalf("stale ID: %q", msg)
	}
}

func TestNoAmplification(t *testing.T) { onEachStore(t, testNoAmplification) }

func testNoAmplification(t *testing.T, fake bool) {
	n := startNode(t, nodeOpts{fake: fake})
	r := dialRaw(t, n.v4)
	// Too short for a header: no reply at all.
	if rep := r.roundTrip([]byte("0123456789abcde"), 300*time.Millisecond); rep != nil {
		t.Fatalf("15-byte datagram got %x", rep)
	}
	// A connect without the protocol id: no reply.
	bad := connectBytes(1)
	bad[0] ^= 0xff
	if rep := r.roundTrip(bad, 300*time.Millisecond); rep != nil {
		t.Fatalf("connect without protocol id got %x", rep)
	}
	// A 16-byte request with a forged connection ID: 16 bytes back at most.
	forged := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 12345), actionScrape), 9)
	if rep := r.roundTrip(forged, 2*time.Second); len(rep) != 16 || errorText(t, rep) != "connecti" {
		t.Fatalf("forged ID: %q", rep)
	}
	st := n.srv.Status()
	if st.Dropped["short"] != 1 || st.Dropped["bad_protocol_id"] != 1 || st.Requests["scrape"]["bad_connection_id"] != 1 {
		t.Fatalf("status: %+v", st)
	}
}

func TestClientErrors(t *testing.T) { onEachStore(t, testClientErrors) }

func testClientErrors(t *testing.T, fake bool) {
	n := startNode(t, nodeOpts{fake: fake, gate: carries{strings.Repeat("k", 20): true}})
	r := dialRaw(t, n.v4)
	id := r.connect()
	head := func(action uint32) []byte {
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, id), action), 4)
	}
	for _, tc := range []struct {
		name string
		req  []byte
		want string
	}{
		{"unknown action", head(9), "unknown action 9"},
		{"truncated announce", announceBytes(id, 4, strings.Repeat("k", 20), testPID, 1, 0, -1, 1, nil)[:60], "at least 98"},
		{"bad event", announceBytes(id, 4, strings.Repeat("k", 20), testPID, 1, 9, -1, 1, nil), "unknown event"},
		{"port 0", announceBytes(id, 4, strings.Repeat("k", 20), testPID, 1, 0, -1, 0, nil), "port must be"},
		{"bad BEP 41 option", announceBytes(id, 4, strings.Repeat("k", 20), testPID, 1, 0, -1, 1, []byte{2, 200, 'x'}), "BEP 41"},
		{"torrent not carried", announceBytes(id, 4, strings.Repeat("z", 20), testPID, 1, 0, -1, 1, nil), tracker.NotAuthorized},
		{"scrape of a torrent not carried", append(head(actionScrape), strings.Repeat("z", 20)...), tracker.NotAuthorized},
		{"empty scrape", head(actionScrape), "at least one"},
		{"scrape over the cap", append(head(actionScrape), strings.Repeat("k", 20*75)...), "at most 74"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if msg := errorText(t, r.roundTrip(tc.req, 2*time.Second)); msg != tc.want && !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q, want %q", msg, tc.want)
			}
		})
	}
	// A carried torrent is served.
	rep := r.roundTrip(announceBytes(id, 4, strings.Repeat("k", 20), testPID, 1, 0, -1, 1, nil), 2*time.Second)
	if binary.BigEndian.Uint32(rep) != actionAnnounce {
		t.Fatalf("carried torrent: %x", rep)
	}
	if got := n.srv.Status().Requests["announce"]["client_error"]; got != 5 {
		t.Fatalf("client errors counted: %d, want 5", got)
	}
}

type carries map[string]bool

func (c carries) Carries(ih bittorrent.InfoHash) bool { return c[string(ih[:])] }

// slowStore answers every announce once released, so that the socket's
// queue fills.
type slowStore struct {
	release chan struct{}
	calls   atomic.Int64 // announces asked for
}

func (s *slowStore) Announce(ctx context.Context, req *bittorrent.AnnounceRequest, numWant int) (bittorrent.AnnounceResult, error) {
	b := bittorrent.StoreBatch{Announces: []*bittorrent.AnnounceRequest{req}, NumWant: []int{numWant}, AnnounceResults: make([]bittorrent.AnnounceResult, 1), AnnounceErrs: make([]error, 1)}
	s.Batch(ctx, &b)
	return b.AnnounceResults[0], b.AnnounceErrs[0]
}

func (s *slowStore) Batch(ctx context.Context, b *bittorrent.StoreBatch) {
	s.calls.Add(int64(len(b.Announces)))
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	for i := range b.Announces {
		b.AnnounceResults[i], b.AnnounceErrs[i] = bittorrent.AnnounceResult{}, nil
	}
}

func (s *slowStore) Scrape(context.Context, []bittorrent.InfoHash) ([]bittorrent.Scrape, error) {
	return nil, nil
}
func (s *slowStore) Ping(context.Context) error { return nil }

// TestReceiveBufferBound: with one worker held up by the store and a small
// receive buffer, a burst of announces overflows the socket's queue; the
// kernel drops the rest, and every drop is counted: replies + drops = the
// burst.
func TestReceiveBufferBound(t *testing.T) {
	st := &slowStore{release: make(chan struct{})}
	n := startNode(t, nodeOpts{store: st, workers: 1, rbuf: 4096})
	r := dialRaw(t, n.v4)
	id := r.connect()
	const burst = 300
	for i := 0; i < burst; i++ {
		if _, err := r.c.Write(announceBytes(id, uint32(i), testIH, testPID, 1, 0, -1, 1, nil)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the worker holds its first batch
	close(st.release)
	got := 0
	buf := make([]byte, 2048)
	for {
		r.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := r.c.Read(buf); err != nil {
			break
		}
		got++
	}
	// The kernel reports its drop count with the next datagram it queues.
	r.connect()
	dropped := n.srv.Status().Dropped["receive_buffer_full"]
	if dropped == 0 || uint64(got)+dropped != burst || st.calls.Load() != int64(got) {
		t.Fatalf("burst of %d: %d answered, %d dropped and counted, %d store calls", burst, got, dropped, st.calls.Load())
	}
}

func TestShutdownAnswersWhatWasRead(t *testing.T) {
	st := &slowStore{release: make(chan struct{})}
	n := startNode(t, nodeOpts{store: st, workers: 1})
	r := dialRaw(t, n.v4)
	id := r.connect()
	if _, err := r.c.Write(announceBytes(id, 1, testIH, testPID, 1, 0, -1, 1, nil)); err != nil {
		t.Fatal(err)
	}
	for st.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.AfterFunc(200*time.Millisecond, func() { close(st.release) })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	r.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	nr, err := r.c.Read(buf)
	if err != nil || binary.BigEndian.Uint32(buf[:nr]) != actionAnnounce {
		t.Fatalf("in-flight announce during shutdown: %x %v", buf[:nr], err)
	}
}

// TestIPField: with the address field honoured, an announce may name a
// unicast IPv4 address, never a multicast or broadcast one.
func TestIPField(t *testing.T) { onEachStore(t, testIPField) }

func testIPField(t *testing.T, fake bool) {
	n := startNode(t, nodeOpts{fake: fake, allowIP: true})
	r := dialRaw(t, n.v4)
	id := r.connect()
	withIP := func(ip [4]byte, port uint16) []byte {
		b := announceBytes(id, 3, testIH, testPID, 1, 0, -1, port, nil)
		copy(b[84:88], ip[:])
		return b
	}
	for _, ip := range [][4]byte{{224, 0, 0, 1}, {255, 255, 255, 255}} {
		if msg := errorText(t, r.roundTrip(withIP(ip, 1), 2*time.Second)); msg != "ip must be a unicast address" {
			t.Errorf("ip %v: %q", ip, msg)
		}
	}
	rep := r.roundTrip(withIP([4]byte{192, 0, 2, 5}, 2), 2*time.Second)
	if binary.BigEndian.Uint32(rep) != actionAnnounce || binary.BigEndian.Uint32(rep[12:]) != 1 {
		t.Fatalf("unicast ip field: %x", rep)
	}
	rep = r.roundTrip(withIP([4]byte{192, 0, 2, 6}, 3), 2*time.Second)
	if len(rep) != 26 || string(rep[20:24]) != "\xc0\x00\x02\x05" {
		t.Fatalf("the peer named by the ip field is not served as such: %x", rep)
	}
}
