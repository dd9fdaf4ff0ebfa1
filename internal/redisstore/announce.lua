-- Announces, atomically. One call carries one announce or a batch of them
-- (what a pipeline worker or a UDP batch has at hand); each is handled in
-- order exactly as if it were alone. Counts are read after the write inside
-- the script, so concurrent writers can never make them drift or go
-- negative. Under Redis Cluster a call carries one announce (a script may
-- touch one slot only).
--
-- A swarm's peers are one sorted set, whatever their class, or past 128
-- members buckets of them (swarm.lua, which the store puts in front of
-- this file): a peer's score is its class's band plus the time it was
-- last seen (unix ms), leechers in [0, B), partial seeds in [B, 2B),
-- seeders in [2B, 3B), B = 2^42 ms (year 2109). A class is counted and
-- ranged by score, a change of class is one ZADD, and a small swarm is
-- one key (see keys.go, store.go).
--
-- Every score and range arrives as a string made by the node: a number
-- turned into a string inside Redis's Lua costs more than the Redis call
-- that takes it.
--
-- KEYS: per announce: peers zset, completed counter, key bindings hash,
--       stops zset (tombstones)
-- ARGV: swarm TTL (s), completed-counter TTL (s), cutoff (unix ms: times
--       up to it have expired), then the live ranges' lower bounds of
--       leechers, partial seeds and seeders ("(" band + cutoff), then
--       the expired ranges' upper bounds (band + cutoff) in the same
--       order; then per announce 5 values:
--       score (the peer's band + now in ms; a stop: now), member,
--       flags (4 characters: op "L" leecher, "S" seeder, "P" partial
--       seed, "X" stopped; completed "1"/"0"; family of the candidates
--       "0" both, "4" IPv4, "6" IPv6; create "1" the announce may start a
--       new swarm, "0" it may not; then a random number in decimal, for
--       the sample of a large swarm), numwant, key binding ("" off; "-"
--       on, the announce has no key; "=" and the digest of its key)
-- Reply: per announce: seeders, leechers (partial seeds included), flags
--        (+1 a completion was counted, +2 the announce started a new
--        swarm; -1 refused: a new swarm and create "0"; -2 refused: the
--        peer is live and bound to another key), n, then n ranges of
--        candidate members, each an array as Redis read it or, when every
--        member of it is an IPv4 member without id (6 bytes), one string
--        of them end to end: they may hold the announcing peer and, for a
--        one-family answer, members of the other family, which the node
--        skips. Members are never copied one by one in Lua: each costs
--        more here than in the node.
--
-- This file runs once, when the library loads (functions.go): what it
-- makes (the functions below, the tables) is made once, and the function
-- it returns is the one a call runs, which sets the call's values below
-- and carries out its announces. (Made again at every call, as they once
-- were, these functions and the check cost Redis more than the
-- announce's own work: one announce took 21 µs of Redis, and takes 15
-- µs now, by redis-benchmark on the test machine.) Redis runs
-- one call at a time, and each sets every value it reads first.
local ttl, cttl, cutoff, out
-- Per class: live range (lower bound from the node, band end), and the
-- expired range (band start, upper bound from the node); the bounds from
-- the node are set by each call.
local LIVE = { [BANDS[1][1]] = { false, BANDS[1][3] }, [BANDS[2][1]] = { false, BANDS[2][3] }, [BANDS[3][1]] = { false, BANDS[3][3] } }
local GONE = { { BANDS[1][2], false }, { BANDS[2][2], false }, { BANDS[3][2], false } }
-- A swarm of at most SMALL members is answered whole (the node picks
-- numwant of them at random); a larger one is sampled.
local SMALL = 32
-- Lua's library is not there while the library loads (Redis 7.0), so
-- concat is taken by each call.
local concat

-- refuse answers an announce the script does not carry out.
local function refuse(flag)
  out[#out + 1] = 0
  out[#out + 1] = 0
  out[#out + 1] = flag
  out[#out + 1] = 0
end

-- live reports whether member x of swarm sw is there and has not
-- expired, and its class.
local function live(sw, x)
  local sc = redis.call('ZSCORE', where(sw, x), x)
  if not sc then
    return false
  end
  local c, t = class(sc)
  return t > cutoff, c
end

local function count(M, c)
  return redis.call('ZCOUNT', M, LIVE[c][1], LIVE[c][2])
end

-- trim removes the expired members of every class.
local function trim(M)
  for i = 1, 3 do
    redis.call('ZREMRANGEBYSCORE', M, GONE[i][1], GONE[i][2])
  end
end

-- The candidates of the announce being answered: at is the index in out
-- of its number of ranges, pure whether every range added so far came
-- back as one string of IPv4 members. (Functions at this level take what
-- they need as arguments: a function made inside announce would be made
-- again for every announce, and so would a cell for each local it uses.)
local at, pure = 0, true

-- add appends range r, unless empty, to the candidates: an array of
-- members, or a string of IPv4 members without ids end to end (a pack's,
-- swarm.lua).
local function add(r)
  if #r == 0 then
    return
  end
  if type(r) == 'table' then
    -- A range of IPv4 members without ids only (the common case: 6 is
    -- the shortest member, so a sum of 6 a member means every one is 6)
    -- goes back as one string of them end to end: a member given back
    -- from Lua costs Redis more than it costs Lua to join them, and
    -- the node reads one string instead of n.
    local s = concat(r)
    if #s == V4 * #r then
      r = s
    else
      pure = false
    end
  end
  out[#out + 1] = r
  out[at] = out[at] + 1
end

-- window adds w of the n members of set M from rank first on, starting
-- at a random one of them (r) and wrapping around, so that each is as
-- likely to be given as any other.
local function window(M, first, n, w, r)
  if n <= 0 or w <= 0 then
    return
  end
  if w > n then
    w = n
  end
  local off = r % n
  add(redis.call('ZRANGE', M, num(first + off), num(first + math.min(off + w, n) - 1)))
  if off + w > n then
    add(redis.call('ZRANGE', M, num(first), num(first + off + w - n - 1)))
  end
end

-- sample adds about k candidates for an announce of class op (r random)
-- from the swarm sw of set M (card members; nS, nL, nP live seeders,
-- leechers and partial seeds). A seeder or a partial seed gets
-- downloaders only (neither wants anything from the other); a leecher
-- gets every kind. Returns whether the candidates are every one the
-- announce may be given, and the set's number of members after any trim.
local function sample(M, sw, card, op, nS, nL, nP, k, r)
  local total = nS + nL + nP
  if sw.b then
    -- Each class's share of k in proportion to its count, as below; a
    -- bucketed swarm holds live members only.
    if op ~= LEECHER then
      sampleBuckets(sw, BANDS[1], nL, k, r, add)
      return nL <= k, card
    end
    local kS, kP = math.floor(k * nS / total), math.floor(k * nP / total)
    sampleBuckets(sw, BANDS[1], nL, k - kS - kP, r, add)
    sampleBuckets(sw, BANDS[3], nS, kS, math.floor(r / 4096), add)
    sampleBuckets(sw, BANDS[2], nP, kP, math.floor(r / 65536), add)
    return false, card
  end
  if card <= SMALL or total <= k then
    -- All of them: a read cannot tell expired members, so they are
    -- trimmed first when there are any.
    if op == LEECHER then
      if card > total then
        trim(M)
        card = total
      end
      add(redis.call('ZRANGE', M, '0', '-1'))
    elseif nL > 0 then
      add(redis.call('ZRANGE', M, LIVE[LEECHER][1], LIVE[LEECHER][2], 'BYSCORE'))
    end
    return true, card
  end

  -- A large swarm: each class is sampled as a window of consecutive
  -- members (by last seen) from a random rank, a class's share of the
  -- wanted in proportion to its live count. By rank, live leechers are
  -- the first nL members once the expired leechers are trimmed, and
  -- live seeders the last nS; partial seeds (rare) are ranged by score.
  if card > total then
    card = card - redis.call('ZREMRANGEBYSCORE', M, GONE[1][1], GONE[1][2])
  end
  if op ~= LEECHER then
    window(M, 0, nL, k, r)
    return nL <= k, card
  end
  local kS, kP = math.floor(k * nS / total), math.floor(k * nP / total)
  window(M, 0, nL, k - kS - kP, r)
  window(M, card - nS, nS, kS, math.floor(r / 4096))
  if kP > 0 then
    -- Partial seeds by score, as their ranks are not known.
    local off = math.floor(r / 65536) % nP
    add(redis.call('ZRANGE', M, LIVE[PARTIAL][1], LIVE[PARTIAL][2], 'BYSCORE', 'LIMIT', num(off), num(kP)))
    if off + kP > nP then
      add(redis.call('ZRANGE', M, LIVE[PARTIAL][1], LIVE[PARTIAL][2], 'BYSCORE', 'LIMIT', '0', num(off + kP - nP)))
    end
  end
  return false, card
end

-- The steps of one announce, in the order announce takes them.

-- noneLive reports whether swarm sw (set M, card members) has no live
-- peer: at the node's cap on new swarms (create "0"), an announce to such
-- a swarm would start it, and is refused. Checked only then.
local function noneLive(M, sw, card)
  if sw.b then
    return sw[SEEDER] + sw[LEECHER] + sw[PARTIAL] == 0
  end
  return card == 0 or count(M, SEEDER) + count(M, LEECHER) + count(M, PARTIAL) == 0
end

-- binding reads peer m's key binding in K, for an announce that carries
-- one (bind not ""): a peer's key binds it while it is live here, so a
-- change sent with another key, or none, is refused. A binding left by a
-- peer that expired binds nothing and is replaced. Returns the announce's
-- key digest, the binding held (false: none), and whether the announce
-- is refused.
local function binding(sw, K, m, bind)
  local kd = string.sub(bind, 2)
  local bound = redis.call('HGET', K, m)
  return kd, bound, bound and bound ~= kd and live(sw, m)
end

-- stop removes peer m (score old, in key) of swarm sw and remembers the
-- stop in X, as the hub's relays remember it elsewhere: a resync that finds
-- an older copy of the peer on another node applies this stop there
-- instead of bringing the peer back here. A stop of a peer not held
-- writes nothing, so stops cannot grow the keyspace. Returns the set's
-- number of members after.
local function stop(sw, key, X, m, old, score, card)
  if redis.call('ZREM', key, m) > 0 then
    card = card - 1
    if sw.b then
      moved(sw, m, old, nil)
    end
    redis.call('ZREMRANGEBYSCORE', X, '-inf', ARGV[3])
    redis.call('ZADD', X, score, m)
    redis.call('EXPIRE', X, ttl)
  end
  return card
end

-- wasSeeder reports whether peer m (score old, for a bucketed swarm) is
-- a live seeder already: a repeated event=completed from it is not
-- counted again.
local function wasSeeder(sw, m, old)
  if sw.b then
    return old and class(old) == SEEDER
  end
  local alive, c = live(sw, m)
  return alive and c == SEEDER
end

-- join writes peer m with score (class op) into key of swarm sw (old: its
-- score there, false if absent), trims and splits a set that a join makes
-- large, keeps the TTLs, and counts a completion once per live peer.
-- Returns the set's number of members after, 1 for a new member, and 1
-- when a completion was counted.
local function join(sw, M, C, key, m, old, score, op, completed, card)
  local was = op == SEEDER and completed == '1' and wasSeeder(sw, m, old)
  -- One ZADD moves a peer that changed class too: it updates the score.
  local new = put(sw, key, m, score, old, ttl)
  if not sw.b then
    card = card + new
    if new == 1 and card > SMALL then
      -- A join trims; a set that still reaches BUCKET is split.
      trim(M)
      card = redis.call('ZCARD', M)
      if card >= BUCKET then
        bucketize(sw, ttl)
        card = 0
      end
    end
  end
  -- The set, or the buckets hash (a bucket got its TTL in put).
  if sw.b then
    redis.call('EXPIRE', sw.N, ttl)
  else
    redis.call('EXPIRE', M, ttl)
  end
  local counted = 0
  if op == SEEDER then
    if completed == '1' and not was then
      redis.call('INCR', C)
      counted = 1
    end
    -- The counter lives the completed TTL past the last seeder's announce.
    redis.call('EXPIRE', C, cttl)
  end
  return card, new, counted
end

-- bindKey keeps peer m's key binding in K (kd: the announce's digest,
-- bound: the binding held): dropped by a stop or an announce without a
-- key, else written.
local function bindKey(sw, K, m, op, kd, bound)
  if op == STOPPED or kd == '' then
    if bound then redis.call('HDEL', K, m) end
    return
  end
  if bound ~= kd and redis.call('HSET', K, m, kd) == 1 then
    -- A new binding: probe two random ones and drop those of peers
    -- that expired. Each binding goes stale at most once, and once
    -- half are stale two probes remove one per new binding on
    -- average, so the hash stays within about twice the swarm's keyed
    -- live peers without ever being walked.
    local probe = redis.call('HRANDFIELD', K, '2')
    for i = 1, #probe do
      if probe[i] ~= m and not live(sw, probe[i]) then
        redis.call('HDEL', K, probe[i])
      end
    end
  end
  redis.call('EXPIRE', K, ttl)
end

-- counts returns the live seeders, leechers and partial seeds of swarm sw
-- (set M, card members). A set that holds exactly its live seeders and
-- leechers has no partial seeds (the rare class) to count. A bucketed
-- swarm keeps them.
local function counts(M, sw, card)
  if sw.b then
    return sw[SEEDER], sw[LEECHER], sw[PARTIAL]
  end
  local nS, nL, nP = 0, 0, 0
  if card > 0 then
    nS, nL = count(M, SEEDER), count(M, LEECHER)
    if card > nS + nL then
      nP = count(M, PARTIAL)
    end
  end
  return nS, nL, nP
end

-- candidates adds the candidates of an announce of class op that wants
-- want peers (fam its family, rnd its random number) from swarm sw (set
-- M, card members, nS, nL, nP live by class). The node skips members of
-- the other family for a one-family answer (UDP), so four times as many
-- are read for it; but an IPv4 answer first reads as many as a two-family
-- one (numwant and one for the peer itself), which is enough when every
-- member read was IPv4 (a swarm of IPv4 peers without ids, the common
-- case): then a large swarm costs a UDP announce no more than an HTTP
-- one. Otherwise that read is dropped and the larger one made.
local function candidates(M, sw, card, op, nS, nL, nP, want, fam, rnd)
  local k = want + 1
  if fam == '4' then
    local n0, all = #out, false
    all, card = sample(M, sw, card, op, nS, nL, nP, k, rnd)
    if all or pure then
      return
    end
    for i = #out, n0 + 1, -1 do
      out[i] = nil
    end
    out[at] = 0
  end
  if fam ~= '0' then
    k = 4 * k
  end
  sample(M, sw, card, op, nS, nL, nP, k, rnd)
end

-- announce carries out one announce and appends its reply to out.
local function announce(M, C, K, X, score, m, flags, want, bind)
  local op, completed, fam, create = string.sub(flags, 1, 1), string.sub(flags, 2, 2), string.sub(flags, 3, 3), string.sub(flags, 4, 4)
  -- Expired peers leave by score: they are counted and sampled out by
  -- it, and trimmed when a peer joins a large swarm or when a reply
  -- would carry them (never on a plain re-announce, the common case);
  -- and the set's TTL is its youngest member's expiry, so a set of
  -- expired members only is gone. No sweeps. A bucketed swarm holds
  -- live members only once opened (see swarm.lua).
  local card = redis.call('ZCARD', M)
  local sw = open(M, card, cutoff, GONE, ttl)
  card = sw.card
  if create == '0' and op ~= STOPPED and noneLive(M, sw, card) then
    refuse(-1)
    return
  end
  local kd, bound = nil, false
  if bind ~= '' then
    local refused
    kd, bound, refused = binding(sw, K, m, bind)
    if refused then
      refuse(-2)
      return
    end
  end

  local key = where(sw, m)
  -- A bucketed swarm keeps counts, so it reads the peer's score first.
  local old = false
  if sw.b then
    old = redis.call('ZSCORE', key, m)
  end
  local counted, new = 0, 0
  if op == STOPPED then
    card = stop(sw, key, X, m, old, score, card)
  else
    card, new, counted = join(sw, M, C, key, m, old, score, op, completed, card)
  end
  if kd then
    bindKey(sw, K, m, op, kd, bound)
  end

  local nS, nL, nP = counts(M, sw, card)
  local total = nS + nL + nP
  out[#out + 1] = nS
  out[#out + 1] = nL + nP
  -- A new member that is alone in the swarm started it.
  if new == 1 and total == 1 then
    counted = counted + 2
  end
  out[#out + 1] = counted
  at, pure = #out + 1, true
  out[at] = 0
  if want <= 0 or total == 0 then
    return
  end
  candidates(M, sw, card, op, nS, nL, nP, want, fam, tonumber(string.sub(flags, 5)))
end

-- check returns what is wrong with the call, or nil. The call is checked
-- whole before anything is written: a Redis user may call this function
-- with any keys and arguments, and then gets an error and no write. So
-- every loop here is bounded by the number of keys or by MAXB buckets
-- (swarm.lua), and every Redis call by the size of a set. An announce's
-- own values are checked with as few calls of Lua's library as can be
-- (each costs about as much as a Redis call here): its numbers by
-- tonumber, length and range (digits), its flags by one pattern.
local function check()
  local n = #KEYS / 4
  if n % 1 ~= 0 or #ARGV ~= 9 + 5 * n then
    return 'wrong number of keys or arguments'
  end
  if not (int(ARGV[1], 1, MAXTTL) and int(ARGV[2], 1, MAXTTL) and int(ARGV[3], 0, B)) then
    return 'bad TTL or cutoff'
  end
  -- A live range's lower bound is "(" and its class's expired range's
  -- upper bound.
  for i = 4, 6 do
    if not int(ARGV[i + 3], 0, 3 * B) or ARGV[i] ~= '(' .. ARGV[i + 3] then
      return 'bad range'
    end
  end
  for a = 10, #ARGV, 5 do
    local sc, f, bind = ARGV[a], ARGV[a + 2], ARGV[a + 4]
    local x = tonumber(sc)
    if not (digits(x, #sc) and x < 3 * B) then
      return 'bad score at argument ' .. a
    end
    -- At most 15 digits of random number: exact in a double.
    if not (int(ARGV[a + 3], 0, MAXWANT) and #f <= 19 and string.find(f, FLAGS)) then
      return 'bad flags or numwant at argument ' .. a
    end
    if not MEMBER[#ARGV[a + 1]] or not (bind == '' or bind == '-' or #bind == 9 and string.sub(bind, 1, 1) == '=') then
      return 'bad member or key at argument ' .. a
    end
  end
end

return function(keys, argv)
  KEYS, ARGV = keys, argv
  local bad = check()
  if bad then
    return redis.error_reply('ERR tracklink announce: ' .. bad)
  end
  ttl, cttl, cutoff, out, concat = ARGV[1], ARGV[2], tonumber(ARGV[3]), {}, table.concat
  for i = 1, 3 do
    LIVE[BANDS[i][1]][1], GONE[i][2] = ARGV[3 + i], ARGV[6 + i]
  end
  for i = 0, #KEYS / 4 - 1 do
    local a = 10 + 5 * i
    local k = 4 * i
    announce(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4],
      ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4])
  end
  local o = out
  KEYS, ARGV, out = nil, nil, nil
  return o
end
