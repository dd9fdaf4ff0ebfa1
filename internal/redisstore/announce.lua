-- Announces, atomically. One call carries one announce or a batch of them
-- (what a pipeline worker or a UDP batch has at hand); each is handled in
-- order exactly as if it were alone. Counts are read after the write inside
-- the script, so concurrent writers can never make them drift or go
-- negative. Under Redis Cluster a call carries one announce (a script may
-- touch one slot only).
--
-- KEYS: per announce: seeders zset, leechers zset, partial seeds zset,
--       completed counter, key bindings hash, stops zset (tombstones)
-- ARGV: swarm TTL (s), completed-counter TTL (s), then per announce 9 values:
--       now (unix ms), cutoff (scores <= cutoff have expired), member,
--       op ("L" leecher, "S" seeder, "P" partial seed, "X" stopped),
--       completed ("1"/"0"), numwant, family of the candidates ("0" both,
--       "4" IPv4, "6" IPv6), create ("1" the announce may start a new
--       swarm, "0" it may not), key binding ("" off; "-" on, the announce
--       has no key; "=" and the digest of its key)
-- Reply: per announce: seeders, leechers (partial seeds included), flags
--        (+1 a completion was counted, +2 the announce started a new
--        swarm; -1 refused: a new swarm and create "0"; -2 refused: the
--        peer is live and bound to another key), n, then n candidate
--        members
local ttl, cttl = ARGV[1], ARGV[2]
local out = {}

-- A member's length tells its family: 6 or 26 bytes IPv4, 18 or 38 IPv6.
local function fits(fam, m)
  if fam == '4' then
    return #m == 6 or #m == 26
  elseif fam == '6' then
    return #m == 18 or #m == 38
  end
  return true
end

