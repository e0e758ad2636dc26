-- Apply a batch of events of ONE commentable. Every key is declared and shares the hash tag
-- {commentable}, so this runs on Redis Cluster too. ``rank`` comes from redis_rank.lua.
-- KEYS[1..5]: rankings top, new, best, controversial, hot; then per comment: its hash, its votes.
-- ARGV[1]: pub/sub channel ('' publishes nothing); then per event, 8 values:
--   key index of the comment hash, kind (P posted, E edited, D deleted, V vote), position,
--   value, previous, created ms, user id, comment id.
-- Returns the ids of comments that got an edit, delete or vote but have no hash: Redis lost
-- them (flushed, evicted). Those events are not applied (counting a vote on nothing would
-- show negative counts); the caller has the generation rebuilt. Events at or below a comment's
-- position are skipped.
local channel = ARGV[1]
local lost = {}

local i = 2
while i <= #ARGV do
  local index = tonumber(ARGV[i])
  local ck, vk = KEYS[index], KEYS[index + 1]
  local kind, pos = ARGV[i + 1], tonumber(ARGV[i + 2])
  local value, previous = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local created, user, cid = tonumber(ARGV[i + 5]), ARGV[i + 6], ARGV[i + 7]
  i = i + 8
  local state = redis.call('HMGET', ck, 'pos', 'up', 'down', 'created', 'deleted')
  if not state[1] and kind ~= 'P' then
    lost[#lost + 1] = cid
  elseif pos > tonumber(state[1] or '0') then
    local up, down = tonumber(state[2] or '0'), tonumber(state[3] or '0')
    local born, deleted = tonumber(state[4] or '0'), state[5] == '1'
    if kind == 'P' then
      redis.call('HSET', ck, 'up', 0, 'down', 0, 'score', 0, 'created', created,
                 'deleted', 0, 'pos', pos)
      rank(cid, 0, 0, created)
    elseif kind == 'D' then
      redis.call('HSET', ck, 'deleted', 1, 'pos', pos)
      for r = 1, 5 do redis.call('ZREM', KEYS[r], cid) end
    elseif kind == 'E' then
      redis.call('HSET', ck, 'pos', pos)
    else
      if value == 1 then up = up + 1 elseif value == -1 then down = down + 1 end
      if previous == 1 then up = up - 1 elseif previous == -1 then down = down - 1 end
      redis.call('HSET', ck, 'up', up, 'down', down, 'score', up - down, 'pos', pos)
      if value == 0 then redis.call('HDEL', vk, user) else redis.call('HSET', vk, user, value) end
      if not deleted then rank(cid, up, down, born) end
      if channel ~= '' then
        redis.call('PUBLISH', channel, string.format(
          '{"comment_id":"%s","up":%d,"down":%d,"score":%d,"position":%d}',
          cid, up, down, up - down, pos))
      end
    end
  end
end
return lost
