-- lease.lua: renew one replica's lease on one route's global limit and
-- rebalance its share, atomically (floodwall, lease mode).
--
-- KEYS[1] PREFIX:{ROUTE}:members  ZSET replica id -> lease expiry (ms, Redis TIME)
-- KEYS[2] PREFIX:{ROUTE}:usage    HASH replica id -> slots it may hold
-- KEYS[3] PREFIX:{ROUTE}:demand   HASH replica id -> slots it asked for
-- ARGV    id, global, lease_ttl_ms, want, floor, demand
--
-- grant = clamp(want, 0, global - sum of the OTHER live members' usage)
-- usage = max(grant, floor), where floor >= what this replica may still
-- have in flight under its previous share; floor <= its previous usage, so
-- the sum of usage never rises above global.
-- Expired members (crashed replicas: nothing renews them) are purged first,
-- so their slots return within lease_ttl. All keys share the {ROUTE} hash
-- tag (Redis Cluster) and expire by themselves once every replica is gone.
-- Returns {grant, usage, {id1, demand1, id2, demand2, ...}}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local global = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local floor = tonumber(ARGV[5])
local demand = tonumber(ARGV[6])

local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
end
redis.call('ZADD', KEYS[1], now + ttl, id)
redis.call('HSET', KEYS[3], id, demand)

local others = 0
local usage = redis.call('HGETALL', KEYS[2])
for i = 1, #usage, 2 do
  if usage[i] ~= id then others = others + tonumber(usage[i + 1]) end
end
local grant = math.min(want, global - others)
if grant < 0 then grant = 0 end
local held = math.max(grant, floor)
redis.call('HSET', KEYS[2], id, held)

for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
return {grant, held, redis.call('HGETALL', KEYS[3])}
