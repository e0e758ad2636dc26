-- Rank comments of ONE commentable from their stored counts, once each (a rebuild merges counts
-- without ranking, then ranks every comment at the end of its bulk pass). The keys of a comment
-- and of its list follow from the commentable's prefix and the comment's stored parent, so the
-- caller sends ids only; and each list gets one ZADD per sort for all its comments, not one per
-- comment. Undeclared keys, as in restore_parent: all share the commentable's hash tag.
-- KEYS[1]: the comment count (it routes the call to the commentable's slot).
-- ARGV[1]: the commentable's key prefix (projectors/redis_keys.py); ARGV[2..]: comment ids.
local prefix = ARGV[1]
local lists, order = {}, {}
for n = 2, #ARGV do
  local cid = ARGV[n]
  local s = redis.call('HMGET', prefix .. 'c:' .. cid,
                       'pos', 'up', 'down', 'created', 'deleted', 'replies', 'parent')
  if s[1] then
    local base = list_prefix(prefix, s[7])
    if not listed(s[5], s[6]) then
      for _, sort in ipairs(SORTS) do redis.call('ZREM', base .. 'rank:' .. sort, cid) end
    else
      local list = lists[base]
      if not list then
        list = {{}, {}, {}, {}, {}}
        lists[base] = list
        order[#order + 1] = base
      end
      local values = {scores(tonumber(s[2] or '0'), tonumber(s[3] or '0'), tonumber(s[4] or '0'))}
      for i = 1, 5 do
        local members = list[i]
        members[#members + 1] = values[i]
        members[#members + 1] = cid
      end
    end
  end
end
-- unpack() has a stack limit: at most 500 members per ZADD.
for _, base in ipairs(order) do
  for i, sort in ipairs(SORTS) do
    local members = lists[base][i]
    for start = 1, #members, 1000 do
      redis.call('ZADD', base .. 'rank:' .. sort,
                 unpack(members, start, math.min(start + 999, #members)))
    end
  end
end
return #ARGV - 1
