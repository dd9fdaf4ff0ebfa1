package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The store's scripts run in Redis as one library of Redis Functions
// (Redis 7): announce.lua and apply.lua, each behind swarm.lua, become the
// functions <library>_announce and <library>_apply, called with FCALL.
// Those two files run once, when the library loads, and return the
// function a call runs: what they make (their functions, swarm.lua's,
// their tables) is not made again at every call, which cost more than
// an announce's own work. The other files are still the body of their
// function, run whole at every call.
// Users of nodes and of the hub may call them but may not run scripts of
// their own (EVAL, SCRIPT LOAD) or load functions (FUNCTION): a script of
// their own could loop forever after a write, which nothing but SHUTDOWN
// NOSAVE ends (SCRIPT KILL refuses a script that wrote). Loading the
// library is an administrative step, `tracker redis-setup`, run with
// credentials that may (see LoadFunctions).
//
// The library is named after a hash of its source, tracklink_<8 hex>, and
// so are its functions: the libraries of two releases coexist in one
// Redis, so that during a rolling upgrade old and new nodes each call
// their own.

// Library is the store's function library of this build.
type Library struct {
	// Name is the library's name, tracklink_<8 hex digits of the
	// SHA-256 of its sources>.
	Name string
	// Code is the library as FUNCTION LOAD takes it.
	Code string
	// announce, apply and version are its functions' names; rtcAnnounce
	// and rtcSignal the WebRTC peers' (rtc.go).
	announce, apply, version string
	rtcAnnounce, rtcSignal   string
	// rtcRead and rtcRefresh serve the WebRTC peers' soft state
	// (rtc_soft.go).
	rtcRead, rtcRefresh string
	// refresh writes refreshes behind (refresh.go).
	refresh string
}

// LibraryPrefix starts the name of every library of the store, of any
// release.
const LibraryPrefix = "tracklink_"

// Functions returns the store's function library of this build.
func Functions() Library { return library }

var library = newLibrary(swarmSrc, announceSrc, applySrc, rtcAnnounceSrc, rtcSignalSrc, refreshSrc, rtcReadSrc, rtcRefreshSrc)

// newLibrary makes the library: announce.lua and apply.lua (each behind
// the swarm layout) run once when it loads, inside a function of their
// own that returns the function a call runs; they set every per-call
// value at the start of each call (see announce.lua). The other scripts
// are each the body of their function, their top-level locals made again
// on every call, as with EVAL. Either way the scripts read KEYS and ARGV,
// the call's arguments.
func newLibrary(swarm, announce, apply, rtcAnnounce, rtcSignal, refresh, rtcRead, rtcRefresh string) Library {
	sum := sha256.Sum256([]byte(swarm + "\x00" + announce + "\x00" + apply + "\x00" + rtcAnnounce + "\x00" + rtcSignal + "\x00" + refresh + "\x00" +
		rtcRead + "\x00" + rtcRefresh + "\x00" + checksSrc + "\x00" + rtcCommonSrc + "\x00" + libraryTemplate + "\x00" + prelude()))
	name := LibraryPrefix + hex.EncodeToString(sum[:4])
	l := Library{Name: name, announce: name + "_announce", apply: name + "_apply", version: name + "_version",
		rtcAnnounce: name + "_rtc_announce", rtcSignal: name + "_rtc_signal", refresh: name + "_refresh",
		rtcRead: name + "_rtc_read", rtcRefresh: name + "_rtc_refresh"}
	l.Code = strings.NewReplacer(
		"{{name}}", name,
		"{{prelude}}", prelude(),
		"{{checks}}", checksSrc,
		"{{rtc_common}}", rtcCommonSrc,
		"{{announce}}", swarm+announce,
		"{{apply}}", swarm+apply,
		"{{rtc_announce}}", rtcAnnounce,
		"{{rtc_signal}}", rtcSignal,
		"{{refresh}}", swarm+refresh,
		"{{rtc_read}}", rtcRead,
		"{{rtc_refresh}}", rtcRefresh,
	).Replace(libraryTemplate)
	return l
}

