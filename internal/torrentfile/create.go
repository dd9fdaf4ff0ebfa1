package torrentfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// CreateOptions says how to make a torrent.
type CreateOptions struct {
	Tiers       [][]string // announce-list; the first URL is also announce
	PieceLength int64      // 0: chosen for about 1000-2000 pieces
	Private     bool
	Comment     string
	CreatedBy   string
	Now         time.Time
}

// Create makes a v1 torrent of the file or folder at root.
func Create(root string, opt CreateOptions) ([]byte, error) {
	if err := ValidTiers(opt.Tiers); err != nil {
		return nil, err
	}
	var total int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if total == 0 {
		return nil, errors.New("nothing to share: no data in " + root)
	}
	pl := opt.PieceLength
	if pl == 0 {
		pl = min(metainfo.ChoosePieceLength(total), 16<<20)
	}
	if pl < 16<<10 || pl > 64<<20 || pl&(pl-1) != 0 {
		return nil, fmt.Errorf("piece length %d: want a power of two from 16 KiB to 64 MiB", pl)
	}
	info := metainfo.Info{PieceLength: pl}
	if err := info.BuildFromFilePath(root); err != nil {
		return nil, err
	}
	if opt.Private {
		t := true
		info.Private = &t
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		return nil, err
	}
	mi := metainfo.MetaInfo{
		InfoBytes:    infoBytes,
		Announce:     opt.Tiers[0][0],
		AnnounceList: opt.Tiers,
		Comment:      opt.Comment,
		CreatedBy:    opt.CreatedBy,
	}
	if !opt.Now.IsZero() {
		mi.CreationDate = opt.Now.Unix()
	}
	return bencode.Marshal(mi)
}

// Expand turns files, folders (every .torrent below them) and glob patterns
// into a list of files. A pattern that matches nothing is an error.
func Expand(args []string) ([]string, []error) {
	var out []string
	var errs []error
	for _, a := range args {
		matches := []string{a}
		if hasMeta(a) {
			m, err := filepath.Glob(a)
			if err != nil || len(m) == 0 {
				errs = append(errs, fmt.Errorf("%s: no file matches", a))
				continue
			}
			matches = m
		}
		for _, m := range matches {
			st, err := os.Stat(m)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !st.IsDir() {
				out = append(out, m)
				continue
			}
			filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					errs = append(errs, err)
					return nil
				}
				if d.Type().IsRegular() && filepath.Ext(p) == ".torrent" {
					out = append(out, p)
				}
				return nil
			})
		}
	}
	return out, errs
}

func hasMeta(s string) bool {
	for _, c := range s {
		if c == '*' || c == '?' || c == '[' {
			return true
		}
	}
	return false
}
