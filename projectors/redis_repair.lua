-- Set comments of ONE commentable to their state in the fold of the log (the reconciler's
-- repair), unless the stored comment is already past that state. Keys as in redis_scores.lua;
-- ``rank`` comes from redis_rank.lua.
-- KEYS[1..5]: rankings; then per comment: its hash, its votes.
-- ARGV[1]: msgpack array, per comment: {key index, comment id, position, created ms,
--   deleted (0/1), up, down, {user, vote, user, vote, ...}}.
-- Returns the ids of the comments it wrote.
local done = {}
for _, truth in ipairs(cmsgpack.unpack(ARGV[1])) do
  local index, cid, pos, created = truth[1], truth[2], truth[3], truth[4]
  local deleted, up, down, votes = truth[5] == 1, truth[6], truth[7], truth[8]
  local ck, vk = KEYS[index], KEYS[index + 1]
  local stored = tonumber(redis.call('HGET', ck, 'pos') or '0')
  if stored <= pos then
    redis.call('HSET', ck, 'up', up, 'down', down, 'score', up - down, 'created', created,
               'deleted', deleted and 1 or 0, 'pos', pos)
    redis.call('DEL', vk)
    for j = 1, #votes, 400 do
      redis.call('HSET', vk, unpack(votes, j, math.min(j + 399, #votes)))
    end
    if deleted then
      for r = 1, 5 do redis.call('ZREM', KEYS[r], cid) end
    else
      rank(cid, up, down, created)
    end
    done[#done + 1] = cid
  end
end
return done
