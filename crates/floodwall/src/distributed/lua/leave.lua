-- leave.lua: remove one replica from one route at graceful shutdown, so
-- its share returns at once instead of after lease_ttl (floodwall).
--
-- KEYS[1..6] PREFIX:{ROUTE}:members, :usage, :demand, :held, :fair, :meta
-- ARGV       id
-- The usage it held leaves lease.lua's running total (meta.total) with it;
-- its fair share is handed out at the next fill.
-- Returns 1 if the replica was a member.
local was = redis.call('ZREM', KEYS[1], ARGV[1])
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if used then
  local total = tonumber(redis.call('HGET', KEYS[6], 'total'))
  if total then redis.call('HSET', KEYS[6], 'total', total - used) end
end
for i = 2, 5 do redis.call('HDEL', KEYS[i], ARGV[1]) end
return was
