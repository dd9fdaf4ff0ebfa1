-- rtc_refresh.lua: refreshes of WebRTC peers of one swarm written behind
-- (rtc_soft.go): each a peer whose socket this process holds and that
-- announced again without changing anything but when it was last seen.
-- KEYS[1] peers, KEYS[2] owners (as rtc_announce.lua)
-- ARGV[1] process id       ARGV[2] key TTL (ms)
-- ARGV[3] expired leechers' max score, ARGV[4] seeders' band start,
-- ARGV[5] expired seeders' max score
-- ARGV[6..] triples: peer id, its new score, its class band's start
-- A refresh is applied only to a peer still recorded, still held by this
-- process, in the same class and with an older score: it never adds a peer
-- (one that stopped or left since stays gone), never moves one between
-- classes, never takes one from another process, never goes back in time.
-- Returns the peers not applied because they are gone, held by another
-- process or held here in another class (the caller sends their next
-- announce to rtc_announce).
-- The whole call is checked before anything is written (as refresh.lua):
-- the TTL, the cutoffs (the seeders' one the leechers' in the seeders'
-- band), and each refresh's id, score and band start.
local function check()
  if #ARGV < 5 or (#ARGV - 5) % 3 ~= 0 or #ARGV - 5 > 3 * MAXRTCREFRESH then
    return false
  end
  if not (int(ARGV[2], 1, MAXTTL * 1000) and int(ARGV[3], 0, B - 1) and int(ARGV[4], B, 2 * B)
      and int(ARGV[5], 0, 3 * B) and tonumber(ARGV[5]) - tonumber(ARGV[4]) == tonumber(ARGV[3])) then
    return false
  end
  for i = 6, #ARGV, 3 do
    if #ARGV[i] ~= 20 or not int(ARGV[i + 1], 0, 3 * B - 1) or not int(ARGV[i + 2], 0, 2 * B)
        or tonumber(ARGV[i + 2]) % B ~= 0 then
      return false
    end
  end
  return true
end
if not check() then
  return redis.error_reply('ERR rtc refresh: malformed or too many refreshes')
end
local peers, owners, proc = KEYS[1], KEYS[2], ARGV[1]

rtc_trim(peers, owners, ARGV[3], ARGV[4], ARGV[5])

local missing = {}
local applied = 0
for i = 6, #ARGV, 3 do
  local m = ARGV[i]
  local score = redis.call('ZSCORE', peers, m)
  if not score or redis.call('HGET', owners, m) ~= proc then
    missing[#missing + 1] = m
  else
    local old, new, lo = tonumber(score), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if old < lo or old - lo >= B then
      -- Held here in another class: what this process believes of the
      -- peer is not what Redis holds, so its next announce goes to
      -- rtc_announce, which writes the class it announces.
      missing[#missing + 1] = m
    elseif old < new and new - lo < B then
      redis.call('ZADD', peers, 'XX', new, m)
      applied = applied + 1
    end
  end
end
if applied > 0 then
  redis.call('PEXPIRE', peers, ARGV[2])
  redis.call('PEXPIRE', owners, ARGV[2])
end
return missing
