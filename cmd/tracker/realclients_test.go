package main

import (
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// realClient returns an anacrolix/torrent client, a BitTorrent client this
// project did not write, that can find peers only through trackers: DHT,
// PEX and web seeds are off (this client has no local peer discovery), and
// it listens on loopback only.
func realClient(t *testing.T, dir string, seed bool) *torrent.Client {
	t.Helper()
	cfg := torrent.NewDefaultClientConfig()
	cfg.DataDir = dir
	cfg.Seed = seed
	cfg.NoDHT = true
	cfg.DisablePEX = true
	cfg.DisableWebtorrent = true
	cfg.DisableWebseeds = true
	cfg.DisableIPv6 = true
	cfg.DisableUTP = true
	cfg.NoDefaultPortForwarding = true
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestLinkRealClientsDownload: one client seeds a file announcing only to
// node A, another downloads it announcing only to node B. Only the link can
// have told B's client about A's.
func TestLinkRealClientsDownload(t *testing.T) {
	c := newCluster(t, "nodeA", "nodeB")
	c.waitLinked("nodeA", "nodeB")

	seedDir, leechDir := t.TempDir(), t.TempDir()
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(seedDir, "payload.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(filepath.Join(seedDir, "payload.bin")); err != nil {
		t.Fatal(err)
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	miFor := func(node string) *metainfo.MetaInfo {
		return &metainfo.MetaInfo{InfoBytes: infoBytes, Announce: c.nodes[node].url + "/announce"}
	}

	seeder := realClient(t, seedDir, true)
	st, err := seeder.AddTorrent(miFor("nodeA"))
	if err != nil {
		t.Fatal(err)
	}
	<-st.GotInfo()
	if err := st.VerifyData(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.Complete().On():
	case <-time.After(10 * time.Second):
		t.Fatal("seeder does not have the whole file")
	}
	ih := string(st.InfoHash().Bytes())
	took := eventually(t, 10*time.Second, "seeder known to node B", func() bool { return scrapeOf(t, c.nodes["nodeB"].url, ih).seeders == 1 })
	t.Logf("seeder relayed to node B after %s", took)
	start := time.Now()
	defer func() { t.Logf("download took %s", time.Since(start)) }()

	download(t, realClient(t, leechDir, false), miFor("nodeB"))
	got, err := os.ReadFile(filepath.Join(leechDir, "payload.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("downloaded file differs from the seeded one")
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
