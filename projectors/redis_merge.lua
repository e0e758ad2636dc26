-- Merge pre-folded changes of ONE commentable into a generation being rebuilt (see
-- projectors/compaction.py). Keys as in redis_scores.lua; ``rank`` comes from redis_rank.lua.
-- KEYS[1]: the comment count; then a block of 8 keys per comment (see redis_rank.lua) when
--   ranking, or of 3 when not (its hash, its votes, its parent's hash).
-- ARGV[1]: '1' to rank the comments now, '0' to leave that to redis_rerank.lua.
-- ARGV[2]: msgpack array, per comment: {block index, comment id, change}, the change being
--   projectors/compaction.py's CommentChange as an array: {commentable, first position, last
--   position, created ms (-1: not posted in this change), deleted (bool), up delta, down delta,
--   {user = vote, ...}, parent id ('' for none), depth} (one argument: far cheaper to send than
--   one per value).
-- A change at or below the stored position is skipped. Returns the ids of comments whose stored
-- position falls inside their change (part-applied by an interrupted run): the caller applies
-- their events one at a time instead.
local out = {}

local function flush(command, key, args)
  if #args > 0 then redis.call(command, key, unpack(args)) end
  return {}
end

local ranking = ARGV[1] == '1'
local parent_at = ranking and 7 or 2
local placed = {}

for _, item in ipairs(cmsgpack.unpack(ARGV[2])) do
  local b, cid, change = item[1], item[2], item[3]
  local ck, vk, pk = KEYS[b], KEYS[b + 1], KEYS[b + parent_at]
  local first, last, created, deleted = change[2], change[3], change[4], change[5]
  local du, dd, votes, parent, depth = change[6], change[7], change[8], change[9], change[10]
  local state = redis.call('HMGET', ck, 'pos', 'up', 'down', 'created', 'deleted')
  local pos = tonumber(state[1] or '0')
  if pos >= last then
    -- applied already
  elseif pos >= first then
    out[#out + 1] = cid
  else
    local up = tonumber(state[2] or '0') + du
    local down = tonumber(state[3] or '0') + dd
    if created < 0 then
      created = tonumber(state[4] or '0')
    else
      redis.call('HSET', ck, 'parent', parent, 'depth', depth)
      redis.call('INCR', KEYS[1])
      if parent ~= '' then
        redis.call('HINCRBY', pk, 'replies', 1)
        if ranking then restore_parent(pk, parent) end
      end
    end
    deleted = deleted or state[5] == '1'
    redis.call('HSET', ck, 'up', up, 'down', down, 'score', up - down, 'created', created,
               'deleted', deleted and 1 or 0, 'pos', last)
    local set, del = {}, {}
    for user, vote in pairs(votes) do
      if vote == 0 then
        del[#del + 1] = user
      else
        set[#set + 1] = user
        set[#set + 1] = vote
      end
      if #set >= 400 then set = flush('HSET', vk, set) end
      if #del >= 200 then del = flush('HDEL', vk, del) end
    end
    flush('HSET', vk, set)
    flush('HDEL', vk, del)
    placed[#placed + 1] = {b, cid}
  end
end
-- Ranked after every change is in, so a parent sees its replies' counts; during the bulk pass,
-- not at all: every comment is ranked once at its end (redis_rerank.lua).
if ranking then
  for _, p in ipairs(placed) do place(p[1], p[2]) end
end
return out
