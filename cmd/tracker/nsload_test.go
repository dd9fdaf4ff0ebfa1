package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent/bencode"
)

// netnsLoadVar makes the test binary a client of many addresses (see
// TestMain), run inside a test's network namespace: "spread" announces
// from every address over fresh TCP connections and UDP sockets and
// reports which replica served whom; "paced" sends requests at a steady
// pace for a while and reports what failed.
const netnsLoadVar = "TRACKLINK_NETNS_LOAD"

type nsLoad struct {
	Mode     string   // "spread" or "paced"
	Base     string   // http://host:port
	UDP      string   // host:port
	Sources  []string // the client's addresses
	InfoHash string   // hex
	For      time.Duration
}

type nsLoadResult struct {
	// spread: per replica (process id), the client addresses its HTTP
	// answered, the HTTP and UDP announces it counted, and the peers an
	// announce through it returned.
	Replicas map[string]*replicaSeen
	Peers    int // announced in all
	// paced
	Sent, Failed int
	FirstErr     string
	Err          string
}

type replicaSeen struct {
	Sources    []string
	HTTP, UDP  float64
	PeersShown int
}

// runLoad runs req inside namespace ns.
func runLoad(ns string, req nsLoad, timeout time.Duration) (nsLoadResult, error) {
	return startLoad(ns, req, timeout).wait()
}

// loadRun is a load client running in a namespace.
type loadRun struct {
	cmd    *exec.Cmd
	out    strings.Builder
	cancel context.CancelFunc
	ns     string
}

// startLoad starts req inside namespace ns; stop ends a paced run early.
func startLoad(ns string, req nsLoad, timeout time.Duration) *loadRun {
	b, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	r := &loadRun{cancel: cancel, ns: ns}
	// ip netns exec execs the client in place: its pid is the client's.
	r.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0])
	r.cmd.Env = append(os.Environ(), netnsLoadVar+"="+string(b))
	r.cmd.Stdout = &r.out
	if err := r.cmd.Start(); err != nil {
		r.cmd = nil
	}
	return r
}

// stop asks a paced run to end now (SIGINT); wait then reads its result.
func (r *loadRun) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(os.Interrupt)
	}
}

func (r *loadRun) wait() (nsLoadResult, error) {
	defer r.cancel()
	var res nsLoadResult
	if r.cmd == nil {
		return res, fmt.Errorf("load client in %s did not start", r.ns)
	}
	err := r.cmd.Wait()
	out := r.out.String()
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		return res, fmt.Errorf("load client in %s: %v: %s", r.ns, err, out)
	}
	if res.Err != "" {
		return res, fmt.Errorf("load client in %s: %s", r.ns, res.Err)
	}
	return res, nil
}

