package bittorrent

import "fmt"

// Names of Tracklink's own: node ids, member and hub names, key prefixes.
// They go into Redis keys, link channels and link messages, so the one
// rule for them is here, where the store, the link, the hub and the
// configuration all read it.

// MaxNameLen bounds node ids and key prefixes.
const MaxNameLen = 64

// ValidName checks a node id or key prefix: 1 to 64 characters of
// [A-Za-z0-9._-].
func ValidName(what, s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("%s must be 1 to %d characters, got %d", what, MaxNameLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%s %q: only letters, digits, '.', '_' and '-' are allowed", what, s)
		}
	}
	return nil
}
