-- rtc_read.lua: read a small swarm of WebRTC peers whole, for a process's
-- read cache (rtc_soft.go); it writes nothing.
-- KEYS[1] peers, KEYS[2] owners (as rtc_announce.lua)
-- ARGV[1], ARGV[2] live leechers' range; ARGV[3], ARGV[4] live seeders'
-- ARGV[5] the most peers to return
-- Returns {leechers, seeders}, and when the swarm has at most ARGV[5] live
-- peers, then for each (leechers first) its id and the process holding its
-- socket ('' when none is recorded).
if #ARGV ~= 5 or not int(ARGV[5], 0, MAXWANT) then
  return redis.error_reply('ERR rtc read: malformed call')
end
local peers = KEYS[1]
local leechers = redis.call('ZCOUNT', peers, ARGV[1], ARGV[2])
local seeders = redis.call('ZCOUNT', peers, ARGV[3], ARGV[4])
local out = {leechers, seeders}
if leechers + seeders > tonumber(ARGV[5]) or leechers + seeders == 0 then
  return out
end
local ids = redis.call('ZRANGEBYSCORE', peers, ARGV[1], ARGV[2])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', peers, ARGV[3], ARGV[4])) do ids[#ids + 1] = m end
local owners = redis.call('HMGET', KEYS[2], unpack(ids))
for i, m in ipairs(ids) do
  out[#out + 1] = m
  out[#out + 1] = owners[i] or ''
end
return out
