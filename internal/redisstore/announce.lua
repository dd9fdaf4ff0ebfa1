-- One announce, atomically. Counts are read after the write inside the same
-- script, so concurrent writers can never make them drift or go negative.
--
-- KEYS: seeders zset, leechers zset, completed counter
-- ARGV: now (unix ms), cutoff (scores <= cutoff have expired), swarm TTL (s), member,
--       op ("L" leecher, "S" seeder, "X" stopped), completed ("1"/"0"),
--       numwant, completed-counter TTL (s),
--       family of the candidates ("0" both, "4" IPv4 only, "6" IPv6 only)
-- Reply: {seeders, leechers, counted (1 when a completion was counted),
--         candidate members...}
local S, L, C = KEYS[1], KEYS[2], KEYS[3]
local now, cutoff, ttl, m, op = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local want = tonumber(ARGV[7])

-- Trimming expired peers is a side effect of every write: no sweeps.
redis.call('ZREMRANGEBYSCORE', S, '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', L, '-inf', cutoff)

local counted = 0
if op == 'X' then
  redis.call('ZREM', S, m)
  redis.call('ZREM', L, m)
elseif op == 'S' then
  redis.call('ZREM', L, m)
  local new = redis.call('ZADD', S, now, m)
  redis.call('EXPIRE', S, ttl)
  -- A completion counts once per peer: a repeated event=completed from a
  -- peer that already is a seeder is not counted again.
  if ARGV[6] == '1' and new == 1 then
    redis.call('INCR', C)
    counted = 1
  end
  redis.call('EXPIRE', C, ARGV[8])
else
  redis.call('ZREM', S, m)
  redis.call('ZADD', L, now, m)
  redis.call('EXPIRE', L, ttl)
  redis.call('EXPIRE', C, ARGV[8])
end

local nS = redis.call('ZCARD', S)
local nL = redis.call('ZCARD', L)
local out = {nS, nL, counted}
if want <= 0 then
  return out
end

-- A member's length tells its family: 6 or 26 bytes IPv4, 18 or 38 IPv6.
local fam = ARGV[9]
local function fits(m)
  if fam == '4' then
    return #m == 6 or #m == 26
  elseif fam == '6' then
    return #m == 18 or #m == 38
  end
  return true
end

local function take(key, n, k)
  if n == 0 or k <= 0 then
    return
  end
  local r
  if fam == '0' then
    if n <= k then
      r = redis.call('ZRANGE', key, 0, -1)
    else
      r = redis.call('ZRANDMEMBER', key, k)
    end
    for i = 1, #r do
      out[#out + 1] = r[i]
    end
    return
  end
  -- One family only (a UDP answer): members of the other family are
  -- skipped, so draw from the whole set while it is small (exact), and
  -- four times the wanted number from a large one (enough unless the
  -- family is under about a quarter of the swarm).
  if n <= 8 * k then
    r = redis.call('ZRANGE', key, 0, -1)
  else
    r = redis.call('ZRANDMEMBER', key, 4 * k)
  end
  for i = 1, #r do
    if fits(r[i]) then
      out[#out + 1] = r[i]
    end
  end
end

-- A seeder gets leechers only; a leecher gets both, one more leecher than
-- asked for because it may draw itself.
if op ~= 'S' then
  take(S, nS, want)
  take(L, nL, want + 1)
else
  take(L, nL, want)
end
return out
