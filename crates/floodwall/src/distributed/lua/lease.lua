-- lease.lua: renew one replica's lease on one route's global limit and
-- rebalance its share, atomically (floodwall, lease mode).
--
-- KEYS[1] PREFIX:{ROUTE}:members  ZSET replica id -> lease expiry (ms, Redis TIME)
-- KEYS[2] PREFIX:{ROUTE}:usage    HASH replica id -> slots it may hold
-- KEYS[3] PREFIX:{ROUTE}:demand   HASH replica id -> slots it asked for
-- KEYS[4] PREFIX:{ROUTE}:fair     HASH replica id -> its fair share at the last fill
-- KEYS[5] PREFIX:{ROUTE}:meta     HASH total (sum of usage), filled (ms), global, fills
-- ARGV    id, global, lease_ttl_ms, cap, floor, demand, fill_ms
--
-- grant = clamp(min(fair share, cap), 0, global - sum of the OTHER live
-- members' usage); usage = max(grant, floor), where floor >= what this
-- replica may still have in flight under its previous share; floor <= its
-- previous usage, so the sum of usage never rises above global.
--
-- A call costs O(1) plus the members that expired since the last one: the
-- sum of usage is kept in meta.total, not re-read, and the fair shares
-- (max-min water-filling of the demands, the arithmetic of the gateway's
-- share::water_fill, ids in byte order) are computed at most once per
-- fill_ms (longer past 1,000 members, below), by whichever call finds them
-- older, and for a changed global.
-- Reading every member on every call made the script's cost grow with the
-- member count, and the route's total cost with its square: about 1 ms a
-- call at 1,000 members, 5 s of Redis per second at a 200 ms renewal.
-- A fill also recomputes the total from the usages, so a drift (a replica
-- on the previous script version) lasts one fill at most.
-- Expired members (crashed replicas: nothing renews them) are purged first,
-- so their slots return within lease_ttl. All keys share the {ROUTE} hash
-- tag (Redis Cluster) and expire by themselves once every replica is gone
-- (2 x lease_ttl after the last fill).
-- Returns {grant, usage, members, fair} (fair: -1 before this replica's
-- first fill, when it may take what is free).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local global = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local floor = tonumber(ARGV[5])
local demand = tonumber(ARGV[6])
local fill_ms = tonumber(ARGV[7])

local meta = redis.call('HMGET', KEYS[5], 'total', 'filled', 'global')
local total = tonumber(meta[1]) or 0
local filled = tonumber(meta[2])
local filled_for = tonumber(meta[3])

local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(dead) do
  total = total - (tonumber(redis.call('HGET', KEYS[2], m)) or 0)
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
  redis.call('HDEL', KEYS[4], m)
end
redis.call('ZADD', KEYS[1], now + ttl, id)
redis.call('HSET', KEYS[3], id, demand)
local members = redis.call('ZCARD', KEYS[1])

-- A fill costs about 5 us a member (5 ms at 1,000) and blocks every other
-- call meanwhile, so past 1,000 members they come at most every 0.1 ms x
-- members: Redis spends at most about 5 % of its time filling, and a fill
-- stays well under store.timeout however many members there are.
local every = math.max(fill_ms, members / 10)
local fill = filled == nil or now - filled >= every or filled_for ~= global
if fill then
  local flat = redis.call('HGETALL', KEYS[3])
  local ids = {}
  local want = {}
  for i = 1, #flat, 2 do
    ids[#ids + 1] = flat[i]
    want[flat[i]] = tonumber(flat[i + 1])
  end
  table.sort(ids)
  local n = #ids
  local out = {}
  for k = 1, n do out[k] = 0 end
  local left = global
  local open = {}
  for k = 1, n do open[k] = k end
  -- Raise a level until the slots run out; ties and remainders go to the
  -- lower ids (share.rs, water_fill).
  while #open > 0 and left > 0 do
    local level = math.floor(left / #open)
    local unmet = {}
    local any_met = false
    for _, k in ipairs(open) do
      if want[ids[k]] - out[k] <= level then
        any_met = true
        left = left - (want[ids[k]] - out[k])
        out[k] = want[ids[k]]
      else
        unmet[#unmet + 1] = k
      end
    end
    if not any_met then
      local extra = left - level * #open
      for j, k in ipairs(open) do
        out[k] = out[k] + level + ((j <= extra) and 1 or 0)
      end
      left = 0
      unmet = {}
    end
    open = unmet
  end
  if left > 0 and n > 0 then
    local level = math.floor(left / n)
    local extra = left % n
    for k = 1, n do
      out[k] = out[k] + level + ((k <= extra) and 1 or 0)
    end
  end
  redis.call('DEL', KEYS[4])
  local batch = {}
  for k = 1, n do
    batch[#batch + 1] = ids[k]
    batch[#batch + 1] = out[k]
    if #batch >= 200 or k == n then
      redis.call('HSET', KEYS[4], unpack(batch))
      batch = {}
    end
  end
  total = 0
  local usage = redis.call('HVALS', KEYS[2])
  for _, u in ipairs(usage) do total = total + tonumber(u) end
  redis.call('HSET', KEYS[5], 'filled', now, 'global', global)
  redis.call('HINCRBY', KEYS[5], 'fills', 1)
end

local mine = tonumber(redis.call('HGET', KEYS[2], id)) or 0
local others = total - mine
local fair = tonumber(redis.call('HGET', KEYS[4], id))
local grant = math.min(fair or global, cap, global - others)
if grant < 0 then grant = 0 end
local held = math.max(grant, floor)
redis.call('HSET', KEYS[2], id, held)
redis.call('HSET', KEYS[5], 'total', others + held)

-- The keys' expiry is pushed back at each fill only: one comes every
-- fill_ms while any replica renews, and fill_ms is well under lease_ttl.
if fill then
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
end
return {grant, held, members, fair or -1}
