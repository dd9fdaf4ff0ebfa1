package redisstore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// The prelude: every value that both the Go code and the scripts rely on
// is written here, from the Go constants, into Lua locals in front of the
// scripts (functions.go puts it at the head of the library). The scripts
// hold no such literal of their own (TestScriptsTakeGoValues): the score
// bands, the lengths a member may have, the sizes of buckets, the op and
// class letters, the ends of a swarm's key names that the scripts make
// from its peers key's, the fields of a bucketed swarm's hash, and the
// bounds of a call's arguments.

// bucketSize is swarm.lua's BUCKET: a swarm of this many members or more
// is held in buckets, and no bucket grows to more (but past maxBuckets).
const bucketSize = 128

// The letters of the ops and classes (opLetter), in the scripts'
// arguments, the bucketed swarm's hash fields of its counts (S, L, P) and
// its packs' fields.
const (
	letterLeecher   = "L"
	letterPartial   = "P"
	letterSeeder    = "S"
	letterCompleted = "C" // a seeder whose completion was counted at its origin (apply.lua)
	letterStopped   = "X"
)

// The fields of a bucketed swarm's hash besides its counts: its number of
// buckets and the lower bound of its oldest member's last seen.
const (
	metaFieldBuckets = "b"
	metaFieldLow     = "lo"
)

// metaFields are the fields of a bucketed swarm's hash as buckets.go reads
// them (HMGET) and swarm.lua's open does.
var metaFields = []string{metaFieldBuckets, letterSeeder, letterLeecher, letterPartial, metaFieldLow}

// prelude returns the Lua locals the scripts take from Go; POW10[n] is the
// least number of n digits (up to 15 digits: exact in a double), made
// once at load.
func prelude() string {
	pow := make([]string, 15)
	for i, p := 0, int64(1); i < len(pow); i, p = i+1, p*10 {
		pow[i] = strconv.FormatInt(p, 10)
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("-- Made from the Go code (prelude.go): the scripts hold none of these values.\n")
	w("local MEMBER = { [%d] = true, [%d] = true, [%d] = true, [%d] = true }\n",
		bittorrent.PeerLen4, bittorrent.PeerLen6, bittorrent.PeerLen4WithID, bittorrent.PeerLen6WithID)
	w("local V4 = %d\n", bittorrent.PeerLen4)
	w("local MAXTTL, MAXWANT, MAXOFFERS = %d, %d, %d\n", maxTTL, maxWant, bittorrent.MaxOffers)
	w("local POW10 = { %s }\n", strings.Join(pow, ", "))
	w("local B = %d\n", band)
	w("local MAXRTCREFRESH = %d\n", maxRTCRefresh)
	w("local BUCKET, MAXB = %d, %d\n", bucketSize, maxBuckets)
	w("local LEECHER, PARTIAL, SEEDER, COMPLETED, STOPPED = %q, %q, %q, %q, %q\n",
		letterLeecher, letterPartial, letterSeeder, letterCompleted, letterStopped)
	// The classes in band order: letter, band start, live band end
	// (exclusive).
	w("local BANDS = {\n")
	for _, op := range bandOrder {
		w("  { %q, '%d', '(%d' },\n", opLetter(op, false), classBand(op), classBand(op)+band)
	}
	w("}\n")
	// Each op letter of a relayed change: its band start (a stop's
	// score is its time alone), and, for a class, its rank at one
	// millisecond (Supersedes; apply.lua decides a stop before ranks).
	w("local BAND_OF, RANK = {}, {}\n")
	for _, c := range []struct {
		op         bittorrent.ChangeOp
		completion bool
	}{{bittorrent.OpLeecher, false}, {bittorrent.OpPartial, false}, {bittorrent.OpSeeder, false}, {bittorrent.OpSeeder, true}, {bittorrent.OpStopped, false}} {
		l := opLetter(c.op, c.completion)
		w("BAND_OF[%q] = %d\n", l, changeScore(c.op, 0))
		if c.op != bittorrent.OpStopped {
			w("RANK[%q] = %d\n", l, classRank(c.op))
		}
	}
	// An announce's flags (announce.lua): op, completed, family, create,
	// then a random number.
	w("local FLAGS = '^[%s%s%s%s][01][046][01]%%d+$'\n", letterLeecher, letterSeeder, letterPartial, letterStopped)
	w("local METASUFFIX, PACKSUFFIX = %q, %q\n", metaSuffix, packsSuffix)
	w("local FBUCKETS, FLOW = %q, %q\n", metaFieldBuckets, metaFieldLow)
	return b.String()
}
