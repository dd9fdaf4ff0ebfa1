-- rtc_signal.lua: carry a WebRTC answer to the process holding the socket
-- of the peer it is for, if that peer is a live member of the swarm.
-- KEYS[1] peers, KEYS[2] owners (as rtc_announce.lua)
-- ARGV[1] the peer it is for   ARGV[2] the signal (kind, peer, rest)
-- ARGV[3] channel prefix       ARGV[4] this process's id
-- ARGV[5] expired leechers' max score, ARGV[6] seeders' band start,
-- ARGV[7] expired seeders' max score
-- Returns 0: no such live peer; 1: its socket is on this process (not
-- published: the process delivers it itself); 2: sent to another.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
local s = tonumber(score)
if s <= tonumber(ARGV[5]) or (s >= tonumber(ARGV[6]) and s <= tonumber(ARGV[7])) then return 0 end
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if not owner then return 0 end
if owner == ARGV[4] then return 1 end
redis.call('PUBLISH', ARGV[3] .. owner, ARGV[2])
return 2
