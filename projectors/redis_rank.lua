-- Shared by the Redis scripts: put a comment in the five rankings (KEYS[1..5]: top, new, best,
-- controversial, hot). Formulas in docs/read-path.md.
local Z = 1.959963984540054

local function rank(cid, up, down, created)
  local n = up + down
  local best = 0
  if n > 0 then
    local p = up / n
    best = (p + Z * Z / (2 * n) - Z * math.sqrt((p * (1 - p) + Z * Z / (4 * n)) / n)) / (1 + Z * Z / n)
  end
  local controversial = 0
  if up > 0 and down > 0 then
    controversial = (up + down) ^ (math.min(up, down) / math.max(up, down))
  end
  local s = up - down
  local sign = 0
  if s > 0 then sign = 1 elseif s < 0 then sign = -1 end
  local hot = sign * math.log10(math.max(math.abs(s), 1)) + (created / 1000 - 1134028003) / 45000
  redis.call('ZADD', KEYS[1], s, cid)
  redis.call('ZADD', KEYS[2], created, cid)
  redis.call('ZADD', KEYS[3], best, cid)
  redis.call('ZADD', KEYS[4], controversial, cid)
  redis.call('ZADD', KEYS[5], hot, cid)
end
