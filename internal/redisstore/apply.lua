-- Apply relayed peer changes to swarms of one node, idempotently. Changes
-- of one peer are ordered by their origin time (ms): a change not newer
-- than what the node holds is skipped, so a change applied twice, or relayed by
-- two hubs, or replayed by a resync, or arriving late, changes nothing. A
-- stop leaves a tombstone (until the peer would have expired anyway), here
-- as at the stop's origin, so that a late copy of an earlier announce
-- cannot bring the peer back; and a completion counts only when the peer
-- was not a seeder here yet.
--
-- KEYS: per swarm: peers (scored by class band + time, as in
--       announce.lua; in buckets past 128 members, see swarm.lua, which
--       the store puts in front of this file), completed counter,
--       tombstones. Under Redis Cluster
--       a call carries one swarm (one slot); on one Redis it may carry
--       many, which saves a script call per swarm.
-- ARGV: now (ms), cutoff (ms), lifetime (ms), completed TTL (s), then the
--       expired ranges' upper bounds of leechers, partial seeds and
--       seeders (band + cutoff), then per swarm: its number of changes n,
--       then n times: op ("L", "P" = partial seed, "S", "C" = seeder with
--       a completion, "X" = stopped), score (the class's band + seen, in
--       ms; a stop: seen), member. Scores and ranges arrive as strings
--       made by the hub: a number turned into a string inside Redis's Lua
--       costs more than the call that takes it.
-- Reply: number of changes applied.

