// Package members reads a hub's members file (TRACKER_HUB_MEMBERS): the
// members of a network, each a tracker on its own Redis, and holds the
// one set of rules a list of members must keep, which the hub checks too.
package members

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/link"
	"github.com/tracklink/tracklink/internal/redisstore"
)

// File is the members file, as JSON.
type File struct {
	Members []Entry `json:"members"`
}

// Entry is one member as the hub's operator writes it.
type Entry struct {
	// Name identifies the member in logs, metrics and status.
	Name string `json:"name"`
	// Nodes are the member's node ids (TRACKER_NODE_ID of its nodes): the
	// hub takes messages of these ids only, and only on this member's
	// channel.
	Nodes []string `json:"nodes"`
	// RedisURL is how the hub reaches the member's Redis, with the
	// credentials the member issued (`tracker acl`'s hub user).
	RedisURL     string `json:"redis_url"`
	RedisCluster bool   `json:"redis_cluster,omitempty"`
	// TLS of a rediss:// URL, as TRACKER_REDIS_CA_FILE and friends.
	RedisCAFile   string `json:"redis_ca_file,omitempty"`
	RedisCertFile string `json:"redis_cert_file,omitempty"`
	RedisKeyFile  string `json:"redis_key_file,omitempty"`
	// The member's TRACKER_REDIS_PREFIX and TRACKER_LINK_CHANNEL, when
	// not the hub's.
	Prefix  string `json:"prefix,omitempty"`
	Channel string `json:"channel,omitempty"`
	// ShareTo names the other members whose nodes may receive the
	// .torrent files this member's nodes offer ("*": every member): the
	// member's consent, kept by the hub's operator. Default: none (its
	// own nodes share with each other).
	ShareTo []string `json:"share_to,omitempty"`
	// LinkURL is TRACKER_LINK_REDIS_URL of the single-Redis setup (no
	// members file): the link channel on a Redis of its own.
	LinkURL string `json:"-"`
}

// Roster is what the rules of a list of members look at.
type Roster struct {
	Name           string
	Nodes, ShareTo []string
}

// MaxFile bounds the file read.
const MaxFile = 1 << 20

// Read reads and checks a members file; every error names the file and,
// where it applies, the member.
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %w", err)
	}
	if len(b) > MaxFile {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s is larger than %d bytes", path, MaxFile)
	}
	return Parse(path, b)
}

// Parse checks the members file b (read from path).
func Parse(path string, b []byte) ([]Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var mf File
	if err := dec.Decode(&mf); err != nil {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s: one JSON object expected", path)
	}
	if len(mf.Members) == 0 {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s lists no members", path)
	}
	rs := make([]Roster, len(mf.Members))
	for i, m := range mf.Members {
		rs[i] = Roster{Name: m.Name, Nodes: m.Nodes, ShareTo: m.ShareTo}
	}
	if err := Check(rs, true); err != nil {
		return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s: %w", path, err)
	}
	seen := map[string]bool{}
	for i, m := range mf.Members {
		if err := m.checkRedis(seen); err != nil {
			return nil, fmt.Errorf("TRACKER_HUB_MEMBERS: %s: member %d (%q): %w", path, i+1, m.Name, err)
		}
	}
	return mf.Members, nil
}

// Check holds a list of members to the rules: valid and distinct names,
// each node id valid and one member's, "share_to" naming other members.
// With nodes, or more than one member, each must list its node ids (a
// lone member with none speaks for every node id on its channel).
func Check(rs []Roster, nodes bool) error {
	names, owner := map[string]bool{}, map[string]string{}
	for i, m := range rs {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("member %d (%q): %s", i+1, m.Name, fmt.Sprintf(format, a...))
		}
		if err := bittorrent.ValidName("name", m.Name); err != nil {
			return bad("%v", err)
		}
		if names[m.Name] {
			return bad("the name is taken by an earlier member")
		}
		names[m.Name] = true
		if len(m.Nodes) == 0 && (nodes || len(rs) > 1) {
			return bad("\"nodes\" must list the member's node ids (with more than one member, each lists the node ids it speaks for)")
		}
		for _, n := range m.Nodes {
			if err := bittorrent.ValidName("node id", n); err != nil {
				return bad("%v", err)
			}
			if o, ok := owner[n]; ok {
				return bad("node id %q is member %q's already: a node id belongs to one member", n, o)
			}
			owner[n] = m.Name
		}
	}
	for i, m := range rs {
		for _, to := range m.ShareTo {
			if to != "*" && (!names[to] || to == m.Name) {
				return fmt.Errorf("member %d (%q): \"share_to\" names %q, which is not another member (a name, or \"*\" for all)", i+1, m.Name, to)
			}
		}
	}
	return nil
}

// checkRedis checks how the hub reaches the member; seen holds the
// Redis and channel of the members before it.
func (m Entry) checkRedis(seen map[string]bool) error {
	if !strings.HasPrefix(m.RedisURL, "redis://") && !strings.HasPrefix(m.RedisURL, "rediss://") {
		return fmt.Errorf("\"redis_url\" must start with redis:// or rediss://")
	}
	if (m.RedisCAFile != "" || m.RedisCertFile != "" || m.RedisKeyFile != "") && !strings.HasPrefix(m.RedisURL, "rediss://") {
		return fmt.Errorf("TLS files are for a rediss:// URL")
	}
	if (m.RedisCertFile == "") != (m.RedisKeyFile == "") {
		return fmt.Errorf("\"redis_cert_file\" and \"redis_key_file\" go together")
	}
	if m.Prefix != "" {
		if err := bittorrent.ValidName("prefix", m.Prefix); err != nil {
			return err
		}
	}
	if m.Channel != "" && link.ValidChannel(m.Channel) != nil {
		return fmt.Errorf("\"channel\" must be a plain channel name")
	}
	// Two members on one Redis and one channel would each hear the
	// other's messages.
	where := m.where()
	if where != "" && seen[where] {
		return fmt.Errorf("shares its Redis and link channel with an earlier member: give it a channel of its own")
	}
	seen[where] = true
	return nil
}

// where is a member's Redis address(es), database and channel, for
// telling members apart ("" when the URL does not parse: the client's
// error says why), read as the Redis client reads the URL.
func (m Entry) where() string {
	w := redisstore.Where(m.RedisURL, m.RedisCluster)
	if w == "" {
		return ""
	}
	return w + " " + m.Channel
}
