-- Apply a batch of events of ONE commentable. Every key is declared and shares the hash tag
-- {commentable}, so this runs on Redis Cluster too. ``rank`` comes from redis_rank.lua.
-- KEYS[1]: the comment count; then a block of 8 keys per comment (see redis_rank.lua).
-- ARGV[1]: pub/sub channel ('' publishes nothing); ARGV[2]: the events, msgpack, each
--   {index of the comment's block, kind (P posted, E edited, D deleted, V vote), position,
--   value, previous, created ms (0 unless posted), user id, comment id, parent id ('' for
--   none), depth or content}
--   (one blob: packing 10 arguments per event cost the projector more than Redis's work).
-- Returns the ids of comments that got an edit, delete or vote but have no hash: Redis lost
-- them (flushed, evicted). Those events are not applied (counting a vote on nothing would
-- show negative counts); the caller has the generation rebuilt. Events at or below a comment's
-- position are skipped. Every change is published as JSON with its ``type``.
-- Votes on one comment are folded before they are written: its counts, ranks and one ``score``
-- message are written once per batch (or before another kind of event of that comment), not
-- once per vote, since a popular comment gets many votes in a batch.
local channel = ARGV[1]
local lost = {}
local pending, touched = {}, {}

local function parent_of(parent)
  if parent == '' then return cjson.null end
  return parent
end

local function publish(message)
  if channel ~= '' then redis.call('PUBLISH', channel, cjson.encode(message)) end
end

local function flush(b)
  local p = pending[b]
  if not p then return end
  pending[b] = nil
  redis.call('HSET', p.ck, 'up', p.up, 'down', p.down, 'score', p.up - p.down, 'pos', p.pos)
  if not p.deleted then rank(b + 2, p.cid, p.up, p.down, p.born, true) end
  publish({type = 'score', comment_id = p.cid, up = p.up, down = p.down,
           score = p.up - p.down, position = p.pos})
end

local function vote(p, vk, user, value, previous)
  if value == 1 then p.up = p.up + 1 elseif value == -1 then p.down = p.down + 1 end
  if previous == 1 then p.up = p.up - 1 elseif previous == -1 then p.down = p.down - 1 end
  if value == 0 then redis.call('HDEL', vk, user) else redis.call('HSET', vk, user, value) end
end

for _, e in ipairs(cmsgpack.unpack(ARGV[2])) do
  local b, kind, pos, value, previous = e[1], e[2], e[3], e[4], e[5]
  local created, user, cid, parent, extra = e[6], e[7], e[8], e[9], e[10]
  local ck, vk, pk = KEYS[b], KEYS[b + 1], KEYS[b + 7]
  local folding = pending[b]
  if folding and kind == 'V' then
    if pos > folding.pos then
      vote(folding, vk, user, value, previous)
      folding.pos = pos
    end
  else
    flush(b)
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
        local p = {ck = ck, cid = cid, up = up, down = down, born = born, deleted = deleted,
                   pos = pos}
        vote(p, vk, user, value, previous)
        pending[b] = p
        touched[#touched + 1] = b
      end
    end
  end
end
for _, b in ipairs(touched) do flush(b) end
return lost
