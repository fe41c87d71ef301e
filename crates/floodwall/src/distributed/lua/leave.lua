-- leave.lua: remove one replica from one route at graceful shutdown, so
-- its share returns at once instead of after lease_ttl (floodwall).
--
-- KEYS[1..4] PREFIX:{ROUTE}:members, :usage, :demand, :held
-- ARGV       id
-- Returns 1 if the replica was a member.
local was = redis.call('ZREM', KEYS[1], ARGV[1])
for i = 2, 4 do redis.call('HDEL', KEYS[i], ARGV[1]) end
return was
