package httpapi

import (
	"net/http/httptest"
	"testing"

	"github.com/anacrolix/torrent/bencode"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestScrapeLeavesOutUnavailable: a swarm the store could not read is
// left out of files (BEP 48: no data for it) and a warning says how many.
func TestScrapeLeavesOutUnavailable(t *testing.T) {
	a, b := bittorrent.InfoHash{1}, bittorrent.InfoHash{2}
	w := httptest.NewRecorder()
	writeScrape(w, []bittorrent.Scrape{{InfoHash: a, Complete: 3}, {InfoHash: b, Unavailable: true}})
	var m map[string]any
	if err := bencode.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	files := m["files"].(map[string]any)
	if len(files) != 1 || files[string(a[:])].(map[string]any)["complete"] != int64(3) {
		t.Fatalf("files %v", files)
	}
	if m["warning message"] != "1 of the torrents asked for are unavailable now and left out; try again later" {
		t.Fatalf("warning %q", m["warning message"])
	}
	w = httptest.NewRecorder()
	writeScrape(w, []bittorrent.Scrape{{InfoHash: a}})
	if m = nil; bencode.Unmarshal(w.Body.Bytes(), &m) != nil || m["warning message"] != nil {
		t.Fatalf("a whole answer carries a warning: %q", w.Body.String())
	}
}
