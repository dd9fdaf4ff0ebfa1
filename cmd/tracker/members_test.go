package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMembersFile: what a members file may say, and the error each
// mistake gets (naming the file and the member).
func TestMembersFile(t *testing.T) {
	good := `{"members": [
		{"name": "alice", "nodes": ["alice1", "alice2"], "redis_url": "redis://tl-hub:pw@10.0.0.1:6379"},
		{"name": "bob", "nodes": ["bob"], "redis_url": "rediss://tl-hub:pw@bob.example:6380", "redis_ca_file": "/ca.pem", "prefix": "bt", "channel": "bt:link"},
		{"name": "carol", "nodes": ["carol"], "redis_url": "redis://10.0.0.1:6379", "channel": "carol:link"}
	]}`
	ms, err := parseMembers("members.json", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || ms[1].Prefix != "bt" || ms[1].RedisCAFile != "/ca.pem" || len(ms[0].Nodes) != 2 {
		t.Fatalf("parsed %+v", ms)
	}
	for _, tc := range []struct{ file, want string }{
		{`{"members": []}`, "lists no members"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1", "passwd": "x"}]}`, `unknown field "passwd"`},
		{`{"members": [{"name": "a b", "nodes": ["a"], "redis_url": "redis://h:1"}]}`, `member 1 ("a b"): name "a b"`},
		{`{"members": [{"name": "a", "redis_url": "redis://h:1"}]}`, `"nodes" must list`},
		{`{"members": [{"name": "a", "nodes": ["{x}"], "redis_url": "redis://h:1"}]}`, "node id"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "h:1"}]}`, "must start with redis://"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1", "redis_ca_file": "/ca"}]}`, "TLS files are for a rediss:// URL"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "rediss://h:1", "redis_cert_file": "/c"}]}`, "go together"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1", "channel": "x*"}]}`, "plain channel name"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1"}, {"name": "a", "nodes": ["b"], "redis_url": "redis://g:1"}]}`, "name is taken"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1"}, {"name": "b", "nodes": ["a"], "redis_url": "redis://g:1"}]}`, `node id "a" is member "a"'s already`},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1"}, {"name": "b", "nodes": ["b"], "redis_url": "redis://u:p@h:1"}]}`, "shares its Redis and link channel"},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1"}]} {}`, "one JSON object"},
	} {
		_, err := parseMembers("members.json", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "members.json") {
			t.Errorf("%s: got %v, want an error naming the file and saying %q", tc.file, err, tc.want)
		}
	}
	path := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(path, make([]byte, maxMembersFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readMembers(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("an oversized file: %v", err)
	}
	if _, err := readMembers(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "TRACKER_HUB_MEMBERS") {
		t.Fatalf("a missing file: %v", err)
	}
	// The hub's environment: the members' file replaces TRACKER_REDIS_URL.
	if _, _, err := loadConfig([]string{"TRACKER_HUB_MEMBERS=/m.json", "TRACKER_REDIS_URL=redis://h:1", "TRACKER_LINK_PASSWORD=" + testPassword}); err == nil {
		t.Fatal("TRACKER_HUB_MEMBERS beside TRACKER_REDIS_URL accepted")
	}
	if _, _, err := loadConfig([]string{"TRACKER_HUB_MEMBERS=/m.json", "TRACKER_LINK_PASSWORD=" + testPassword}); err != nil {
		t.Fatal(err)
	}
}