// libraryTemplate is the library around the scripts. The version function
// (read only) tells a process that its library is loaded.
const libraryTemplate = `#!lua name={{name}}
-- Tracklink's Redis functions: made by the tracker from
-- internal/redisstore's checks.lua, rtc_common.lua, swarm.lua, announce.lua, apply.lua, refresh.lua and the rtc_*.lua, and loaded
-- by ` + "`tracker redis-setup`" + `.
{{prelude}}
{{checks}}
{{rtc_common}}
local announce = (function()
local KEYS, ARGV
{{announce}}
end)()

local apply = (function()
local KEYS, ARGV
{{apply}}
end)()

local function rtc_announce(KEYS, ARGV)
{{rtc_announce}}
end

local function rtc_signal(KEYS, ARGV)
{{rtc_signal}}
end

local function refresh(KEYS, ARGV)
{{refresh}}
end

local function rtc_read(KEYS, ARGV)
{{rtc_read}}
end

local function rtc_refresh(KEYS, ARGV)
{{rtc_refresh}}
end

redis.register_function('{{name}}_announce', announce)
redis.register_function('{{name}}_apply', apply)
redis.register_function('{{name}}_rtc_announce', rtc_announce)
redis.register_function('{{name}}_rtc_signal', rtc_signal)
redis.register_function('{{name}}_refresh', refresh)
redis.register_function{function_name = '{{name}}_rtc_read', callback = rtc_read, flags = { 'no-writes' }}
redis.register_function('{{name}}_rtc_refresh', rtc_refresh)
redis.register_function{function_name = '{{name}}_version', callback = function() return '{{name}}' end, flags = { 'no-writes' }}
`

// Bounds of what a call may ask for, which the functions check before
// they write anything (see check in announce.lua and apply.lua).
const (
	// maxTTL bounds the TTLs (s) and lifetimes (ms / 1000) a call sets.
	maxTTL = 1<<31 - 1
	// maxWant bounds numwant (the tracker's own cap is far lower).
	maxWant = 1 << 16
)

// ErrFunctionsMissing is the error of a call to a Redis that lacks this
// build's library, and of a start on one.
var ErrFunctionsMissing = errors.New("Redis lacks this release's function library " + library.Name +
	": run `tracker redis-setup` with Redis credentials that may load functions (see README, Upgrading)")

// isFunctionMissing reports whether err is Redis's answer to an FCALL of
// a function it does not have.
func isFunctionMissing(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Function not found")
}

// masters runs f on rdb, or on every master of a Redis Cluster: a
// cluster's masters each hold their own functions.
func masters(ctx context.Context, rdb redis.UniversalClient, f func(context.Context, *redis.Client) error) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, f)
	}
	c, ok := rdb.(*redis.Client)
	if !ok {
		return fmt.Errorf("redis functions: unsupported client %T", rdb)
	}
	return f(ctx, c)
}

// LoadFunctions loads this build's library into Redis (FUNCTION LOAD
// REPLACE), on every master of a Redis Cluster; a master added later
// needs it again (replicas get it from their master). The credentials
// must allow FUNCTION LOAD: an administrator's, never a node's or the
// hub's. Libraries of other releases are left alone.
func LoadFunctions(ctx context.Context, rdb redis.UniversalClient) error {
	return masters(ctx, rdb, func(ctx context.Context, c *redis.Client) error {
		if err := c.FunctionLoadReplace(ctx, library.Code).Err(); err != nil {
			return fmt.Errorf("load function library %s on %s: %w", library.Name, c.Options().Addr, err)
		}
		return nil
	})
}

// PruneFunctions deletes the store's libraries of other releases (those
// named LibraryPrefix + anything but this build's), on every master, and
// returns their names. Run it once no process of those releases runs.
func PruneFunctions(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	var mu sync.Mutex
	var gone []string
	err := masters(ctx, rdb, func(ctx context.Context, c *redis.Client) error {
		libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: LibraryPrefix + "*"}).Result()
		if err != nil {
			return fmt.Errorf("list function libraries on %s: %w", c.Options().Addr, err)
		}
		for _, l := range libs {
			if l.Name == library.Name || !strings.HasPrefix(l.Name, LibraryPrefix) {
				continue
			}
			if err := c.FunctionDelete(ctx, l.Name).Err(); err != nil {
				return fmt.Errorf("delete function library %s on %s: %w", l.Name, c.Options().Addr, err)
			}
			mu.Lock()
			gone = append(gone, l.Name)
			mu.Unlock()
		}
		return nil
	})
	return gone, err
}

// CheckFunctions reports whether Redis (every master of a Redis Cluster)
// has this build's library: nil, an error wrapping ErrFunctionsMissing, or
// the error of a Redis that did not answer. It calls the library's read-only
// version function, which every user of the store may call.
func CheckFunctions(ctx context.Context, rdb redis.UniversalClient) error {
	return masters(ctx, rdb, func(ctx context.Context, c *redis.Client) error {
		err := c.FCallRO(ctx, library.version, nil).Err()
		if isFunctionMissing(err) {
			return fmt.Errorf("%s: %w", c.Options().Addr, ErrFunctionsMissing)
		}
		return err
	})
}

