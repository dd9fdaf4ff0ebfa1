package redisstore

import (
	"path"
	"slices"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestACLPatternsCoverTheKeys: the ACL key patterns, made from the key
// builders, match the keys they are meant to (a node's own, the hub's
// relayed ones and index parts) and not the ones they must not (the key
// bindings, another node's keys, the WebRTC keys). Redis's glob and
// path.Match agree on these patterns (no '/', no classes).
func TestACLPatternsCoverTheKeys(t *testing.T) {
	var ih bittorrent.InfoHash
	ih[0] = 0xab
	ks, err := NewKeyspace("tl", "n1")
	if err != nil {
		t.Fatal(err)
	}
	sw := ks.Swarm(ih)
	rtc := ks.RTC(ih)
	matches := func(pats []string, key string) bool {
		return slices.ContainsFunc(pats, func(p string) bool { ok, _ := path.Match(p, key); return ok })
	}
	relayed := []string{sw.Peers, sw.Bucket(3), sw.Buckets, sw.Packs(), sw.Completed, sw.Stopped}
	nodeOwn := append(slices.Clone(relayed), sw.Keys, rtc.Peers, rtc.Owners, rtc.Completed, IndexKey("tl", "n1", ih),
		AllowedKey("tl", "n1"), AllowedModeKey("tl", "n1"), CatalogKey("tl", "n1"), InboxKey("tl", "n1"), AcceptKey("tl", "n1"),
		ProcsKey("tl", "n1"), ReceivedKey("tl", "n1"), DeclinedKey("tl", "n1"), RTCChannel("tl", "n1", "p1"))
	for _, key := range nodeOwn {
		if !matches([]string{NodeKeysPattern("tl", "n1")}, key) || !matches([]string{NodeKeysPattern("tl", "*")}, key) {
			t.Errorf("%s is not in its node's pattern", key)
		}
		if matches([]string{NodeKeysPattern("tl", "n2")}, key) {
			t.Errorf("%s is in another node's pattern", key)
		}
	}
	hub := append(RelayKeyPatterns("tl"), IndexKeysPattern("tl"))
	for _, key := range append(relayed, IndexKey("tl", "n1", ih)) {
		if !matches(hub, key) {
			t.Errorf("the hub's patterns miss %s", key)
		}
	}
	for _, key := range []string{sw.Keys, rtc.Peers, rtc.Owners, rtc.Completed, ProcsKey("tl", "n1"), AllowedKey("tl", "n1")} {
		if matches(hub, key) {
			t.Errorf("the hub's read-write patterns match %s", key)
		}
	}
	if ok, _ := path.Match(RTCChannelPattern("tl", "n1"), RTCChannel("tl", "n1", "p1")); !ok {
		t.Error("RTC channel pattern misses the channel")
	}
}
