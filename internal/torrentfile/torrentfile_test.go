package torrentfile

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/tracklink/tracklink/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite golden files")

var tiers = [][]string{{"http://a.example:6969/announce", "http://b.example:6969/announce", "udp://c.example:6969"}}

// fixture makes a folder of two files and a single file, deterministic.
func fixture(t *testing.T) (dir, single string) {
	t.Helper()
	root := t.TempDir()
	dir = filepath.Join(root, "album")
	os.MkdirAll(filepath.Join(dir, "disc1"), 0o755)
	os.WriteFile(filepath.Join(dir, "disc1", "track01.flac"), bytes.Repeat([]byte("a"), 70000), 0o644)
	os.WriteFile(filepath.Join(dir, "cover.jpg"), bytes.Repeat([]byte("b"), 1234), 0o644)
	single = filepath.Join(root, "movie.mkv")
	os.WriteFile(single, bytes.Repeat([]byte("c"), 100000), 0o644)
	return dir, single
}

func create(t *testing.T, path string, private bool) []byte {
	t.Helper()
	b, err := Create(path, CreateOptions{Tiers: [][]string{{"http://old.example/announce"}}, Private: private, CreatedBy: "test", Comment: "kept as is", Now: time.Unix(1764000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v2 builds a v2-only or hybrid torrent by hand (BEP 52 shapes; piece
// hashes are not checked by anything here).
func v2(t *testing.T, hybrid bool) []byte {
	t.Helper()
	info := map[string]any{
		"name":         "v2dir",
		"piece length": 16384,
		"meta version": 2,
		"file tree": map[string]any{
			"a.bin": map[string]any{"": map[string]any{"length": 40000, "pieces root": strings.Repeat("r", 32)}},
			"b.bin": map[string]any{"": map[string]any{"length": 10}},
		},
	}
	if hybrid {
		info["files"] = []any{
			map[string]any{"length": 40000, "path": []any{"a.bin"}},
			map[string]any{"length": 9152, "path": []any{".pad", "9152"}, "attr": "p"},
			map[string]any{"length": 10, "path": []any{"b.bin"}},
		}
		info["pieces"] = strings.Repeat("p", 20*4)
	}
	b, err := bencode.Marshal(map[string]any{"info": info, "announce": "http://old.example/announce", "piece layers": map[string]any{strings.Repeat("r", 32): strings.Repeat("h", 96)}, "x-unknown": []any{1, "two"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReannounceKeepsInfoHash(t *testing.T) {
	dir, single := fixture(t)
	cases := map[string][]byte{
		"single-file": create(t, single, false),
		"multi-file":  create(t, dir, true),
		"v2":          v2(t, false),
		"hybrid":      v2(t, true),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			f, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			before := f.Summary()
			h1, ok1 := f.InfoHashV1()
			h2, ok2 := f.InfoHashV2()
			if name == "v2" && (ok1 || !ok2) || name == "hybrid" && (!ok1 || !ok2) || strings.HasSuffix(name, "file") && (!ok1 || ok2) {
				t.Fatalf("versions: v1 %v v2 %v", ok1, ok2)
			}
			if err := f.SetTrackers(tiers); err != nil {
				t.Fatal(err)
			}
			out, _ := f.Bytes()
			g, err := Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			g1, _ := g.InfoHashV1()
			g2, _ := g.InfoHashV2()
			if g1 != h1 || g2 != h2 {
				t.Fatal("info hash changed")
			}
			// anacrolix computes the same v1 hash from the rewritten file.
			mi, err := metainfo.Load(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if mi.HashInfoBytes() != metainfo.Hash(h1) {
				t.Fatal("anacrolix sees another info hash")
			}
			a, l := g.Announce()
			if a != tiers[0][0] || len(l) != 1 || strings.Join(l[0], " ") != strings.Join(tiers[0], " ") {
				t.Fatalf("announce %q, list %v", a, l)
			}
			// Everything but the trackers is byte for byte what it was.
			for k, v := range f.top {
				if k != "announce" && k != "announce-list" && !bytes.Equal(g.top[k], v) {
					t.Fatalf("key %q changed", k)
				}
			}
			if len(g.top) < len(f.top) {
				t.Fatal("keys lost")
			}
			after := g.Summary()
			after.Announce, after.AnnounceList = before.Announce, before.AnnounceList
			if bj, _ := json.Marshal(before); string(bj) != string(must(json.Marshal(after))) {
				t.Fatalf("summary changed:\n%s\n%s", bj, must(json.Marshal(after)))
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestBadTorrents(t *testing.T) {
	good := create(t, func() string { _, s := fixture(t); return s }(), false)
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"empty":           {nil, "not a torrent"},
		"truncated":       {good[:len(good)/2], "not a torrent"},
		"list":            {[]byte("li1ee"), "not a torrent"},
		"no info":         {[]byte("d8:announce3:urle"), "no info dictionary"},
		"info not a dict": {[]byte("d4:infoi1ee"), "info dictionary"},
		"wrong types":     {[]byte("d4:infod4:name3:abc12:piece lengthi-5eee"), "piece length"},
		"no pieces":       {[]byte("d4:infod4:name3:abc12:piece lengthi16384eee"), "neither v1 pieces nor a v2 file tree"},
		"ragged pieces":   {[]byte("d4:infod6:lengthi1e4:name3:abc12:piece lengthi16384e6:pieces3:abcee"), "multiple of 20"},
		"huge":            {make([]byte, MaxSize+1), "at most"},
	} {
		if _, err := Parse(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	if err := ValidTiers([][]string{{"ftp://x/announce"}}); err == nil {
		t.Error("ftp URL accepted")
	}
	if err := ValidTiers(nil); err == nil {
		t.Error("no URL accepted")
	}
}

// TestShowGolden pins the output of `tracker torrent show` (text and JSON).
func TestShowGolden(t *testing.T) {
	dir, _ := fixture(t)
	f, err := Parse(create(t, dir, true))
	if err != nil {
		t.Fatal(err)
	}
	f.SetTrackers([][]string{{"http://a.example/announce", "http://b.example/announce"}, {"udp://c.example:80"}})
	js, _ := json.MarshalIndent(f.Summary(), "", "  ")
	for name, got := range map[string]string{"show.golden": f.Summary().Text(), "show.json.golden": string(js) + "\n"} {
		path := filepath.Join("testdata", name)
		if *update {
			os.MkdirAll("testdata", 0o755)
			os.WriteFile(path, []byte(got), 0o644)
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs:\n%s\nwant:\n%s", name, got, want)
		}
	}
}

// TestTransmissionReadsOurTorrents: transmission-show (Debian's
// transmission-cli, a widely used client's tooling) reads a torrent made by
// Create and rewritten by SetTrackers: same name, hash, trackers, files.
func TestTransmissionReadsOurTorrents(t *testing.T) {
	testkit.Clients.Require(t)
	show := testkit.Clients.Tool(t, "transmission-show", "apt-get install transmission-cli")
	dir, _ := fixture(t)
	f, err := Parse(create(t, dir, true))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetTrackers(tiers); err != nil {
		t.Fatal(err)
	}
	b, _ := f.Bytes()
	path := filepath.Join(t.TempDir(), "album.torrent")
	if err := WriteAtomic(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(show, path).CombinedOutput()
	if err != nil {
		t.Fatalf("transmission-show: %v\n%s", err, out)
	}
	h, _ := f.InfoHashV1()
	text := strings.ToLower(string(out))
	for _, want := range []string{"album", bytesHex(h[:]), "a.example", "b.example", "c.example", "track01.flac", "cover.jpg", "private"} {
		if !strings.Contains(text, want) {
			t.Errorf("transmission-show output lacks %q:\n%s", want, out)
		}
	}
}

func bytesHex(b []byte) string {
	const hx = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hx[c>>4], hx[c&15])
	}
	return string(out)
}

func TestExpand(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sub"), 0o755)
	for _, p := range []string{"a.torrent", "b.torrent", "sub/c.torrent", "sub/notes.txt"} {
		os.WriteFile(filepath.Join(root, p), []byte("x"), 0o644)
	}
	got, errs := Expand([]string{filepath.Join(root, "sub"), filepath.Join(root, "*.torrent"), filepath.Join(root, "nothing*")})
	if len(got) != 3 || len(errs) != 1 {
		t.Fatalf("got %v, errors %v", got, errs)
	}
}

func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), []byte("hello"), 0o644)
	b, _ := Create(filepath.Join(dir, "x"), CreateOptions{Tiers: tiers})
	f.Add(b)
	f.Add([]byte("d4:infod6:lengthi1e4:name3:abc12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee"))
	f.Add([]byte("d4:infod9:file treed1:ad0:d6:lengthi5eee4:name1:x12:meta versioni2e12:piece lengthi16384eee"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, cerr := Check(b)
		tf, err := Parse(b)
		if err != nil {
			return
		}
		// What Parse takes, Check took, and Check's info bytes are the
		// ones the decoder hashes: a relay that only checks and hashes
		// files a torrent under the name a node will give it.
		if cerr != nil || !bytes.Equal(info, tf.top["info"]) {
			t.Fatalf("Check disagrees with the decoder: %v", cerr)
		}
		if h, ok := tf.InfoHashV1(); ok {
			if named, err := NamedBy(b, hex.EncodeToString(h[:])); !named || err != nil {
				t.Fatalf("not named by its v1 hash: %v", err)
			}
		}
		tf.Summary()
		h1, _ := tf.InfoHashV1()
		if err := tf.SetTrackers(tiers); err != nil {
			t.Fatal(err)
		}
		out, _ := tf.Bytes()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("rewritten torrent does not parse: %v", err)
		}
		if h, _ := again.InfoHashV1(); h != h1 {
			t.Fatal("info hash changed")
		}
	})
}
