-- Refreshes, written behind: regular re-announces of peers the node
-- knows, which change nothing but the time each peer was last seen,
-- gathered by the node over a short window (internal/softstate) and
-- written here in one call. A refresh is an announce that the node has
-- already answered (from its read cache), so nothing is read back.
--
-- Each refresh is applied as apply.lua applies a relayed change, by its
-- time: a peer held with an older time gets the new score (one ZADD; a
-- bucketed swarm's counts follow, swarm.lua's put); a peer held with a
-- newer time is left; a peer not held (a stop came in meanwhile, from
-- this node, another replica or the link; or Redis lost it) is added
-- back only when no tombstone at least as new says it stopped, so a
-- refresh written late never brings back a stopped peer.
--
-- KEYS: per swarm: peers zset, completed counter, key bindings hash,
--       stops zset (tombstones), as announce.lua takes them
-- ARGV: swarm TTL (s), completed-counter TTL (s), cutoff (unix ms), the
--       expired ranges' upper bounds of leechers, partial seeds and
--       seeders (band + cutoff), then per swarm: flags (3 characters,
--       each "1" to extend a key's TTL: the completed counter, the key
--       bindings, the set or buckets hash; the node extends them at most
--       once per an eighth of the lifetime, see extend.go), n, then n
--       times: score (band + seen), member
-- Reply: { refreshed in place, added back }
local function check()
  if #KEYS % 4 ~= 0 or #ARGV < 6 then
    return 'wrong number of keys or arguments'
  end
  if not (int(ARGV[1], 1, MAXTTL) and int(ARGV[2], 1, MAXTTL) and int(ARGV[3], 0, B)) then
    return 'bad TTL or cutoff'
  end
  for i = 4, 6 do
    if not int(ARGV[i], 0, 3 * B) then
      return 'bad range'
    end
  end
  local a = 7
  for _ = 1, #KEYS, 4 do
    local f = ARGV[a]
    if not (f and string.find(f, '^[01][01][01]$') and ARGV[a + 1] and int(ARGV[a + 1], 0, #ARGV)) then
      return 'bad flags or count at argument ' .. a
    end
    local n = tonumber(ARGV[a + 1])
    a = a + 2
    if a + 2 * n - 1 > #ARGV then
      return 'wrong number of arguments'
    end
    for i = a, a + 2 * (n - 1), 2 do
      if not int(ARGV[i], 0, 3 * B - 1) or not MEMBER[#ARGV[i + 1]] then
        return 'bad refresh at argument ' .. i
      end
    end
    a = a + 2 * n
  end
  if a ~= #ARGV + 1 then
    return 'wrong number of arguments'
  end
end

local bad = check()
if bad then
  return redis.error_reply('ERR tracklink refresh: ' .. bad)
end

local ttl, cttl, cutoff = ARGV[1], ARGV[2], tonumber(ARGV[3])
local GONE = { { BANDS[1][2], ARGV[4] }, { BANDS[2][2], ARGV[5] }, { BANDS[3][2], ARGV[6] } }
local refreshed, added = 0, 0

-- refreshOne applies one refresh (score, member m) to the swarm of set M
-- and tombstones X, by its time; sw is the swarm as far as it was opened
-- (nil: not yet). Returns the swarm, and whether it added a peer back.
local function refreshOne(M, X, sw, score, m)
  local _, seen = class(score)
  local key, sc
  key, sc, sw = locate(sw, M, m, cutoff, GONE, ttl)
  if sc then
    local _, cur = class(sc)
    if seen > cur then
      put(sw, key, m, score, sc, ttl)
      refreshed = refreshed + 1
    elseif seen == cur then
      -- Already as new (the join was written the same millisecond):
      -- refreshed, with nothing to write.
      refreshed = refreshed + 1
    end
    return sw, false
  end
  local t = redis.call('ZSCORE', X, m)
  if t and tonumber(t) >= seen then
    return sw, false
  end
  add(sw, key, m, score, false, ttl, GONE)
  added = added + 1
  return sw, true
end

local a = 7
for k = 1, #KEYS, 4 do
  local M, C, K, X = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local flags, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  -- The swarm is opened only when a peer is not found in M (a swarm
  -- that has M is one set): a refresh of a small swarm reads no layout.
  local sw = nil
  local back = false
  for i = a, a + 2 * (n - 1), 2 do
    local score, m = ARGV[i], ARGV[i + 1]
    -- The common case in one call: a peer held in a one-set swarm with
    -- an older time, in the same band or a lower one (a newer announce
    -- of a better class; a one-set swarm keeps no counts). XX adds no
    -- one and makes no key; GT never goes back in time.
    if not (sw and sw.b) and redis.call('ZADD', M, 'XX', 'GT', 'CH', score, m) == 1 then
      refreshed = refreshed + 1
    else
      local b
      sw, b = refreshOne(M, X, sw, score, m)
      back = back or b
    end
  end
  a = a + 2 * n
  -- As an announce keeps them, when the node asks (at most once per
  -- extendEvery: extend.go says why no key expires under a live peer):
  -- the set (or the buckets hash) lives the peer lifetime and more, the
  -- completed counter the completed TTL past a seeder's announce, the
  -- bindings the lifetime. A set a peer was put back in may be new, so
  -- it gets its TTL whatever the flags say.
  if back or string.sub(flags, 3, 3) == '1' then
    if sw and sw.b then
      redis.call('EXPIRE', sw.N, ttl)
    else
      redis.call('EXPIRE', M, ttl)
    end
  end
  if string.sub(flags, 1, 1) == '1' then
    redis.call('EXPIRE', C, cttl)
  end
  if string.sub(flags, 2, 2) == '1' then
    redis.call('EXPIRE', K, ttl)
  end
end
return { refreshed, added }
