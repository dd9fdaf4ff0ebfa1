-- rtc_common.lua: what the WebRTC functions share, at the library's top
-- level (made once when the library loads).

-- rtc_trim removes some expired WebRTC peers of a swarm, with their
-- owners: at most 16 leechers scored up to leechersMax and 16 seeders
-- scored from seedersStart to seedersMax (bounded: the rest go with later
-- writes or the keys' TTL).
local function rtc_trim(peers, owners, leechersMax, seedersStart, seedersMax)
  for _, r in ipairs({{'-inf', leechersMax}, {seedersStart, seedersMax}}) do
    local gone = redis.call('ZRANGEBYSCORE', peers, r[1], r[2], 'LIMIT', 0, 16)
    if #gone > 0 then
      redis.call('ZREM', peers, unpack(gone))
      redis.call('HDEL', owners, unpack(gone))
    end
  end
end
