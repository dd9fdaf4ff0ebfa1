-- A swarm's peers, shared by announce.lua and apply.lua: the store puts
-- this file in front of each, in its function library (functions.go), so
-- that the layout has one author in Lua.
--
-- A swarm of fewer than BUCKET members is one sorted set, M. A larger one
-- is split by a hash of the member into b buckets, b a power of two,
-- bucket i being M .. i (keys.go names them too), and M is not there: a
-- swarm that has M is one set, with no further read. A set is split when
-- it reaches BUCKET members, so none holds more, and each stays
-- in Redis's compact encoding (listpack, up to zset-max-listpack-entries
-- members, 128 by default), which costs about a quarter of the memory of
-- the general encoding. A bucketed swarm has a hash N:
--   b        number of buckets
--   S, L, P  members held of each class (seeders, leechers, partial seeds)
--   lo       a lower bound of the oldest member's last seen (unix ms)
-- While lo is after the cutoff no member has expired, so S, L and P are the
-- live counts, exact, without a read of the buckets; writers keep them as
-- they add, move and remove members. Once lo is not after the cutoff, the
-- first writer trims every bucket, counts them again and sets lo to the
-- oldest member left (rebuild): in a steady swarm about once per peer
-- lifetime. A rebuild that leaves BUCKET / 2 members or fewer puts the
-- swarm back into one set; a bucket that reaches BUCKET doubles b (up to
-- MAXB buckets, a swarm of about 100,000 peers; past that buckets grow).
--
-- A bucketed swarm's samples are read from packs, a cache (hash Q, M's
-- name ending in "q" instead of "m"): field class letter .. bucket number,
-- value the members of that class in that bucket end to end when every
-- one is IPv4 without id (6 bytes; "-" when some are not, and those are
-- read from the bucket). A window of a pack is one string.sub: no member
-- crosses into Lua one by one, which costs Redis more than the read of
-- it. A pack is made when first read; a writer that changes which members
-- a bucket holds of a class drops that pack (moved), and a rebuild, split
-- or bucketize drops them all. Q lives ttl seconds from the last pack
-- made: as a cache it may go at any time, and then packs are made again.
-- B (the score band, 2^42), V4 (the length of an IPv4 member without its
-- peer id: the stride of packs, and of the strings of members announce.lua
-- returns), BUCKET, MAXB, the class letters and BANDS (per class, in band
-- order: letter, band start, live band end, exclusive) come from Go, in
-- the prelude (prelude.go), as do the names' ends and fields below.

-- num returns integer n as a string. A number passed to redis.call is
-- turned into a string on every call, at about the cost of a cheap
-- command; here the small ones (the offsets, counts and bucket numbers
-- that announces ask for again and again) are made once and kept, in a
-- table of at most NUMS_MAX of them (announce.lua's is made when the
-- library loads and kept across calls).
local NUMS, NUMS_MAX = {}, 4096
local function num(n)
  local s = NUMS[n]
  if not s then
    -- -0 is 0 as a key of NUMS, and "0" to Redis.
    s = n == 0 and '0' or tostring(n)
    if n >= 0 and n < NUMS_MAX and n % 1 == 0 then
      NUMS[n] = s
    end
  end
  return s
end

-- isCount reports whether n (a number or nil) is a count of members.
local function isCount(n)
  return n and n >= 0 and n < 1e15
end

-- class returns the class letter and the time of score sc.
local function class(sc)
  sc = tonumber(sc)
  if sc >= 2 * B then
    return SEEDER, sc - 2 * B
  elseif sc >= B then
    return PARTIAL, sc - B
  end
  return LEECHER, sc
end

