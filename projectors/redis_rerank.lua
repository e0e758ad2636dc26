-- Put comments of ONE commentable in the rankings of their lists from their stored counts (a
-- rebuild merges counts without ranking, then ranks every comment once). ``rank`` comes from
-- redis_rank.lua. KEYS[1]: the comment count; then a block of 8 keys per comment (see
-- redis_rank.lua). ARGV: per comment, its block index and its id.
for n = 1, #ARGV, 2 do
  place(tonumber(ARGV[n]), ARGV[n + 1])
end
return #ARGV / 2
