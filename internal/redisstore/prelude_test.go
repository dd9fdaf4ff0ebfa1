package redisstore

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/testkit"
)

// TestScriptsTakeGoValues: Go is the only author of what the scripts rely
// on. The scripts' code (comments aside) holds none of the values the
// prelude makes from Go: no score band, bucket size or member length as a
// number, no op or class letter, key suffix or hash field as a string, and
// no local of the prelude defined again.
func TestScriptsTakeGoValues(t *testing.T) {
	comment := regexp.MustCompile(`--[^\n]*`)
	numbers := []int64{band, 2 * band, 3 * band, bucketSize, maxBuckets, maxTTL} // (small ones such as 6 or 10 are also plain arithmetic)
	var quoted []string
	for _, s := range append([]string{letterLeecher, letterPartial, letterSeeder, letterCompleted, letterStopped,
		metaSuffix, packsSuffix}, metaFields...) {
		quoted = append(quoted, "'"+s+"'", `"`+s+`"`)
	}
	defined := regexp.MustCompile(`(?m)^local ([A-Za-z0-9_, ]+)=`).FindAllStringSubmatch(prelude(), -1)
	if len(defined) < 10 {
		t.Fatalf("prelude defines %d lines of locals", len(defined))
	}
	for name, src := range map[string]string{"swarm.lua": swarmSrc, "announce.lua": announceSrc, "apply.lua": applySrc,
		"rtc_announce.lua": rtcAnnounceSrc, "rtc_signal.lua": rtcSignalSrc} {
		code := comment.ReplaceAllString(src, "")
		for _, n := range numbers {
			if regexp.MustCompile(`\b` + strconv.FormatInt(n, 10) + `\b`).MatchString(code) {
				t.Errorf("%s writes %d, which the prelude has from Go", name, n)
			}
		}
		for _, q := range quoted {
			if strings.Contains(code, q) {
				t.Errorf("%s writes %s, which the prelude has from Go", name, q)
			}
		}
		for _, d := range defined {
			for _, v := range strings.Split(d[1], ",") {
				v = strings.TrimSpace(v)
				if regexp.MustCompile(`(?m)^\s*local\s+` + v + `\b`).MatchString(code) {
					t.Errorf("%s defines %s again", name, v)
				}
			}
		}
	}
}

// TestPreludeMatchesGo: the prelude's values are the Go code's, read back
// from Lua through a real Redis (EVAL of the prelude and an expression).
func TestPreludeMatchesGo(t *testing.T) {
	rdb := testkit.SharedRedis(t).Client(t)
	eval := func(expr string) string {
		t.Helper()
		v, err := rdb.Eval(t.Context(), prelude()+"return tostring("+expr+")", nil).Text()
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	for expr, want := range map[string]string{
		"B":                strconv.FormatInt(band, 10),
		"BUCKET":           strconv.Itoa(bucketSize),
		"MAXB":             strconv.Itoa(maxBuckets),
		"V4":               strconv.Itoa(bittorrent.PeerLen4),
		"STOPPED":          opLetter(bittorrent.OpStopped, false),
		"COMPLETED":        opLetter(bittorrent.OpSeeder, true),
		"BANDS[3][1]":      opLetter(bittorrent.OpSeeder, false),
		"BANDS[2][2]":      strconv.FormatInt(classBand(bittorrent.OpPartial), 10),
		"BANDS[1][3]":      "(" + strconv.FormatInt(band, 10),
		"BAND_OF[SEEDER]":  strconv.FormatInt(changeScore(bittorrent.OpSeeder, 0), 10),
		"BAND_OF[STOPPED]": "0",
		"RANK[PARTIAL] > RANK[LEECHER] and RANK[SEEDER] > RANK[PARTIAL] and RANK[COMPLETED] == RANK[SEEDER]": "true",
		"METASUFFIX": metaSuffix,
		"PACKSUFFIX": packsSuffix,
		"FLOW":       metaFieldLow,
	} {
		if got := eval(expr); got != want {
			t.Errorf("%s = %s in Lua, %s in Go", expr, got, want)
		}
	}
	ks, _ := NewKeyspace("tl", "n1")
	sw := ks.Swarm(bittorrent.InfoHash{1})
	if got := eval("string.sub('" + sw.Peers + "', 1, -2) .. METASUFFIX"); got != sw.Buckets {
		t.Errorf("Lua names the buckets hash %s, Go %s", got, sw.Buckets)
	}
}
