-- Apply relayed peer changes to swarms of one node, idempotently. Changes
-- of one peer are ordered by their origin time (ms): a change not newer
-- than what the node holds is skipped, so a change applied twice, or relayed by
-- two hubs, or replayed by a resync, or arriving late, changes nothing. A
-- stop leaves a tombstone (until the peer would have expired anyway), here
-- as at the stop's origin, so that a late copy of an earlier announce
-- cannot bring the peer back; and a completion counts only when the peer
-- was not a seeder here yet.
--
-- KEYS: per swarm: seeders, leechers, partial seeds, completed counter,
--       tombstones. Under Redis Cluster a call carries one swarm (one
--       slot); on one Redis it may carry many, which saves a script call
--       per swarm.
-- ARGV: now (ms), cutoff (ms), lifetime (ms), completed TTL (s), then per
--       swarm: its number of changes n, then n times: op ("L", "P" =
--       partial seed, "S", "C" = seeder with a completion, "X" = stopped),
--       seen (ms), member
-- Reply: number of changes applied.
local now, cutoff, life = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local applied = 0
local newest = {}
-- At the same millisecond a peer may still move up this order (a leecher
-- become a partial seed or a seeder), never down: that keeps duplicates
-- harmless.
local rank = { L = 1, P = 2, S = 3, C = 3 }
local order = { 'L', 'S', 'P' }
local a = 5
for k = 1, #KEYS, 5 do
  local C, X = KEYS[k + 3], KEYS[k + 4]
  local sets = { L = KEYS[k + 1], P = KEYS[k + 2], S = KEYS[k] }
  local n = tonumber(ARGV[a])
  a = a + 1
  for i = a, a + 3 * (n - 1), 3 do
    local op, seen, m = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    if seen > cutoff then
      -- Where the peer is now: its score and class. Both scripts keep a
      -- peer in one set at most, so the search stops at the first found,
      -- leechers first (the most common), partial seeds last (the rarest).
      local cur, held = 0, nil
      for _, class in ipairs(order) do
        local sc = redis.call('ZSCORE', sets[class], m)
        if sc then
          cur, held = tonumber(sc), class
          break
        end
      end
      if op == 'X' then
        -- A stop removes a peer not seen since; for an absent peer it is
        -- news only when newer than the tombstone held (a resync carries
        -- every node's tombstones, and one already held is no change).
        local news = false
        if held then
          news = seen >= cur
        else
          local t = redis.call('ZSCORE', X, m)
          news = not t or tonumber(t) < seen
        end
        if news then
          applied = applied + 1
          if held then redis.call('ZREM', sets[held], m) end
          redis.call('ZADD', X, 'GT', seen, m)
          if (newest[X] or 0) < seen then newest[X] = seen end
        end
      elseif seen > cur or (held and seen == cur and rank[op] > rank[held]) then
        -- A tombstone matters only for an absent peer: a present one was
        -- re-added after any stop, so its score is newer than the stop.
        local t = false
        if cur == 0 then t = redis.call('ZSCORE', X, m) end
        if not t or tonumber(t) < seen then
          applied = applied + 1
          local class = op
          if op == 'C' then class = 'S' end
          if held and held ~= class then redis.call('ZREM', sets[held], m) end
          redis.call('ZADD', sets[class], seen, m)
          if (newest[sets[class]] or 0) < seen then newest[sets[class]] = seen end
          if op == 'C' and held ~= 'S' then
            redis.call('INCR', C)
            redis.call('EXPIRE', C, ARGV[4])
          end
        end
      end
    end
  end
  a = a + 3 * n
end
-- Each set written is trimmed (expiry as a side effect of writes) and
-- lives until its youngest member expires.
for key, seen in pairs(newest) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
  local want = math.floor((seen + life - now) / 1000) + 1
  if redis.call('TTL', key) < want then
    redis.call('EXPIRE', key, want)
  end
end
return applied
