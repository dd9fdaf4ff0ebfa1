package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracklink/tracklink/internal/torrentfile"
)

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, nil, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestTorrentCommands(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.MkdirAll(filepath.Join(data, "sub"), 0o755)
	os.WriteFile(filepath.Join(data, "sub", "a.bin"), bytes.Repeat([]byte{1}, 50000), 0o644)
	os.WriteFile(filepath.Join(data, "b.txt"), []byte("hello"), 0o644)
	tor := filepath.Join(dir, "t", "data.torrent")
	os.MkdirAll(filepath.Dir(tor), 0o755)

	if _, _, err := runCmd(t, "torrent", "create", "--announce-list", "http://n1.example/announce,http://n2.example/announce", "-o", tor, data); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, "torrent", "show", tor)
	if err != nil || !strings.Contains(out, "tier 1:        http://n1.example/announce http://n2.example/announce") || !strings.Contains(out, "data/sub/a.bin") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	orig, _ := os.ReadFile(tor)
	before, _ := torrentfile.Parse(orig)
	h1, _ := before.InfoHashV1()

	// Dry run: prints, writes nothing.
	out, _, err = runCmd(t, "torrent", "reannounce", "--announce-list", "http://x.example/announce,udp://y.example:6969", "--dry-run", filepath.Dir(tor))
	if err != nil || !strings.Contains(out, "would rewrite") {
		t.Fatalf("dry run: %v %s", err, out)
	}
	if now, _ := os.ReadFile(tor); !bytes.Equal(now, orig) {
		t.Fatal("dry run wrote the file")
	}
	// Several tiers; a broken file next to it fails alone, and the exit
	// status says so.
	bad := filepath.Join(dir, "t", "broken.torrent")
	os.WriteFile(bad, []byte("d4:info"), 0o644)
	out, errOut, err := runCmd(t, "torrent", "reannounce", "--announce-list", "http://x.example/announce", "--tier", "http://z.example/announce", filepath.Join(dir, "t", "*.torrent"))
	if err == nil || !strings.Contains(err.Error(), "1 of 2 failed") || !strings.Contains(errOut, "broken.torrent") || !strings.Contains(out, "rewrote") {
		t.Fatalf("reannounce with a broken file: err %v\nout %s\nerr %s", err, out, errOut)
	}
	after, err := torrentfile.Read(tor)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := after.InfoHashV1(); h != h1 {
		t.Fatal("info hash changed")
	}
	if a, l := after.Announce(); a != "http://x.example/announce" || len(l) != 2 || l[1][0] != "http://z.example/announce" {
		t.Fatalf("trackers %q %v", a, l)
	}
	out, _, err = runCmd(t, "torrent", "show", "--json", tor)
	if err != nil || !strings.Contains(out, `"info_hash_v1": "`) {
		t.Fatalf("show --json: %v %s", err, out)
	}
	if _, _, err := runCmd(t, "torrent", "reannounce", tor); err == nil {
		t.Fatal("reannounce without URLs accepted")
	}
	if _, _, err := runCmd(t, "torrent", "create", "--announce-list", "ftp://x/", "-o", filepath.Join(dir, "x.torrent"), data); err == nil {
		t.Fatal("ftp announce accepted")
	}
}