-- check returns what is wrong with the call, or nil. The call is checked
-- whole before anything is written: a Redis user may call this function
-- with any keys and arguments, and then gets an error and no write. So
-- every loop here is bounded by the number of arguments or by MAXB
-- buckets (swarm.lua), and every Redis call by the size of a set. The op
-- letters are those of BAND_OF (from Go, in the prelude).
local function check()
  if #KEYS % 3 ~= 0 or #ARGV < 7 then
    return 'wrong number of keys or arguments'
  end
  if not (int(ARGV[1], 0, B) and int(ARGV[2], 0, B) and int(ARGV[3], 1000, 1000 * MAXTTL) and int(ARGV[4], 1, MAXTTL)) then
    return 'bad times'
  end
  for i = 5, 7 do
    if not int(ARGV[i], 0, 3 * B) then
      return 'bad range'
    end
  end
  local a = 8
  for _ = 1, #KEYS, 3 do
    if not int(ARGV[a], 0, #ARGV) then
      return 'bad count at argument ' .. a
    end
    local n = tonumber(ARGV[a])
    a = a + 1
    if a + 3 * n - 1 > #ARGV then
      return 'wrong number of arguments'
    end
    for i = a, a + 3 * (n - 1), 3 do
      if not BAND_OF[ARGV[i]] or not int(ARGV[i + 1], 0, 3 * B - 1) or not MEMBER[#ARGV[i + 2]] then
        return 'bad change at argument ' .. i
      end
    end
    a = a + 3 * n
  end
  if a ~= #ARGV + 1 then
    return 'wrong number of arguments'
  end
end

-- This file runs once, when the library loads (as announce.lua does):
-- the function it returns is a call, and sets the call's values below
-- before anything reads them.
-- ttl: buckets written, and sets made by a split or a merge, live the
-- peer lifetime.
local now, cutoff, life, ttl, applied
-- The expired ranges (band start, upper bound from the caller).
local GONE = { { BANDS[1][2], false }, { BANDS[2][2], false }, { BANDS[3][2], false } }
-- The newest change written per key: sets of peers (their swarm in
-- swarms) and tombstones (in tombs).
local newest, swarms, tombs
-- At the same millisecond a peer may still move up in RANK (a leecher
-- become a partial seed or a seeder), never down: that keeps duplicates
-- harmless (redisstore.Supersedes is the rule, and RANK comes from it).

local function wrote(key, seen)
  if (newest[key] or 0) < seen then newest[key] = seen end
end


-- applyStop applies a stop of peer m seen at seen (score) to swarm sw,
-- the peer being held in key with score sc (class held, last seen cur)
-- or absent (held nil). A stop removes a peer not seen since; for an
-- absent peer it is news only when newer than the tombstone held in X (a
-- resync carries every node's tombstones, and one already held is no
-- change).
local function applyStop(sw, key, X, m, score, seen, sc, held, cur)
  local news = false
  if held then
    news = seen >= cur
  else
    local t = redis.call('ZSCORE', X, m)
    news = not t or tonumber(t) < seen
  end
  if not news then
    return
  end
  applied = applied + 1
  if held then
    redis.call('ZREM', key, m)
    if sw.b then moved(sw, m, sc, nil) end
  end
  redis.call('ZADD', X, 'GT', score, m)
  tombs[X] = true
  wrote(X, seen)
end

-- applyPeer applies an announce of peer m (op, score, seen) to swarm sw
-- of set M (as applyStop for key, sc, held and cur), when it is newer
-- than the peer held, or as new and of a higher RANK, and newer than its
-- stop. Reports whether it wrote.
local function applyPeer(sw, M, C, X, key, m, op, score, seen, sc, held, cur)
  if not (seen > cur or (held and seen == cur and RANK[op] > RANK[held])) then
    return false
  end
  -- A tombstone matters only for an absent peer: a present one was
  -- re-added after any stop, so its score is newer than the stop.
  local t = false
  if cur == 0 then t = redis.call('ZSCORE', X, m) end
  if t and tonumber(t) >= seen then
    return false
  end
  applied = applied + 1
  -- One ZADD moves a peer that changed class too.
  add(sw, key, m, score, sc, ttl, GONE)
  swarms[key] = sw
  wrote(key, seen)
  if op == COMPLETED and held ~= SEEDER then
    redis.call('INCR', C)
    redis.call('EXPIRE', C, ARGV[4])
  end
  return true
end

-- applySwarm applies the n changes from ARGV[a] on to the swarm of keys
-- M, C, X.
local function applySwarm(M, C, X, a, n)
  local sw = nil
  local top = 0
  for i = a, a + 3 * (n - 1), 3 do
    local op, score, m = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local seen = tonumber(score) - BAND_OF[op]
    if seen > cutoff then
      local key, sc
      key, sc, sw = locate(sw, M, m, cutoff, GONE, ttl)
      -- Where the peer is now: its class and time.
      local cur, held = 0, nil
      if sc then
        held, cur = class(sc)
      end
      if op == STOPPED then
        applyStop(sw, key, X, m, score, seen, sc, held, cur)
      elseif applyPeer(sw, M, C, X, key, m, op, score, seen, sc, held, cur) and seen > top then
        top = seen
      end
    end
  end
  -- A bucket written lives ttl (put), and so does the buckets hash.
  if sw and sw.b and top > 0 then
    redis.call('EXPIRE', sw.N, ttl)
  end
end

-- settle gives each key written the TTL of its youngest member's expiry,
-- and trims a one-set swarm written (expiry as a side effect of writes);
-- the buckets of a bucketed one were given their TTL as they were written,
-- and hold live members only once opened.
local function settle()
  for key, seen in pairs(newest) do
    local sw = swarms[key]
    if not (sw and sw.b) then
      if tombs[key] then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
      else
        for i = 1, 3 do
          redis.call('ZREMRANGEBYSCORE', key, GONE[i][1], GONE[i][2])
        end
      end
      local want = math.floor((seen + life - now) / 1000) + 1
      if redis.call('TTL', key) < want then
        redis.call('EXPIRE', key, want)
      end
    end
  end
end

return function(keys, argv)
  KEYS, ARGV = keys, argv
  local bad = check()
  if bad then
    return redis.error_reply('ERR tracklink apply: ' .. bad)
  end
  now, cutoff, life = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
  for i = 1, 3 do
    GONE[i][2] = ARGV[4 + i]
  end
  ttl, applied = num(math.floor(life / 1000) + 1), 0
  newest, swarms, tombs = {}, {}, {}
  local a = 8
  for k = 1, #KEYS, 3 do
    local n = tonumber(ARGV[a])
    applySwarm(KEYS[k], KEYS[k + 1], KEYS[k + 2], a + 1, n)
    a = a + 1 + 3 * n
  end
  settle()
  KEYS, ARGV, newest, swarms, tombs = nil, nil, nil, nil, nil
  return applied
end
