package members

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
		{"name": "carol", "nodes": ["carol"], "redis_url": "redis://10.0.0.1:6379", "channel": "carol:link", "share_to": ["alice", "bob"]},
		{"name": "dave", "nodes": ["dave"], "redis_url": "redis://10.0.0.2:6379", "share_to": ["*"]}
	]}`
	ms, err := Parse("json", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 || ms[1].Prefix != "bt" || ms[1].RedisCAFile != "/ca.pem" || len(ms[0].Nodes) != 2 || len(ms[2].ShareTo) != 2 || ms[0].ShareTo != nil {
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
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1", "share_to": ["b"]}]}`, `"share_to" names "b", which is not another member`},
		{`{"members": [{"name": "a", "nodes": ["a"], "redis_url": "redis://h:1", "share_to": ["a"]}]}`, `"share_to" names "a"`},
	} {
		_, err := Parse("json", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "json") {
			t.Errorf("%s: got %v, want an error naming the file and saying %q", tc.file, err, tc.want)
		}
	}
	path := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(path, make([]byte, MaxFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("an oversized file: %v", err)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "TRACKER_HUB_MEMBERS") {
		t.Fatalf("a missing file: %v", err)
	}
}

// TestCheckLoneMemberWithoutNodes: the hub holds the members it is given
// to the file's rules, where a lone member may list no node ids.
func TestCheckLoneMemberWithoutNodes(t *testing.T) {
	if err := Check([]Roster{{Name: "a"}}, false); err != nil {
		t.Fatalf("a lone member without node ids: %v", err)
	}
	for _, rs := range [][]Roster{
		{{Name: "a"}, {Name: "b", Nodes: []string{"b"}}},
		{{Name: "a", Nodes: []string{"x"}}, {Name: "a", Nodes: []string{"y"}}},
		{{Name: "a", Nodes: []string{"x"}}, {Name: "b", Nodes: []string{"x"}}},
		{{Name: "a", Nodes: []string{"x"}, ShareTo: []string{"c"}}},
	} {
		if err := Check(rs, false); err == nil {
			t.Errorf("%+v accepted", rs)
		}
	}
}
