-- Shared by the Redis scripts: put a comment in, or take it out of, the five rankings of its list
-- (KEYS[r..r+4]: top, new, best, controversial, hot). Formulas in docs/read-path.md.
-- Every script's keys come in blocks of 8 per comment: its hash, its votes, the five rankings of
-- its list (the top level, or its parent's replies), and its parent's hash (its own when it has
-- no parent). KEYS[1] is the commentable's comment count.
local Z = 1.959963984540054
local BLOCK = 8
local SORTS = {'top', 'new', 'best', 'controversial', 'hot'}  -- projectors/ranking.py's order

-- The five rankings' scores of a comment, in the order of its list's keys.
local function scores(up, down, created)
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
  return s, created, best, controversial, hot
end

-- keys[r..r+4] are the five rankings. counts_only: only the counts changed (a vote), so the
-- ranking by creation time, set when the comment was ranked first, is left as it is.
local function rank_keys(keys, r, cid, up, down, created, counts_only)
  local top, new, best, controversial, hot = scores(up, down, created)
  redis.call('ZADD', keys[r], top, cid)
  if not counts_only then redis.call('ZADD', keys[r + 1], new, cid) end
  redis.call('ZADD', keys[r + 2], best, cid)
  redis.call('ZADD', keys[r + 3], controversial, cid)
  redis.call('ZADD', keys[r + 4], hot, cid)
end

local function rank(r, cid, up, down, created, counts_only)
  rank_keys(KEYS, r, cid, up, down, created, counts_only)
end

local function unrank(r, cid)
  for k = r, r + 4 do redis.call('ZREM', KEYS[k], cid) end
end

-- A deleted comment leaves its list unless it has replies: they stay readable under it
-- ("[deleted]"), ranked by its last counts. deleted and replies as stored in its hash.
local function listed(deleted, replies)
  return deleted ~= '1' or tonumber(replies or '0') > 0
end

-- The key prefix of a list: the commentable's top level (prefix), or the replies to parent
-- (projectors/redis_keys.py's list_prefix).
local function list_prefix(prefix, parent)
  if parent and parent ~= '' then return prefix .. 'r:' .. parent .. ':' end
  return prefix
end

-- Rank the comment of block b from its stored hash, or take it out of its list (see listed).
local function place(b, cid)
  local s = redis.call('HMGET', KEYS[b], 'pos', 'up', 'down', 'created', 'deleted', 'replies')
  if not s[1] then return end
  if listed(s[5], s[6]) then
    rank(b + 2, cid, tonumber(s[2] or '0'), tonumber(s[3] or '0'), tonumber(s[4] or '0'))
  else
    unrank(b + 2, cid)
  end
end

-- A reply reached Redis after its parent's delete (they are on different partitions, so either
-- can come first): the parent, unranked when it had no replies, goes back into its list to hold
-- this one. pk is the parent's hash; its list's keys share its prefix (the same hash tag, so the
-- same slot) and are derived here because the reply's event does not name the grandparent.
local function restore_parent(pk, pid)
  local s = redis.call('HMGET', pk, 'pos', 'up', 'down', 'created', 'deleted', 'parent', 'replies')
  if not s[1] or s[5] ~= '1' or tonumber(s[7] or '0') < 1 then return end
  local base = list_prefix(string.sub(pk, 1, #pk - #pid - 2), s[6])  -- pk without 'c:<pid>'
  local keys = {}
  for _, sort in ipairs(SORTS) do
    keys[#keys + 1] = base .. 'rank:' .. sort
  end
  rank_keys(keys, 1, pid, tonumber(s[2] or '0'), tonumber(s[3] or '0'), tonumber(s[4] or '0'))
end
