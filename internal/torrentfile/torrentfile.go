// Package torrentfile reads, rewrites and creates .torrent files for
// multitracker networks (BEP 12): it sets announce and announce-list while
// keeping every other byte, above all the info dictionary, so the info hash
// never changes.
package torrentfile

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// MaxSize bounds a .torrent file this package reads.
const MaxSize = 16 << 20

// File is a parsed .torrent: its top-level keys as raw bencode, so that
// whatever is not changed is written back byte for byte.
type File struct {
	top  map[string]bencode.Bytes
	Info metainfo.Info
}

// Parse reads a .torrent from its bytes.
func Parse(b []byte) (*File, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("torrent is %d bytes, at most %d", len(b), MaxSize)
	}
	// Bounded first: the decoder below recurses and allocates per value.
	if _, err := Check(b); err != nil {
		return nil, fmt.Errorf("not a torrent (bencoded dictionary): %w", err)
	}
	var top map[string]bencode.Bytes
	if err := bencode.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("not a torrent (bencoded dictionary): %w", err)
	}
	raw, ok := top["info"]
	if !ok {
		return nil, errors.New("no info dictionary")
	}
	f := &File{top: top}
	if err := bencode.Unmarshal(raw, &f.Info); err != nil {
		return nil, fmt.Errorf("info dictionary: %w", err)
	}
	if f.Info.PieceLength <= 0 {
		return nil, errors.New("info: piece length missing or not positive")
	}
	if f.Info.MetaVersion != 0 && f.Info.MetaVersion != 1 && f.Info.MetaVersion != 2 {
		return nil, fmt.Errorf("info: unknown meta version %d", f.Info.MetaVersion)
	}
	if !f.hasV1() && !f.hasV2() {
		return nil, errors.New("info: neither v1 pieces nor a v2 file tree")
	}
	if f.Info.Name == "" {
		return nil, errors.New("info: no name")
	}
	if f.hasV1() {
		if len(f.Info.Pieces)%20 != 0 {
			return nil, errors.New("info: pieces is not a multiple of 20 bytes")
		}
		var total int64
		for fi := range f.Info.UpvertedV1Files() {
			if fi.Length < 0 || fi.Length > 1<<50 {
				return nil, errors.New("info: file length out of range")
			}
			total += fi.Length
		}
		if want := (total + f.Info.PieceLength - 1) / f.Info.PieceLength; int64(len(f.Info.Pieces)/20) != want {
			return nil, fmt.Errorf("info: %d pieces for %d bytes, want %d", len(f.Info.Pieces)/20, total, want)
		}
	}
	for _, fi := range f.Info.UpvertedFiles() {
		if fi.Length < 0 || fi.Length > 1<<50 {
			return nil, errors.New("info: file length out of range")
		}
	}
	return f, nil
}

// hasV1 and hasV2 say which info hashes the torrent has: v1 needs pieces,
// v2 needs meta version 2 and a file tree (a hybrid has both).
func (f *File) hasV1() bool { return len(f.Info.Pieces) > 0 }
func (f *File) hasV2() bool { return f.Info.MetaVersion == 2 && len(f.Info.FileTree.Dir) > 0 }

