-- Apply a batch of events of ONE commentable. Every key is declared and shares the hash tag
-- {commentable}, so this runs on Redis Cluster too. ``rank`` comes from redis_rank.lua.
-- KEYS[1]: the comment count; then a block of 8 keys per comment (see redis_rank.lua).
-- ARGV[1]: pub/sub channel ('' publishes nothing); then per event, 10 values:
--   index of the comment's block, kind (P posted, E edited, D deleted, V vote), position,
--   value, previous, created ms, user id, comment id, parent id ('' for none), depth or content.
-- Returns the ids of comments that got an edit, delete or vote but have no hash: Redis lost
-- them (flushed, evicted). Those events are not applied (counting a vote on nothing would
-- show negative counts); the caller has the generation rebuilt. Events at or below a comment's
-- position are skipped. Every change is published as JSON with its ``type``.
local channel = ARGV[1]
local lost = {}

local function parent_of(parent)
  if parent == '' then return cjson.null end
  return parent
end

local function publish(message)
  if channel ~= '' then redis.call('PUBLISH', channel, cjson.encode(message)) end
end

local i = 2
while i <= #ARGV do
  local b = tonumber(ARGV[i])
  local ck, vk, pk = KEYS[b], KEYS[b + 1], KEYS[b + 7]
  local kind, pos = ARGV[i + 1], tonumber(ARGV[i + 2])
  local value, previous = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local created, user, cid = tonumber(ARGV[i + 5]), ARGV[i + 6], ARGV[i + 7]
  local parent, extra = ARGV[i + 8], ARGV[i + 9]
  i = i + 10
  local state = redis.call('HMGET', ck, 'pos', 'up', 'down', 'created', 'deleted')
  if not state[1] and kind ~= 'P' then
    lost[#lost + 1] = cid
  elseif pos > tonumber(state[1] or '0') then
    local up, down = tonumber(state[2] or '0'), tonumber(state[3] or '0')
    local born, deleted = tonumber(state[4] or '0'), state[5] == '1'
    if kind == 'P' then
      redis.call('HSET', ck, 'up', 0, 'down', 0, 'score', 0, 'created', created,
                 'deleted', 0, 'pos', pos, 'parent', parent, 'depth', tonumber(extra))
      rank(b + 2, cid, 0, 0, created)
      redis.call('INCR', KEYS[1])
      if parent ~= '' then
        redis.call('HINCRBY', pk, 'replies', 1)
        restore_parent(pk, parent)
      end
      publish({type = 'comment_created', comment_id = cid, parent_id = parent_of(parent),
               depth = tonumber(extra), created = created, position = pos})
    elseif kind == 'D' then
      redis.call('HSET', ck, 'deleted', 1, 'pos', pos)
      place(b, cid)
      publish({type = 'comment_deleted', comment_id = cid, parent_id = parent_of(parent),
               position = pos})
    elseif kind == 'E' then
      redis.call('HSET', ck, 'pos', pos)
      publish({type = 'comment_edited', comment_id = cid, parent_id = parent_of(parent),
               content = extra, position = pos})
    else
      if value == 1 then up = up + 1 elseif value == -1 then down = down + 1 end
      if previous == 1 then up = up - 1 elseif previous == -1 then down = down - 1 end
      redis.call('HSET', ck, 'up', up, 'down', down, 'score', up - down, 'pos', pos)
      if value == 0 then redis.call('HDEL', vk, user) else redis.call('HSET', vk, user, value) end
      if not deleted then rank(b + 2, cid, up, down, born) end
      publish({type = 'score', comment_id = cid, up = up, down = down, score = up - down,
               position = pos})
    end
  end
end
return lost
