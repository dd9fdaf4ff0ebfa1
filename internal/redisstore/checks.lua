-- checks.lua: how every function checks the numbers it is given, at the
-- library's top level (made once when the library loads, shared by all).

-- digits reports whether x, read by tonumber from a string of d bytes,
-- is a whole number that string wrote as the node does: decimal digits,
-- no sign, blank, exponent or leading zero. tonumber alone also takes
-- blanks around a number (Redis does not) and other spellings; a number of
-- d digits is at least 10^(d-1) (POW10, from Go) and below 10^d, which
-- none of those is. A caller's arguments are checked with it before
-- anything is written: a Redis user may call these functions with any
-- arguments (see check in announce.lua, apply.lua, refresh.lua and rtc_refresh.lua).
local function digits(x, d)
  return x and x % 1 == 0 and (x == 0 and d == 1 or POW10[d] and x >= POW10[d] and x < 10 * POW10[d])
end

-- int reports whether string s is a whole number from lo to hi, as the
-- node writes numbers (digits).
local function int(s, lo, hi)
  local x = tonumber(s)
  return digits(x, #s) and x >= lo and x <= hi
end