// Read reads and parses a .torrent file.
func Read(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > MaxSize {
		return nil, fmt.Errorf("%s: %d bytes, at most %d", path, st.Size(), MaxSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// InfoHashV1 is the SHA-1 of the info dictionary's bytes; ok is false for a
// v2-only torrent.
func (f *File) InfoHashV1() (h [20]byte, ok bool) {
	return sha1.Sum(f.top["info"]), f.hasV1()
}

// InfoHashV2 is the SHA-256 of the info dictionary's bytes; ok is false for
// a v1-only torrent. Clients announce its first 20 bytes.
func (f *File) InfoHashV2() (h [32]byte, ok bool) {
	return sha256.Sum256(f.top["info"]), f.hasV2()
}

// Announce returns the announce URL and the announce-list tiers.
func (f *File) Announce() (string, [][]string) {
	var a string
	var l [][]string
	if b, ok := f.top["announce"]; ok {
		bencode.Unmarshal(b, &a)
	}
	if b, ok := f.top["announce-list"]; ok {
		bencode.Unmarshal(b, &l)
	}
	return a, l
}

// SetTrackers sets announce to the first URL and announce-list to the tiers.
func (f *File) SetTrackers(tiers [][]string) error {
	if err := ValidTiers(tiers); err != nil {
		return err
	}
	a, _ := bencode.Marshal(tiers[0][0])
	l, _ := bencode.Marshal(tiers)
	f.top["announce"] = a
	f.top["announce-list"] = l
	return nil
}

// ValidTiers checks tiers of tracker URLs: at least one URL, every URL
// http, https or udp with a host.
func ValidTiers(tiers [][]string) error {
	if len(tiers) == 0 || len(tiers[0]) == 0 {
		return errors.New("no announce URL")
	}
	for _, tier := range tiers {
		if len(tier) == 0 {
			return errors.New("empty tier")
		}
		for _, u := range tier {
			pu, err := url.Parse(u)
			if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https" && pu.Scheme != "udp") {
				return fmt.Errorf("announce URL %q: want http://, https:// or udp:// with a host", u)
			}
		}
	}
	return nil
}

// Bytes encodes the torrent: the top-level keys in sorted order, each value
// as it was read unless set here.
func (f *File) Bytes() ([]byte, error) {
	keys := make([]string, 0, len(f.top))
	for k := range f.top {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	buf.WriteByte('d')
	for _, k := range keys {
		kb, _ := bencode.Marshal(k)
		buf.Write(kb)
		buf.Write(f.top[k])
	}
	buf.WriteByte('e')
	return buf.Bytes(), nil
}

// WriteAtomic writes b to path through a temporary file in the same
// directory and a rename: readers see the old file or the new one, never a
// half-written one.
func WriteAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Summary is what `tracker torrent show` prints.
type Summary struct {
	Name         string     `json:"name"`
	InfoHashV1   string     `json:"info_hash_v1,omitempty"`
	InfoHashV2   string     `json:"info_hash_v2,omitempty"`
	Size         int64      `json:"size"`
	PieceLength  int64      `json:"piece_length"`
	Private      bool       `json:"private"`
	Announce     string     `json:"announce,omitempty"`
	AnnounceList [][]string `json:"announce_list,omitempty"`
	Files        []FileSum  `json:"files"`
}

// FileSum is one file of a Summary.
type FileSum struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// Summary describes the torrent.
func (f *File) Summary() Summary {
	s := Summary{Name: f.Info.BestName(), PieceLength: f.Info.PieceLength, Private: f.Info.Private != nil && *f.Info.Private}
	if h, ok := f.InfoHashV1(); ok {
		s.InfoHashV1 = hex.EncodeToString(h[:])
	}
	if h, ok := f.InfoHashV2(); ok {
		s.InfoHashV2 = hex.EncodeToString(h[:])
	}
	s.Announce, s.AnnounceList = f.Announce()
	for _, fi := range f.Info.UpvertedFiles() {
		if strings.HasPrefix(strings.Join(fi.BestPath(), "/"), ".pad/") {
			continue // BEP 47 padding
		}
		p := strings.Join(fi.BestPath(), "/")
		if p == "" {
			p = s.Name
		} else if f.Info.IsDir() {
			p = s.Name + "/" + p
		}
		s.Files = append(s.Files, FileSum{Path: p, Size: fi.Length})
		s.Size += fi.Length
	}
	return s
}

// Text formats a Summary for people.
func (s Summary) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name:          %s\n", s.Name)
	if s.InfoHashV1 != "" {
		fmt.Fprintf(&b, "info hash v1:  %s\n", s.InfoHashV1)
	}
	if s.InfoHashV2 != "" {
		fmt.Fprintf(&b, "info hash v2:  %s\n", s.InfoHashV2)
	}
	fmt.Fprintf(&b, "size:          %d bytes in %d file(s)\n", s.Size, len(s.Files))
	fmt.Fprintf(&b, "piece length:  %d\n", s.PieceLength)
	fmt.Fprintf(&b, "private:       %v\n", s.Private)
	fmt.Fprintf(&b, "announce:      %s\n", s.Announce)
	for i, tier := range s.AnnounceList {
		fmt.Fprintf(&b, "tier %d:        %s\n", i+1, strings.Join(tier, " "))
	}
	b.WriteString("files:\n")
	for _, f := range s.Files {
		fmt.Fprintf(&b, "  %12d  %s\n", f.Size, f.Path)
	}
	return b.String()
}
