-- rtc_announce.lua: one WebRTC peer's announce (or leave) and the offers it
-- sends, atomically (rtc.go builds every argument: scores and ranges are
-- made by the node, never formatted in Lua).
-- KEYS[1] peers (sorted set: peer id -> class band + last seen, ms)
-- KEYS[2] owners (hash: peer id -> process id holding its socket)
-- KEYS[3] completed counter
-- ARGV[1] peer id          ARGV[2] op: l leecher, s seeder, x stop, c socket closed
-- ARGV[3] process id       ARGV[4] the peer's score
-- ARGV[5] key TTL (ms)     ARGV[6] channel prefix (RTCChannel without the process)
-- ARGV[7] random number    ARGV[8] 1: count a completed download
-- ARGV[9] completed TTL (s)
-- ARGV[10] expired leechers' max score    ARGV[11] seeders' band start
-- ARGV[12] expired seeders' max score
-- ARGV[13], ARGV[14] live leechers' range; ARGV[15], ARGV[16] live seeders'
-- ARGV[17..] offers: each the tail of its signal (after kind and target)
-- Returns {leechers, seeders, offers sent, sent to another process, then
-- for each offer for a peer of this process (not published: the process
-- delivers it itself) the peer and the offer's number (1-based)}.

-- A call is checked before it writes: no more offers than a client sends.
local offers = #ARGV - 16
if offers > MAXOFFERS then
  return redis.error_reply('ERR rtc announce: more than ' .. MAXOFFERS .. ' offers')
end

local peers, owners = KEYS[1], KEYS[2]
local self, op, proc = ARGV[1], ARGV[2], ARGV[3]

-- Trim some expired peers, with their owners (rtc_common.lua).
rtc_trim(peers, owners, ARGV[10], ARGV[11], ARGV[12])

if op == 'x' or (op == 'c' and redis.call('HGET', owners, self) == proc) then
  redis.call('ZREM', peers, self)
  redis.call('HDEL', owners, self)
elseif op == 'l' or op == 's' then
  redis.call('ZADD', peers, ARGV[4], self)
  redis.call('HSET', owners, self, proc)
  redis.call('PEXPIRE', peers, ARGV[5])
  redis.call('PEXPIRE', owners, ARGV[5])
end
if ARGV[8] == '1' then
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end

local leechers = redis.call('ZCOUNT', peers, ARGV[13], ARGV[14])
local seeders = redis.call('ZCOUNT', peers, ARGV[15], ARGV[16])
if offers <= 0 then
  return {leechers, seeders, 0, 0}
end

-- The targets: a window of consecutive live peers from a random position
-- (a seeder's offers go to leechers only), wrapping around, skipping the
-- peer itself. Positions below the number of live leechers are leechers.
local total = leechers
if op ~= 's' then total = leechers + seeders end
local want = math.min(offers + 1, total)
local picked = {}
local pos = (total > 0) and (tonumber(ARGV[7]) % total) or 0
local got = 0
while got < want do
  local chunk
  if pos < leechers then
    chunk = redis.call('ZRANGEBYSCORE', peers, ARGV[13], ARGV[14], 'LIMIT', pos, math.min(want - got, leechers - pos))
  else
    chunk = redis.call('ZRANGEBYSCORE', peers, ARGV[15], ARGV[16], 'LIMIT', pos - leechers, math.min(want - got, total - pos))
  end
  if #chunk == 0 then break end
  for _, m in ipairs(chunk) do picked[#picked + 1] = m end
  got = got + #chunk
  pos = (pos + #chunk) % total
end

local out = {leechers, seeders, 0, 0}
local sent, remote = 0, 0
for _, m in ipairs(picked) do
  if sent >= offers then break end
  if m ~= self then
    local owner = redis.call('HGET', owners, m)
    if owner then
      sent = sent + 1
      if owner == proc then
        out[#out + 1] = m
        out[#out + 1] = sent
      else
        redis.call('PUBLISH', ARGV[6] .. owner, 'o' .. m .. ARGV[16 + sent])
        remote = remote + 1
      end
    end
  end
end
out[3], out[4] = sent, remote
return out
