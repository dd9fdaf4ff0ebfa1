-- Apply relayed peer changes to one swarm of one node, idempotently: a
-- change is applied only when it is at least as recent as what the node
-- holds for that peer, so repeating or reordering relays changes nothing,
-- and a completion counts only when the peer was not a seeder here yet.
--
-- KEYS: seeders zset, leechers zset, completed counter
-- ARGV: now, cutoff, lifetime (s), completed TTL (s), then per change:
--       op ("L", "S", "C" = seeder with a completion, "X" = stopped), seen, member
-- Reply: number of changes applied.
local S, L, C = KEYS[1], KEYS[2], KEYS[3]
local now, cutoff, life = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', S, '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', L, '-inf', cutoff)
local applied = 0
local newest = {}
for i = 5, #ARGV, 3 do
  local op, seen, m = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if seen > cutoff then
    local sS = redis.call('ZSCORE', S, m)
    local sL = redis.call('ZSCORE', L, m)
    local cur = 0
    if sS then cur = tonumber(sS) end
    if sL and tonumber(sL) > cur then cur = tonumber(sL) end
    if seen >= cur then
      applied = applied + 1
      if op == 'X' then
        redis.call('ZREM', S, m)
        redis.call('ZREM', L, m)
      elseif op == 'L' then
        if sS then redis.call('ZREM', S, m) end
        redis.call('ZADD', L, seen, m)
        if (newest[L] or 0) < seen then newest[L] = seen end
      else
        if sL then redis.call('ZREM', L, m) end
        redis.call('ZADD', S, seen, m)
        if (newest[S] or 0) < seen then newest[S] = seen end
        if op == 'C' and not sS then
          redis.call('INCR', C)
          redis.call('EXPIRE', C, ARGV[4])
        end
      end
    end
  end
end
-- A set lives until its youngest member expires.
for key, seen in pairs(newest) do
  local want = seen + life - now + 1
  if redis.call('TTL', key) < want then
    redis.call('EXPIRE', key, want)
  end
end
return applied