-- hash spreads members over buckets: a polynomial of the member's bytes
-- (at most its first 18, the address and port) modulo a prime.
local function hash(m)
  local h = 0
  for i = 1, math.min(#m, 18) do
    h = (h * 251 + string.byte(m, i)) % 65521
  end
  return h
end

-- metaKey is the name of the buckets hash of the swarm of peers key M.
local function metaKey(M)
  return string.sub(M, 1, -2) .. METASUFFIX
end

-- packKey is the name of the packs hash of the swarm of peers key M.
local function packKey(M)
  return string.sub(M, 1, -2) .. PACKSUFFIX
end

local function bucketKey(sw, i)
  return sw.M .. num(i)
end

-- where is the key of the set that holds (or would hold) member m.
local function where(sw, m)
  if not sw.b then
    return sw.M
  end
  return bucketKey(sw, hash(m) % sw.b)
end

-- firstSeen returns the oldest last-seen time of key's members of a band,
-- or nil.
local function firstSeen(key, band)
  local r = redis.call('ZRANGE', key, band[2], band[3], 'BYSCORE', 'LIMIT', '0', '1', 'WITHSCORES')
  if #r == 0 then
    return nil
  end
  local _, t = class(r[2])
  return t
end

-- tally counts the members of key by class into sw and lowers sw.lo to its
-- oldest.
local function tally(sw, key)
  for c = 1, 3 do
    local band = BANDS[c]
    local n = redis.call('ZCOUNT', key, band[2], band[3])
    if n > 0 then
      sw[band[1]] = sw[band[1]] + n
      local t = firstSeen(key, band)
      if not sw.lo or t < sw.lo then
        sw.lo = t
      end
    end
  end
end

local function saveCounts(sw)
  redis.call('HSET', sw.N, FBUCKETS, sw.b, SEEDER, sw[SEEDER], LEECHER, sw[LEECHER], PARTIAL, sw[PARTIAL], FLOW, sw.lo)
end

-- split doubles the buckets: each member moves to the bucket of its hash
-- modulo the new number, i or i + b. Each bucket is written anew, as
-- Redis does not give a set that once left the compact encoding its
-- compact encoding back when it shrinks. Buckets live ttl seconds.
local function split(sw, ttl)
  local b = sw.b
  for i = 0, b - 1 do
    local key = bucketKey(sw, i)
    local all = redis.call('ZRANGE', key, '0', '-1', 'WITHSCORES')
    local keep, move = {}, {}
    for j = 1, #all, 2 do
      local to = keep
      if hash(all[j]) % (2 * b) ~= i then
        to = move
      end
      to[#to + 1] = all[j + 1]
      to[#to + 1] = all[j]
    end
    redis.call('DEL', key)
    for _, part in ipairs({ { key, keep }, { bucketKey(sw, i + b), move } }) do
      if #part[2] > 0 then
        redis.call('ZADD', part[1], unpack(part[2]))
        redis.call('EXPIRE', part[1], ttl)
      end
    end
  end
  sw.b = 2 * b
  redis.call('HSET', sw.N, FBUCKETS, sw.b)
  redis.call('DEL', packKey(sw.M))
end

-- bucketize turns a one-set swarm of live members only into buckets:
-- the set becomes bucket 0 of 1, then splits.
local function bucketize(sw, ttl)
  sw.N = metaKey(sw.M)
  sw.b, sw[SEEDER], sw[LEECHER], sw[PARTIAL], sw.lo = 1, 0, 0, 0, nil
  redis.call('DEL', packKey(sw.M))
  tally(sw, sw.M)
  redis.call('RENAME', sw.M, bucketKey(sw, 0))
  saveCounts(sw)
  redis.call('EXPIRE', sw.N, ttl)
  split(sw, ttl)
end

-- rebuild trims every bucket of the expired (gone: per band, the range of
-- expired scores), counts again, and puts a swarm left small back into
-- one set, which then lives ttl seconds; a swarm left empty has no keys.
local function rebuild(sw, gone, ttl)
  sw[SEEDER], sw[LEECHER], sw[PARTIAL], sw.lo = 0, 0, 0, nil
  redis.call('DEL', packKey(sw.M))
  for i = 0, sw.b - 1 do
    local key = bucketKey(sw, i)
    for c = 1, 3 do
      redis.call('ZREMRANGEBYSCORE', key, gone[c][1], gone[c][2])
    end
    tally(sw, key)
  end
  local total = sw[SEEDER] + sw[LEECHER] + sw[PARTIAL]
  if total > BUCKET / 2 then
    saveCounts(sw)
    return
  end
  for i = 0, sw.b - 1 do
    local key = bucketKey(sw, i)
    local all = redis.call('ZRANGE', key, '0', '-1', 'WITHSCORES')
    if #all > 0 then
      local add = {}
      for j = 1, #all, 2 do
        add[#add + 1] = all[j + 1]
        add[#add + 1] = all[j]
      end
      redis.call('ZADD', sw.M, unpack(add))
      redis.call('DEL', key)
    end
  end
  redis.call('EXPIRE', sw.M, ttl)
  redis.call('DEL', sw.N)
  sw.b, sw.card = nil, total
end

-- open reads the swarm of peers key M (its name ends in "m", its buckets
-- hash's in "n": keys.go): a one-set swarm (sw.b nil) or a bucketed one
-- whose counts are live (rebuilt when lo is not after cutoff; see rebuild
-- for gone and ttl). card is M's number of members when the caller read
-- it (a swarm that has M is one set, with no further read), or nil. The
-- buckets hash's name is not passed in, so that an announce to a one-set
-- swarm, the common case, costs no more for it.
local function open(M, card, cutoff, gone, ttl)
  local sw = { M = M, card = card, ttl = ttl }
  if card and card > 0 then
    return sw
  end
  sw.N = metaKey(M)
  local v = redis.call('HMGET', sw.N, FBUCKETS, SEEDER, LEECHER, PARTIAL, FLOW)
  if v[1] then
    sw.b, sw[SEEDER], sw[LEECHER], sw[PARTIAL], sw.lo = tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), tonumber(v[4]), tonumber(v[5])
    -- The hash is what a writer of the keyspace left, checked like an
    -- argument: the loops over buckets are bounded by b, a power of two
    -- up to MAXB (split doubles it only below MAXB), so a divisor of MAXB;
    -- the counts and lo only weigh a sample (a NaN fails every test).
    local b = sw.b
    if not (b and b >= 1 and b <= MAXB and b % 1 == 0 and MAXB % b == 0 and isCount(sw[SEEDER]) and isCount(sw[LEECHER]) and isCount(sw[PARTIAL])
        and (not v[5] or sw.lo and sw.lo >= 0 and sw.lo <= B)) then
      error('tracklink: corrupt buckets hash ' .. sw.N)
    end
    if not sw.lo or sw.lo <= cutoff then
      rebuild(sw, gone, ttl)
    end
  end
  return sw
end

-- moved updates a bucketed swarm's counts for member m that went from
-- score old (false: absent) to score new (nil: removed), and lo for a
-- member older than it, and drops the packs of the classes it left and
-- joined.
local function moved(sw, m, old, new)
  local oc, nc
  if old then
    oc = class(old)
  end
  if new then
    local t
    nc, t = class(new)
    if t < sw.lo then
      sw.lo = t
      redis.call('HSET', sw.N, FLOW, t)
    end
  end
  if oc == nc then
    return
  end
  local i = num(hash(m) % sw.b)
  if oc then
    sw[oc] = sw[oc] - 1
    redis.call('HINCRBY', sw.N, oc, '-1')
  end
  if nc then
    sw[nc] = sw[nc] + 1
    redis.call('HINCRBY', sw.N, nc, '1')
  end
  redis.call('HDEL', packKey(sw.M), (oc or nc) .. i, (nc or oc) .. i)
end

-- grow makes buckets of a one-set swarm that holds card members, when
-- BUCKET of them are live (see rebuild for gone and ttl): a set is split
-- before it could grow past BUCKET. Returns the members the set holds
-- (0 once in buckets).
local function grow(sw, card, gone, ttl)
  if card < BUCKET then
    return card
  end
  for c = 1, 3 do
    redis.call('ZREMRANGEBYSCORE', sw.M, gone[c][1], gone[c][2])
  end
  card = redis.call('ZCARD', sw.M)
  if card < BUCKET then
    return card
  end
  bucketize(sw, ttl)
  return 0
end

-- put writes member m with score sc into the set key of the swarm (old:
-- its score there, false if absent), keeps a bucketed swarm's counts, and
-- splits a set that grew too large. Returns 1 for a new member.
local function put(sw, key, m, sc, old, ttl)
  local new = redis.call('ZADD', key, sc, m)
  if not sw.b then
    return new
  end
  moved(sw, m, old, sc)
  redis.call('EXPIRE', key, ttl)
  if new == 1 and sw.b < MAXB and redis.call('ZCARD', key) >= BUCKET then
    split(sw, ttl)
  end
  return new
end

-- add is put for a member that may be new to the swarm: a one-set
-- swarm's members are counted as they come (its size read once a call,
-- then counted), and the set is made buckets when due (grow, with gone).
-- Returns what put does.
local function add(sw, key, m, sc, old, ttl, gone)
  local new = put(sw, key, m, sc, old, ttl)
  if new == 1 and not sw.b then
    if sw.card then
      sw.card = sw.card + 1
    else
      sw.card = redis.call('ZCARD', sw.M)
    end
    sw.card = grow(sw, sw.card, gone, ttl)
  end
  return new
end

-- pack returns the pack of a class (band, a BANDS entry) in bucket i of
-- a bucketed swarm, made from the bucket if there is none: a string of
-- the members end to end, or false when some are not 6 bytes.
local function pack(sw, band, i)
  local q, f = packKey(sw.M), band[1] .. num(i)
  local p = redis.call('HGET', q, f)
  if not p then
    local r = redis.call('ZRANGE', bucketKey(sw, i), band[2], band[3], 'BYSCORE')
    p = table.concat(r)
    if #p ~= V4 * #r then
      p = '-'
    end
    redis.call('HSET', q, f, p)
    redis.call('EXPIRE', q, sw.ttl)
  end
  return p ~= '-' and p
end

-- sampleBuckets reads up to k live members of class c (a BANDS entry)
-- from a bucketed swarm that holds n of them, into add: from a random
-- bucket (r) at a random offset, then on through the next buckets,
-- wrapping around, so that each member is about as likely as any other
-- to be read (buckets differ in size only by the spread of the hash).
-- A bucket's members are read from its pack (a string.sub of it, given
-- to add as a string) or, when it has none, from the bucket.
local function sampleBuckets(sw, band, n, k, r, add)
  if n <= 0 or k <= 0 then
    return
  end
  if k > n then
    k = n
  end
  local b = sw.b
  local first = r % b
  local off = math.floor(r / b) % math.max(1, math.floor(n / b))
  for j = 0, b do
    local limit = k
    if j == b then
      -- Back at the first bucket: the members skipped by the offset.
      limit = math.min(k, off)
    end
    if limit <= 0 then
      return
    end
    local i = (first + j) % b
    local from = j == 0 and off or 0
    local p, got = pack(sw, band, i), 0
    if p then
      got = math.max(0, math.min(limit, #p / V4 - from))
      if got > 0 then
        add(string.sub(p, V4 * from + 1, V4 * (from + got)))
      end
    else
      local m = redis.call('ZRANGE', bucketKey(sw, i), band[2], band[3], 'BYSCORE', 'LIMIT', num(from), num(limit))
      add(m)
      got = #m
    end
    k = k - got
    if k <= 0 then
      return
    end
  end
end

-- locate returns where peer m of the swarm of peers key M is now: the
-- set that holds or would hold it, and its score there (false: absent).
-- The swarm is opened at its first change that is not a peer found in M
-- (a swarm that has M is one set): a relayed re-announce, the common case,
-- costs no read of the layout. Returns the swarm too (sw, or the one
-- opened, or a bare one of M). apply and refresh share it.
local function locate(sw, M, m, cutoff, gone, ttl)
  local key = M
  if sw and sw.b then
    key = where(sw, m)
  end
  local sc = redis.call('ZSCORE', key, m)
  if not sc and not sw then
    sw = open(M, redis.call('ZCARD', M), cutoff, gone, ttl)
    if sw.b then
      key = where(sw, m)
      sc = redis.call('ZSCORE', key, m)
    end
  end
  return key, sc, sw or { M = M }
end
