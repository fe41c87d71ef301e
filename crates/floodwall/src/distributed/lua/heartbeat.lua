-- heartbeat.lua: renew one replica's lease in strict mode and reconcile
-- the slots it holds (floodwall).
--
-- KEYS[1] PREFIX:{ROUTE}:members  ZSET replica id -> lease expiry (ms)
-- KEYS[2] PREFIX:{ROUTE}:held     HASH replica id -> slots held now
-- ARGV    id, lease_ttl_ms, held
--
-- `held` is the replica's own count of slots granted or being asked for,
-- an upper bound of what Redis should hold for it. Setting it heals what a
-- timed-out acquire or a lost release would otherwise leak.
-- Returns the number of live members.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local ttl = tonumber(ARGV[2])

local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
redis.call('ZADD', KEYS[1], now + ttl, id)
redis.call('HSET', KEYS[2], id, tonumber(ARGV[3]))
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
return redis.call('ZCARD', KEYS[1])
