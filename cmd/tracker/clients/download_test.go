package clients

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/tracklink/tracklink/internal/testkit"
)

// seedFile writes size random bytes to dir/payload.bin, starts an
// anacrolix seeder of it announcing to announceURL, and returns the info
// dictionary and the data.
func seedFile(t *testing.T, dir string, size int, announceURL string) ([]byte, []byte, *torrent.Torrent) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "payload.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	infoBytes, st := seedPath(t, dir, "payload.bin", announceURL)
	return infoBytes, data, st
}

// seedPath starts an anacrolix seeder of dir/name (a file, or a directory:
// a torrent of several files) announcing to announceURL, and returns the
// info dictionary.
func seedPath(t *testing.T, dir, name, announceURL string) ([]byte, *torrent.Torrent) {
	t.Helper()
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	st, err := realClient(t, dir, true).AddTorrent(&metainfo.MetaInfo{InfoBytes: infoBytes, Announce: announceURL})
	if err != nil {
		t.Fatal(err)
	}
	<-st.GotInfo()
	if err := st.VerifyDataContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.Complete().On():
	case <-time.After(10 * time.Second):
		t.Fatal("seeder does not have the whole file")
	}
	return infoBytes, st
}

// TestLinkRealClientsDownload: one client seeds a file announcing only to
// node A, another downloads it announcing only to node B. Only the link can
// have told B's client about A's.
func TestLinkRealClientsDownload(t *testing.T) {
	c := startCluster(t, 2)
	seedDir, leechDir := t.TempDir(), t.TempDir()
	infoBytes, data, st := seedFile(t, seedDir, 3<<20+12345, c.nodes[0]+"/announce")
	ih := string(st.InfoHash().Bytes())
	took := testkit.Eventually(t, 10*time.Second, "seeder known to node B", func() bool { return scrapeOf(t, c.nodes[1], ih).seeders == 1 })
	t.Logf("seeder relayed to node B after %s", took)
	start := time.Now()
	download(t, realClient(t, leechDir, false), &metainfo.MetaInfo{InfoBytes: infoBytes, Announce: c.nodes[1] + "/announce"})
	t.Logf("download took %s", time.Since(start))
	got, err := os.ReadFile(filepath.Join(leechDir, "payload.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("downloaded file differs from the seeded one")
	}
}

// TestLibtorrentDownloadsOverUDP: a seeder (anacrolix/torrent) announces
// over HTTP to node A; libtorrent (Debian's python3-libtorrent) announces
// only to node B's udp:// URL and downloads the file from the seeder that
// the link told node B about.
func TestLibtorrentDownloadsOverUDP(t *testing.T) {
	python := libtorrentPython(t)
	c := startCluster(t, 2)
	seedDir, leechDir := t.TempDir(), t.TempDir()
	infoBytes, data, st := seedFile(t, seedDir, 2<<20+4321, c.nodes[0]+"/announce")
	ih := string(st.InfoHash().Bytes())
	testkit.Eventually(t, 10*time.Second, "seeder known to node B", func() bool { return scrapeOf(t, c.nodes[1], ih).seeders == 1 })

	tf := writeTorrent(t, &metainfo.MetaInfo{InfoBytes: infoBytes, Announce: testkit.UDPAnnounceURL(t, c.nodes[1])})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "testdata/lt_download.py", tf, leechDir, "60").CombinedOutput()
	if err != nil {
		t.Fatalf("libtorrent did not download over UDP: %v\n%s", err, out)
	}
	t.Logf("libtorrent downloaded in %s", time.Since(start))
	got, err := os.ReadFile(filepath.Join(leechDir, "payload.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("downloaded file differs from the seeded one")
	}
	// The leecher reached node A through the link: it announced over UDP.
	testkit.Eventually(t, 5*time.Second, "libtorrent's UDP announce relayed to node A", func() bool {
		s := scrapeOf(t, c.nodes[0], ih)
		return s.seeders+s.leechers == 2
	})
}

// libtorrentPython is Debian's python3, which has the libtorrent module.
// The test skips unless the clients tier (TRACKLINK_CLIENTS_TEST) is on,
// and fails when it is on and the module is missing.
func libtorrentPython(t *testing.T) string {
	t.Helper()
	testkit.Clients.Require(t)
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import libtorrent").CombinedOutput(); err != nil {
		t.Fatalf("%s is set but python3-libtorrent is not installed (apt-get install python3-libtorrent; .ci/run installs it): %v %s", testkit.Clients.Var, err, out)
	}
	return python
}

