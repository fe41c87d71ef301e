-- release.lua: give back one slot taken by acquire.lua (floodwall, strict
-- mode).
--
-- KEYS[1] PREFIX:{ROUTE}:held  HASH replica id -> slots held now
-- ARGV    id
--
-- Never goes below 0: the field may have been purged (lease expired during
-- a stall) or reconciled by heartbeat.lua meanwhile.
-- Returns what the replica holds after the release.
local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if v > 0 then return redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
return 0
