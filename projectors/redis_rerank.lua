-- Put comments of ONE commentable in the rankings from their stored counts (a rebuild merges
-- counts without ranking, then ranks every comment once). ``rank`` comes from redis_rank.lua.
-- KEYS[1..5]: rankings; then one hash per comment. ARGV: the comment ids, in KEYS order.
for n = 1, #ARGV do
  local cid = ARGV[n]
  local state = redis.call('HMGET', KEYS[5 + n], 'pos', 'up', 'down', 'created', 'deleted')
  if state[1] then
    if state[5] == '1' then
      for r = 1, 5 do redis.call('ZREM', KEYS[r], cid) end
    else
      rank(cid, tonumber(state[2]), tonumber(state[3]), tonumber(state[4] or '0'))
    end
  end
end
return #ARGV