func netnsLoadMain() int {
	var req nsLoad
	if err := json.Unmarshal([]byte(os.Getenv(netnsLoadVar)), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var res nsLoadResult
	var err error
	switch req.Mode {
	case "spread":
		err = spread(req, &res)
	case "paced":
		// Until req.For ends or the test says stop (SIGINT).
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		paced(ctx, req, &res)
	default:
		err = fmt.Errorf("mode %q", req.Mode)
	}
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// httpFrom is a client whose every request leaves from src on a fresh
// connection.
func httpFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

var anyProcessRE = regexp.MustCompile(`tracker_process_info\{node="[^"]*",process="([0-9a-f]+)"\}`)

// metricsFrom returns the metrics of the replica that serves src, and its
// process id.
func metricsFrom(base, src string) (string, string, error) {
	resp, err := httpFrom(src).Get(base + "/metrics")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := anyProcessRE.FindSubmatch(b)
	if m == nil {
		return "", "", errors.New("no tracker_process_info")
	}
	return string(m[1]), string(b), nil
}

// metricValue sums the samples of the metric lines that start with prefix.
func metricValue(text, prefix string) float64 {
	var sum float64
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// httpAnnounce announces peer port from src; it returns the peers given.
func httpAnnounce(base, src, ih string, port int, seeder bool) ([]string, error) {
	left := 1
	if seeder {
		left = 0
	}
	u := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=-TL0001-%012d&port=%d&left=%d&numwant=200&compact=1&event=started", base, url.QueryEscape(ih), port, port, left)
	resp, err := httpFrom(src).Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ans struct {
		Failure string `bencode:"failure reason"`
		Peers   string `bencode:"peers"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := bencode.Unmarshal(b, &ans); err != nil {
		return nil, err
	}
	if ans.Failure != "" {
		return nil, errors.New(ans.Failure)
	}
	var out []string
	for i := 0; i+6 <= len(ans.Peers); i += 6 {
		p := ans.Peers[i : i+6]
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte([]byte(p[:4]))), binary.BigEndian.Uint16([]byte(p[4:]))).String())
	}
	return out, nil
}

// udpAnnounce announces peer port over BEP 15 from src (a fresh socket).
func udpAnnounce(to, src, ih string, port uint16) error {
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	req := binary.BigEndian.AppendUint64(nil, 0x41727101980)
	req = binary.BigEndian.AppendUint32(req, 0)
	req = binary.BigEndian.AppendUint32(req, 7)
	buf := make([]byte, 2048)
	if _, err := c.Write(req); err != nil {
		return err
	}
	if n, err := c.Read(buf); err != nil || n < 16 {
		return fmt.Errorf("connect: %d bytes, %v", n, err)
	}
	ann := append([]byte(nil), buf[8:16]...)
	ann = binary.BigEndian.AppendUint32(ann, 1)
	ann = binary.BigEndian.AppendUint32(ann, 8)
	ann = append(ann, ih...)
	var pid [20]byte
	rand.Read(pid[:])
	ann = append(ann, pid[:]...)
	ann = append(ann, make([]byte, 8)...)
	ann = binary.BigEndian.AppendUint64(ann, 1)
	ann = append(ann, make([]byte, 8+4+4+4)...)
	ann = binary.BigEndian.AppendUint32(ann, 0xffffffff)
	ann = binary.BigEndian.AppendUint16(ann, port)
	if _, err := c.Write(ann); err != nil {
		return err
	}
	n, err := c.Read(buf)
	if err != nil || n < 8 {
		return fmt.Errorf("announce: %d bytes, %v", n, err)
	}
	if binary.BigEndian.Uint32(buf) == 3 {
		return refusal(buf[8:n])
	}
	return nil
}

// refusal is a tracker's answer that refuses an announce (a failure
// reason): an answer, not a loss.
type refusal string

func (r refusal) Error() string { return string(r) }

// spread: every source announces one peer over HTTP (a fresh connection)
// and one over UDP (a fresh socket); then, through each replica (a source
// it serves), a seeder asks for every peer.
func spread(req nsLoad, res *nsLoadResult) error {
	ihb := make([]byte, 20)
	if _, err := fmt.Sscanf(req.InfoHash, "%x", &ihb); err != nil {
		return err
	}
	ih := string(ihb)
	res.Replicas = map[string]*replicaSeen{}
	owner := map[string]string{} // process -> a source it serves
	for _, src := range req.Sources {
		p, _, err := metricsFrom(req.Base, src)
		if err != nil {
			return fmt.Errorf("metrics from %s: %w", src, err)
		}
		if res.Replicas[p] == nil {
			res.Replicas[p] = &replicaSeen{}
			owner[p] = src
		}
		res.Replicas[p].Sources = append(res.Replicas[p].Sources, src)
	}
	for i, src := range req.Sources {
		if _, err := httpAnnounce(req.Base, src, ih, 30000+i, false); err != nil {
			return fmt.Errorf("HTTP announce from %s: %w", src, err)
		}
		if err := udpAnnounce(req.UDP, src, ih, uint16(31000+i)); err != nil {
			return fmt.Errorf("UDP announce from %s: %w", src, err)
		}
		res.Peers += 2
	}
	for p, src := range owner {
		_, text, err := metricsFrom(req.Base, src)
		if err != nil {
			return err
		}
		res.Replicas[p].HTTP = metricValue(text, `tracker_announces_total{outcome="ok"}`)
		res.Replicas[p].UDP = metricValue(text, `tracker_udp_requests_total{action="announce",outcome="ok"}`)
		peers, err := httpAnnounce(req.Base, src, ih, 32000, true)
		if err != nil {
			return fmt.Errorf("the seeder's announce through %s: %w", p, err)
		}
		res.Replicas[p].PeersShown = len(peers)
	}
	return nil
}

// paced: a request every 10 ms from the sources in turn, each on a fresh
// connection, for req.For or until ctx ends.
func paced(ctx context.Context, req nsLoad, res *nsLoadResult) {
	end := time.Now().Add(req.For)
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		src := req.Sources[i%len(req.Sources)]
		resp, err := httpFrom(src).Get(req.Base + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		res.Sent++
		if err != nil {
			res.Failed++
			if res.FirstErr == "" {
				res.FirstErr = fmt.Sprintf("request %d from %s: %v", i, src, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
