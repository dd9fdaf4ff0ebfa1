package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestHubEnvironmentWithMembers: the members' file replaces
// TRACKER_REDIS_URL.
func TestHubEnvironmentWithMembers(t *testing.T) {
	if _, _, err := config.Load([]string{"TRACKER_HUB_MEMBERS=/m.json", "TRACKER_REDIS_URL=redis://h:1", "TRACKER_LINK_PASSWORD=" + testPassword}); err == nil {
		t.Fatal("TRACKER_HUB_MEMBERS beside TRACKER_REDIS_URL accepted")
	}
	if _, _, err := config.Load([]string{"TRACKER_HUB_MEMBERS=/m.json", "TRACKER_LINK_PASSWORD=" + testPassword}); err != nil {
		t.Fatal(err)
	}
}

// TestHubMembersReload: a hub started with a members file of one member
// (on a Redis that speaks only TLS and wants a client certificate) takes
// a member added to the file while it runs, relays between the two, and
// keeps its members when the file is broken; a member removed from the
// file is no longer relayed to.
func TestHubMembersReload(t *testing.T) {
	aURL, dir, ca, cc, ck := startTLSRedis(t)
	b := testkit.StartRedis(t)
	memberA := fmt.Sprintf(`{"name": "ann", "nodes": ["ann"], "redis_url": %q, "redis_ca_file": %q, "redis_cert_file": %q, "redis_key_file": %q}`, aURL, ca, cc, ck)
	memberB := fmt.Sprintf(`{"name": "bo", "nodes": ["bo"], "redis_url": %q}`, b.URL())
	path := filepath.Join(dir, "members.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"members": [` + memberA + `]}`)
	common := []string{"TRACKER_LINK_PASSWORD=" + testPassword, "TRACKER_LINK_HEARTBEAT=100ms", "TRACKER_UDP_ADDR=off", "TRACKER_HTTP_ADDR=127.0.0.1:0"}
	hubProc := startProc(t, runHub, append(common, "TRACKER_HUB_MEMBERS="+path))
	node := func(id, redisURL string, extra ...string) *proc {
		return startProc(t, runNode, append(append(common, "TRACKER_NODE_ID="+id, "TRACKER_REDIS_URL="+redisURL), extra...))
	}
	ann := node("ann", aURL, "TRACKER_REDIS_CA_FILE="+ca, "TRACKER_REDIS_CERT_FILE="+cc, "TRACKER_REDIS_KEY_FILE="+ck)
	bo := node("bo", b.URL())
	testkit.Eventually(t, 5*time.Second, "ann live at the hub", func() bool { return hubKnows(t, hubProc.url, "ann") })
	if hubKnows(t, hubProc.url, "bo") {
		t.Fatal("bo is live at the hub before it is a member")
	}

	write(`{"members": [` + memberA + `, ` + memberB + `]}`)
	took := testkit.Eventually(t, 10*time.Second, "bo live at the hub after the file listed it", func() bool { return hubKnows(t, hubProc.url, "bo") })
	t.Logf("member added %s after the file changed", took.Round(time.Millisecond))
	ih := "members-reload-0001!"
	announceTo(t, ann.url, ih, 7001, 1, "started")
	testkit.Eventually(t, 5*time.Second, "ann's peer at bo", func() bool { return scrapeOf(t, bo.url, ih).leechers == 1 })

	// A broken file changes nothing.
	write(`{"members": [` + memberA + `, {"name": "bo"}]}`)
	time.Sleep(3 * membersReload / 2)
	announceTo(t, ann.url, ih, 7002, 1, "started")
	testkit.Eventually(t, 5*time.Second, "ann's second peer at bo, the broken file ignored", func() bool { return scrapeOf(t, bo.url, ih).leechers == 2 })

	// bo removed: no longer relayed to.
	write(`{"members": [` + memberA + `]}`)
	testkit.Eventually(t, 10*time.Second, "bo gone from the hub", func() bool {
		st, err := hubStatus(hubProc.url)
		_, listed := st.Members["bo"]
		return err == nil && !listed
	})
	announceTo(t, ann.url, ih, 7003, 1, "started")
	time.Sleep(500 * time.Millisecond)
	if got := scrapeOf(t, bo.url, ih).leechers; got != 2 {
		t.Fatalf("bo holds %d peers after it left the network, want 2", got)
	}
	if got := scrapeOf(t, ann.url, ih).leechers; got != 3 {
		t.Fatalf("ann holds %d peers, want 3", got)
	}
}

// TestMembersShareOnlyWithConsent: ann's node offers a torrent and bo's
// node accepts shared torrents (each raising its flag in its own Redis):
// bo gets nothing until the hub's operator writes "share_to": ["bo"] into
// ann's entry, and then gets it. Meanwhile ann's Redis user plants the
// catalog values that crashed the hub (nested lists, 8 MB and 2 MB): the
// hub refuses and counts them, and goes on.
func TestMembersShareOnlyWithConsent(t *testing.T) {
	a, b := testkit.StartRedis(t), testkit.StartRedis(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "members.json")
	write := func(annShares string) {
		t.Helper()
		s := fmt.Sprintf(`{"members": [{"name": "ann", "nodes": ["ann"], "redis_url": %q%s}, {"name": "bo", "nodes": ["bo"], "redis_url": %q}]}`, a.URL(), annShares, b.URL())
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	common := []string{"TRACKER_LINK_PASSWORD=" + testPassword, "TRACKER_LINK_HEARTBEAT=100ms", "TRACKER_UDP_ADDR=off", "TRACKER_HTTP_ADDR=127.0.0.1:0"}
	hubProc := startProc(t, runHub, append(common, "TRACKER_HUB_MEMBERS="+path))
	annDir, boDir := t.TempDir(), t.TempDir()
	_, ih := makeTorrent(t, "private", annDir)
	name := fmt.Sprintf("%x", ih)
	// ann rescans once an hour, so what the test writes into its catalog
	// stays there.
	startProc(t, runNode, append(common, "TRACKER_NODE_ID=ann", "TRACKER_REDIS_URL="+a.URL(), "TRACKER_ALLOWED_DIR="+annDir,
		"TRACKER_ALLOWED_RESCAN=1h", "TRACKER_SHARE_OFFER=true"))
	startProc(t, runNode, append(common, "TRACKER_NODE_ID=bo", "TRACKER_REDIS_URL="+b.URL(), "TRACKER_ALLOWED_DIR="+boDir,
		"TRACKER_ALLOWED_RESCAN=200ms", "TRACKER_SHARE_ACCEPT=true"))
	testkit.Eventually(t, 5*time.Second, "ann and bo live at the hub", func() bool { return hubKnows(t, hubProc.url, "ann") && hubKnows(t, hubProc.url, "bo") })
	ctx := context.Background()
	annRDB := a.Client(t)
	testkit.Eventually(t, 5*time.Second, "ann offers its torrent", func() bool { return annRDB.HExists(ctx, "tl:{ann:catalog}", name).Val() })
	received := func() bool {
		_, err := os.Stat(filepath.Join(boDir, name+".torrent"))
		return err == nil
	}
	time.Sleep(time.Second) // the joins' resyncs
	if received() || b.Client(t).HExists(ctx, "tl:{bo:inbox}", name).Val() {
		t.Fatal("bo received ann's torrent without ann's consent")
	}

	nested := func(depth int) string {
		return "d4:info" + strings.Repeat("l", depth) + strings.Repeat("e", depth) + "e"
	}
	annRDB.HSet(ctx, "tl:{ann:catalog}", strings.Repeat("ee", 20), nested(4_000_000), strings.Repeat("dd", 20), nested(1_000_000))
	write(`, "share_to": ["bo"]`)
	took := testkit.Eventually(t, 10*time.Second, "bo received ann's torrent after share_to", received)
	t.Logf("shared %s after the members file changed", took.Round(time.Millisecond))
	testkit.Eventually(t, 5*time.Second, "the planted values refused and counted", func() bool {
		return hubCounter(t, hubProc.url, `hub_shared_refused_total{reason="too_large"}`) >= 1 &&
			hubCounter(t, hubProc.url, `hub_shared_refused_total{reason="invalid"}`) >= 1
	})
	if !hubKnows(t, hubProc.url, "bo") {
		t.Fatal("the hub stopped relaying")
	}
}
