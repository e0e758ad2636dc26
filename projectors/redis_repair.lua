-- Set comments of ONE commentable to their state in the fold of the log (the reconciler's
-- repair), unless the stored comment is already past that state. Keys as in redis_scores.lua;
-- ``rank`` comes from redis_rank.lua. KEYS[1]: the comment count; then a block of 8 keys per
-- comment (see redis_rank.lua).
-- ARGV[1]: msgpack array, per comment: {block index, comment id, position, created ms,
--   deleted (0/1), up, down, {user, vote, user, vote, ...}, parent id ('' for none), depth}.
-- Returns the ids of the comments it wrote. Reply counts are left as they are.
local done = {}
for _, truth in ipairs(cmsgpack.unpack(ARGV[1])) do
  local b, cid, pos, created = truth[1], truth[2], truth[3], truth[4]
  local deleted, up, down, votes = truth[5] == 1, truth[6], truth[7], truth[8]
  local ck, vk = KEYS[b], KEYS[b + 1]
  local stored = tonumber(redis.call('HGET', ck, 'pos') or '0')
  if stored <= pos then
    redis.call('HSET', ck, 'up', up, 'down', down, 'score', up - down, 'created', created,
               'deleted', deleted and 1 or 0, 'pos', pos, 'parent', truth[9], 'depth', truth[10])
    redis.call('DEL', vk)
    for j = 1, #votes, 400 do
      redis.call('HSET', vk, unpack(votes, j, math.min(j + 399, #votes)))
    end
    place(b, cid)
    done[#done + 1] = cid
  end
end
return done
