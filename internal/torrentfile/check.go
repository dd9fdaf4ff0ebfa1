package torrentfile

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Bounds of the bencode this package hands to a decoder. Metainfo comes
// from others (an upload, another tracker's catalog), and a general
// decoder recurses once per nesting level and allocates per element: a
// few megabytes of "llll…" overflow its stack (a fatal error, not a
// panic) or take seconds and a gigabyte. Check enforces these in one
// pass of its own, with no recursion and no allocation, before any
// decoder sees the bytes.
const (
	// MaxDepth bounds nesting: the top dictionary, info, a v2 file tree
	// (one level per directory) and a file's attributes. 64 leaves room
	// for 58 directory levels.
	MaxDepth = 64
	// MaxElements bounds the values (strings, integers, lists,
	// dictionaries) of one torrent: a file of a v1 multi-file torrent
	// costs about 6 plus its path components, so this allows some 80,000
	// files. The decoder then takes about 0.25 s and 110 MB at worst
	// (measured: 2^20 values of 170,000 files, 0.46 s and 223 MB).
	MaxElements = 1 << 19
	// maxIntDigits bounds an integer's digits (an int64 has 19).
	maxIntDigits = 20
)

// ErrTooDeep, ErrTooMany: the bencode is well formed so far but beyond
// the bounds.
var (
	ErrTooDeep = fmt.Errorf("nested deeper than %d", MaxDepth)
	ErrTooMany = fmt.Errorf("more than %d values", MaxElements)
)

// Check verifies that b is exactly one bencoded dictionary within
// MaxSize, MaxDepth and MaxElements, whose keys are strings, and returns
// the raw bytes of its "info" value (nil when there is none; a second
// "info" key is an error, so that every reader hashes the same bytes).
// It reads b once, front to back, in constant memory.
func Check(b []byte) (info []byte, err error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%d bytes, at most %d", len(b), MaxSize)
	}
	if len(b) == 0 || b[0] != 'd' {
		return nil, errors.New("not a dictionary")
	}
	// stack holds, per open container, 'l' or 'd'; keyNext[i] is true
	// while dictionary i expects a key next.
	var stack [MaxDepth]byte
	var keyNext [MaxDepth]bool
	depth, elements := 0, 0
	infoStart := -1 // where the top-level info value starts, while it is read
	topKey := false // the key just read at depth 1 was "info"
	pos := 0
	for {
		if pos >= len(b) {
			return nil, errors.New("truncated")
		}
		c := b[pos]
		if c == 'e' {
			if depth == 0 {
				return nil, fmt.Errorf("unexpected 'e' at %d", pos)
			}
			if stack[depth-1] == 'd' && !keyNext[depth-1] {
				return nil, fmt.Errorf("dictionary key without a value at %d", pos)
			}
			pos++
			depth--
			if depth == 0 {
				if pos != len(b) {
					return nil, fmt.Errorf("%d bytes after the dictionary", len(b)-pos)
				}
				return info, nil
			}
			info = endValue(b, depth, pos, &infoStart, info)
			continue
		}
		elements++
		if elements > MaxElements {
			return nil, ErrTooMany
		}
		inDict := depth > 0 && stack[depth-1] == 'd'
		isKey := inDict && keyNext[depth-1]
		if isKey && (c < '0' || c > '9') {
			return nil, fmt.Errorf("dictionary key is not a string at %d", pos)
		}
		if inDict {
			keyNext[depth-1] = !isKey
		}
		if !isKey && depth == 1 && topKey {
			if info != nil {
				return nil, errors.New("two info dictionaries")
			}
			infoStart, topKey = pos, false
		}
		switch {
		case c == 'l' || c == 'd':
			if depth == MaxDepth {
				return nil, ErrTooDeep
			}
			stack[depth], keyNext[depth] = c, c == 'd'
			depth++
			pos++
			continue
		case c == 'i':
			end, err := scanInt(b, pos)
			if err != nil {
				return nil, err
			}
			pos = end
		case c >= '0' && c <= '9':
			start, end, err := scanString(b, pos)
			if err != nil {
				return nil, err
			}
			if isKey && depth == 1 {
				topKey = string(b[start:end]) == "info"
			}
			pos = end
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, pos)
		}
		if !isKey {
			info = endValue(b, depth, pos, &infoStart, info)
		}
	}
}

// endValue is called after a value (or a container) ended at pos, with
// depth the containers still open: when that value was the top-level
// info, it returns its bytes.
func endValue(b []byte, depth, pos int, infoStart *int, info []byte) []byte {
	if depth == 1 && *infoStart >= 0 {
		info = b[*infoStart:pos]
		*infoStart = -1
	}
	return info
}

// scanInt reads "i<digits>e" at pos and returns the position after it.
func scanInt(b []byte, pos int) (int, error) {
	i := pos + 1
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
		if i-start > maxIntDigits {
			return 0, fmt.Errorf("integer too long at %d", pos)
		}
	}
	if i == start || i >= len(b) || b[i] != 'e' {
		return 0, fmt.Errorf("malformed integer at %d", pos)
	}
	return i + 1, nil
}

// scanString reads "<length>:<bytes>" at pos and returns where its bytes
// start and end.
func scanString(b []byte, pos int) (start, end int, err error) {
	n, i := 0, pos
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if i-pos >= 9 { // more than 999,999,999: beyond MaxSize anyway
			return 0, 0, fmt.Errorf("string length too long at %d", pos)
		}
		n = n*10 + int(b[i]-'0')
		i++
	}
	if i >= len(b) || b[i] != ':' {
		return 0, 0, fmt.Errorf("malformed string length at %d", pos)
	}
	start = i + 1
	if n > len(b)-start {
		return 0, 0, fmt.Errorf("string of %d bytes past the end at %d", n, pos)
	}
	return start, start + n, nil
}

// NamedBy reports whether name, in hex, is one of the info hashes of the
// metainfo b: the SHA-1 of its info dictionary (v1) or the first 20 bytes
// of the SHA-256 (v2, as clients announce it). It checks b with Check and
// hashes the info bytes, without decoding anything: what a relay needs to
// know that a torrent is filed under its own name. Which of the two a
// torrent really has (pieces, a file tree) only Parse can say.
func NamedBy(b []byte, name string) (bool, error) {
	info, err := Check(b)
	if err != nil {
		return false, err
	}
	if len(info) == 0 || info[0] != 'd' {
		return false, errors.New("no info dictionary")
	}
	want, err := hex.DecodeString(name)
	if err != nil || len(want) != 20 {
		return false, nil
	}
	h1 := sha1.Sum(info)
	h2 := sha256.Sum256(info)
	return bytes.Equal(want, h1[:]) || bytes.Equal(want, h2[:20]), nil
}