// writeTorrent writes mi to a .torrent file and returns its path.
func writeTorrent(t *testing.T, mi *metainfo.MetaInfo) string {
	t.Helper()
	tf := filepath.Join(t.TempDir(), "payload.torrent")
	writeTorrentTo(t, tf, mi)
	return tf
}

// TestLibtorrentPartialSeed: libtorrent downloads one file of two over UDP
// from node B, so it is a partial seed (BEP 21), and announces so (event
// paused, 4 over UDP). Both linked nodes count it as incomplete but not as
// a downloader.
func TestLibtorrentPartialSeed(t *testing.T) {
	python := libtorrentPython(t)
	c := startCluster(t, 2)
	seedDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(seedDir, "payload"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"a.bin": 1<<20 + 777, "b.bin": 1<<20 + 999} {
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(seedDir, "payload", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	infoBytes, st := seedPath(t, seedDir, "payload", c.nodes[0]+"/announce")
	ih := string(st.InfoHash().Bytes())
	testkit.Eventually(t, 10*time.Second, "seeder known to node B", func() bool { return scrapeOf(t, c.nodes[1], ih).seeders == 1 })

	tf := writeTorrent(t, &metainfo.MetaInfo{InfoBytes: infoBytes, Announce: testkit.UDPAnnounceURL(t, c.nodes[1])})
	cmd := exec.Command(python, "testdata/lt_download.py", tf, t.TempDir(), "60", "1,0")
	var logs testkit.Buffer
	cmd.Stderr = &logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	exited := startProcess(t, cmd)
	partial := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "partial seed" {
				close(partial)
			}
		}
	}()
	select {
	case <-partial:
	case err := <-exited:
		t.Fatalf("libtorrent exited: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("libtorrent did not finish its wanted file\n%s", logs.String())
	}
	for i, node := range c.nodes {
		want := counts{seeders: 1, leechers: 1, downloaders: 0}
		var got counts
		if !testkit.Within(10*time.Second, func() bool { got = scrapeOf(t, node, ih); return got == want }) {
			t.Fatalf("node %d: %+v, want %+v (a seeder and a partial seed)\n%s", i, got, want, logs.String())
		}
	}
}

// TestCreatedTorrentDownloads: a torrent made by `tracker torrent create`
// for a node is downloaded by a real client from a real seeder through it.
func TestCreatedTorrentDownloads(t *testing.T) {
	node := startNode(t) // embedded mode
	dir := t.TempDir()
	seedDir, leechDir := filepath.Join(dir, "seed"), filepath.Join(dir, "leech")
	os.MkdirAll(seedDir, 0o755)
	os.MkdirAll(leechDir, 0o755)
	payload := bytes.Repeat([]byte("tracklink "), 200000)
	os.WriteFile(filepath.Join(seedDir, "file.bin"), payload, 0o644)
	tor := filepath.Join(dir, "file.torrent")
	runTracker(t, "torrent", "create", "--announce-list", node+"/announce", "-o", tor, filepath.Join(seedDir, "file.bin"))
	mi, err := metainfo.LoadFromFile(tor)
	if err != nil {
		t.Fatal(err)
	}
	st, err := realClient(t, seedDir, true).AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	<-st.GotInfo()
	if err := st.VerifyDataContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	download(t, realClient(t, leechDir, false), mi)
	got, _ := os.ReadFile(filepath.Join(leechDir, "file.bin"))
	if !bytes.Equal(got, payload) {
		t.Fatal("downloaded data differs")
	}
}

// download adds mi to a client and waits until it has the whole torrent.
func download(t *testing.T, cl *torrent.Client, mi *metainfo.MetaInfo) {
	t.Helper()
	lt, err := cl.AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	<-lt.GotInfo()
	lt.DownloadAll()
	select {
	case <-lt.Complete().On():
		return
	case <-time.After(10 * time.Second):
	}
	// Rarely the client's first connection attempt fails and it waits to
	// retry; say what it knows, then give it time.
	st := lt.Stats()
	t.Logf("slow download: %d of %d bytes, peers known %d, active %d, half-open %d",
		lt.BytesCompleted(), lt.Length(), st.TotalPeers, st.ActivePeers, st.HalfOpenPeers)
	select {
	case <-lt.Complete().On():
	case <-time.After(80 * time.Second):
		t.Fatalf("download did not complete: %d of %d bytes", lt.BytesCompleted(), lt.Length())
	}
}