// functions is how a store (or relayer) finds its library in Redis and
// what it does when Redis has lost it (a restart without its data, a
// FUNCTION FLUSH, a new master).
type functions struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	// missing counts the calls Redis answered "Function not found".
	missing atomic.Uint64
	// mu serialises reloads; tries holds the last one of each master
	// (by address; "" for a single Redis).
	mu    sync.Mutex
	tries map[string]loadTry
}

// loadTry is when this process last tried to load the library on one
// master, and whether it could.
type loadTry struct {
	at time.Time
	ok bool
}

// reloadEvery bounds how often a process whose calls find the library
// missing tries to load it itself, on each master, after a refusal.
const reloadEvery = time.Second

// ensure is the check at start: nil when Redis has the library, or when
// it did not and this process could load it (credentials that may:
// single-Redis setups without ACLs, tests; logged by the caller through
// loaded); ErrFunctionsMissing when it may not; or Redis's error.
func (f *functions) ensure(ctx context.Context) (loaded bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	err = CheckFunctions(ctx, f.rdb)
	if !errors.Is(err, ErrFunctionsMissing) {
		return false, err
	}
	if lerr := LoadFunctions(ctx, f.rdb); lerr != nil {
		return false, fmt.Errorf("%w (loading it with this process's credentials: %v)", err, lerr)
	}
	return true, nil
}

// reload is called when calls sent at sent found the library missing,
// keys being the first key of each: it counts them and tries to load the
// library on the masters of those keys only (a master that hangs costs
// nothing to the others), with this process's credentials, which a node's
// or the hub's ACL user refuses (then again at most once every
// reloadEvery). It reports whether the calls may be sent again: every one
// of those masters has the library loaded since sent.
func (f *functions) reload(ctx context.Context, sent time.Time, keys []string) bool {
	f.missing.Add(uint64(len(keys)))
	targets := map[string]*redis.Client{}
	if cc, ok := f.rdb.(*redis.ClusterClient); ok {
		for _, k := range keys {
			c, err := cc.MasterForKey(ctx, k)
			if err != nil {
				return false
			}
			targets[c.Options().Addr] = c
		}
	} else if c, ok := f.rdb.(*redis.Client); ok {
		targets[""] = c
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tries == nil {
		f.tries = map[string]loadTry{}
	}
	all := len(targets) > 0
	for addr, c := range targets {
		t := f.tries[addr]
		switch {
		case t.ok && t.at.After(sent):
			// Loaded for calls that were in flight with these.
		case !t.ok && time.Since(t.at) < reloadEvery:
			all = false
		default:
			t = loadTry{at: time.Now(), ok: c.FunctionLoadReplace(ctx, library.Code).Err() == nil}
			f.tries[addr] = t
			all = all && t.ok
		}
	}
	return all
}

// run is the one runner of the library's calls: it queues the calls sel
// (indexes into cmds; nil: all of them) with queue, and more (not nil)
// after them, in one pipeline; then, when some found the library missing
// (Redis lost it: a restart without its data, a FUNCTION FLUSH, a new
// master), it counts them, tries to load the library (reload) on the
// masters of their first keys (firstKey), and sends those again, once. A
// call whose library is still missing ends with an error wrapping
// ErrFunctionsMissing. Every call is idempotent or refused whole by a
// missing library, so sending one again is safe. Per-command errors are
// left in cmds for the caller.
func (f *functions) run(ctx context.Context, cmds []*redis.Cmd, sel []int, queue func(pipe redis.Pipeliner, i int) *redis.Cmd,
	firstKey func(i int) string, more func(pipe redis.Pipeliner)) {
	if sel == nil {
		sel = make([]int, len(cmds))
		for i := range sel {
			sel[i] = i
		}
	}
	sent := time.Now()
	pipe := f.rdb.Pipeline()
	for _, i := range sel {
		cmds[i] = queue(pipe, i)
	}
	if more != nil {
		more(pipe)
	}
	pipe.Exec(ctx) // per-command errors are read by the caller
	var retry []int
	var keys []string
	for _, i := range sel {
		if isFunctionMissing(cmds[i].Err()) {
			retry = append(retry, i)
			keys = append(keys, firstKey(i))
		}
	}
	if len(retry) == 0 {
		return
	}
	if f.reload(ctx, sent, keys) {
		pipe = f.rdb.Pipeline()
		for _, i := range retry {
			cmds[i] = queue(pipe, i)
		}
		pipe.Exec(ctx)
	}
	for _, i := range retry {
		if err := cmds[i].Err(); isFunctionMissing(err) {
			cmds[i].SetErr(missingErr(err))
		}
	}
}

// missingErr is the error of a call that found the library missing.
func missingErr(err error) error {
	return fmt.Errorf("%w (%v)", ErrFunctionsMissing, err)
}