-- refuse answers an announce the script does not carry out.
local function refuse(flag)
  out[#out + 1] = 0
  out[#out + 1] = 0
  out[#out + 1] = flag
  out[#out + 1] = 0
end

-- alive reports whether member x is in set key and has not expired.
local function alive(key, x, cutoff)
  local sc = redis.call('ZSCORE', key, x)
  return sc and tonumber(sc) > cutoff
end

-- live reports whether member x is a live peer of the swarm.
local function live(S, L, P, nP, x, cutoff)
  return alive(S, x, cutoff) or alive(L, x, cutoff) or (nP > 0 and alive(P, x, cutoff))
end

-- trim removes the expired seeders and leechers of a swarm: when a peer
-- joins it, so that the sets never hold more expired members than left
-- since the last join.
local function trim(S, L, cutoff)
  redis.call('ZREMRANGEBYSCORE', S, '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', L, '-inf', cutoff)
end

local function announce(S, L, P, C, K, X, now, cutoff, m, op, completed, want, fam, create, bind)
  -- Expired peers leave by score: they are counted and sampled out by
  -- it (ZCOUNT, ZRANGE BYSCORE, scores checked), and trimmed when a peer
  -- joins the swarm's seeders or leechers (below), never on a plain
  -- re-announce, the common case; and a set's TTL is its youngest
  -- member's expiry, so a set of expired members only is gone. No sweeps.
  -- Partial seeds are rare; their set is touched only when it exists.
  local cut, live_from = cutoff, '(' .. cutoff -- as Redis takes them
  cutoff = tonumber(cutoff)
  local nP = redis.call('ZCARD', P)
  if nP > 0 then
    nP = nP - redis.call('ZREMRANGEBYSCORE', P, '-inf', cut)
  end

  -- At the node's cap on new swarms, a swarm with no live peer is not
  -- started. Checked only then.
  if create == '0' and op ~= 'X' and nP == 0 and
      redis.call('ZCOUNT', S, live_from, '+inf') + redis.call('ZCOUNT', L, live_from, '+inf') == 0 then
    refuse(-1)
    return
  end

  -- A peer's key binds it while it is live here: a change sent with
  -- another key, or none, is refused. A binding left by a peer that
  -- expired binds nothing and is replaced.
  local kd, bound = nil, false
  if bind ~= '' then
    kd = string.sub(bind, 2)
    bound = redis.call('HGET', K, m)
    if bound and bound ~= kd and live(S, L, P, nP, m, cutoff) then
      refuse(-2)
      return
    end
  end

  local counted = 0
  local new = 0
  if op == 'X' then
    local was = redis.call('ZREM', S, m) + redis.call('ZREM', L, m)
    if nP > 0 then
      local p = redis.call('ZREM', P, m)
      nP, was = nP - p, was + p
    end
    -- The stop of a live peer is remembered here too, as the hub's relays
    -- remember it elsewhere: a resync that finds an older copy of the peer
    -- on another node applies this stop there instead of bringing the peer
    -- back here. A stop of a peer not held writes nothing, so stops cannot
    -- grow the keyspace.
    if was > 0 then
      redis.call('ZREMRANGEBYSCORE', X, '-inf', cut)
      redis.call('ZADD', X, now, m)
      redis.call('EXPIRE', X, ttl)
    end
  elseif op == 'S' then
    -- A completion counts once per live peer: a repeated event=completed
    -- from a peer that is a live seeder already is not counted again.
    local was = completed == '1' and alive(S, m, cutoff)
    -- A peer is in one set at most: one already a seeder (ZADD updates
    -- its score, the common re-announce) is in no other, so the others
    -- are searched only for a peer new to this set, and only then are
    -- the expired trimmed.
    new = redis.call('ZADD', S, now, m)
    if new == 1 then
      trim(S, L, cut)
      redis.call('ZREM', L, m)
      if nP > 0 then nP = nP - redis.call('ZREM', P, m) end
    end
    redis.call('EXPIRE', S, ttl)
    if completed == '1' and not was then
      redis.call('INCR', C)
      counted = 1
    end
    -- The counter lives the completed TTL past the last seeder's announce.
    redis.call('EXPIRE', C, cttl)
  elseif op == 'P' then
    new = redis.call('ZADD', P, now, m)
    if new == 1 then
      trim(S, L, cut)
      redis.call('ZREM', S, m)
      redis.call('ZREM', L, m)
    end
    nP = nP + new
    redis.call('EXPIRE', P, ttl)
  else
    new = redis.call('ZADD', L, now, m)
    if new == 1 then
      trim(S, L, cut)
      redis.call('ZREM', S, m)
      if nP > 0 then nP = nP - redis.call('ZREM', P, m) end
    end
    redis.call('EXPIRE', L, ttl)
  end

  if kd then
    if op == 'X' or kd == '' then
      if bound then redis.call('HDEL', K, m) end
    else
      if bound ~= kd and redis.call('HSET', K, m, kd) == 1 then
        -- A new binding: probe two random ones and drop those of peers
        -- that expired. Each binding goes stale at most once, and once
        -- half are stale two probes remove one per new binding on
        -- average, so the hash stays within about twice the swarm's keyed
        -- live peers without ever being walked.
        local probe = redis.call('HRANDFIELD', K, 2)
        for i = 1, #probe do
          if probe[i] ~= m and not live(S, L, P, nP, probe[i], cutoff) then
            redis.call('HDEL', K, probe[i])
          end
        end
      end
      redis.call('EXPIRE', K, ttl)
    end
  end

  local nS = redis.call('ZCOUNT', S, live_from, '+inf')
  local nL = redis.call('ZCOUNT', L, live_from, '+inf')
  out[#out + 1] = nS
  out[#out + 1] = nL + nP
  -- A new member that is alone in the swarm started it.
  if new == 1 and nS + nL + nP == 1 then
    counted = counted + 2
  end
  out[#out + 1] = counted
  local at = #out + 1
  out[at] = 0
  if want <= 0 then
    return
  end

  -- draw returns count random members of key, which holds n live ones:
  -- expired members (those since the last join) are trimmed first, as a
  -- draw cannot tell them (drawing with scores costs more than the trim).
  local function draw(key, n, count)
    if redis.call('ZCARD', key) > n then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', cut)
    end
    return redis.call('ZRANDMEMBER', key, count)
  end

  -- take answers up to k peers of the n live ones of key: all of them
  -- when that is few (exact, by score), else a random draw.
  local function take(key, n, k)
    if n == 0 or k <= 0 then
      return
    end
    local r
    if fam == '0' then
      if n <= k then
        r = redis.call('ZRANGE', key, live_from, '+inf', 'BYSCORE')
      else
        r = draw(key, n, k)
      end
    elseif n <= 8 * k then
      -- One family only (a UDP answer): members of the other family are
      -- skipped, so draw from the whole set while it is small (exact), and
      -- four times the wanted number from a large one (enough unless the
      -- family is under about a quarter of the swarm).
      r = redis.call('ZRANGE', key, live_from, '+inf', 'BYSCORE')
    else
      r = draw(key, n, 4 * k)
    end
    for i = 1, #r do
      if fam == '0' or fits(fam, r[i]) then
        out[#out + 1] = r[i]
        out[at] = out[at] + 1
      end
    end
  end

  -- A seeder or a partial seed gets downloaders only (neither wants
  -- anything from the other); a leecher gets every kind, one more than
  -- asked for because it may draw itself.
  if op == 'L' then
    local k, all = want + 1, nS + nP + nL
    if all <= k then
      take(S, nS, k)
      take(P, nP, k)
      take(L, nL, k)
    else
      -- More peers than wanted: draw the wanted number (and one for the
      -- leecher itself) from the classes in proportion to their live
      -- counts, so that the candidates are a sample of the whole swarm,
      -- at half the draws of a full sample from each class.
      local kS, kP = math.floor(k * nS / all), math.floor(k * nP / all)
      take(S, nS, kS)
      take(P, nP, kP)
      take(L, nL, k - kS - kP)
    end
  else
    take(L, nL, want)
  end
end

for i = 0, #KEYS / 6 - 1 do
  local a = 3 + 9 * i
  local k = 6 * i
  announce(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6],
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5]), ARGV[a + 6], ARGV[a + 7], ARGV[a + 8])
end
return out
