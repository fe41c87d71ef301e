-- acquire.lua: take one slot of a route's global limit for one request
-- (floodwall, strict mode).
--
-- KEYS[1] PREFIX:{ROUTE}:members  ZSET replica id -> lease expiry (ms)
-- KEYS[2] PREFIX:{ROUTE}:held     HASH replica id -> slots held now
-- ARGV    id, global, lease_ttl_ms
--
-- Purges expired members and their held slots (a crashed replica never
-- releases), then admits if the live total is below global.
-- Returns 1 when admitted, 0 when the global limit is full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local global = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
if not redis.call('ZSCORE', KEYS[1], id) then
  -- Not a member (first request, or purged after a long stall): join.
  redis.call('ZADD', KEYS[1], now + ttl, id)
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
end

local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(v) end
if total >= global then return 0 end
redis.call('HINCRBY', KEYS[2], id, 1)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
return 1
