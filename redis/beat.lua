-- One heartbeat of a node: refreshes its record on Redis's clock.
-- KEYS[1]: node:{id}, KEYS[2]: nodes (zset), KEYS[3]: node-epochs (hash).
-- ARGV[1]: the node id, ARGV[2]: its start epoch, ARGV[3]: the TTL in ms,
-- ARGV[4]: the key-schema version, ARGV[5..]: field, value pairs to record.
-- Liveness is the record's existence: it expires NODE_TTL_MS after the last
-- beat by Redis's own clock, so no node compares its clock with another's.
-- Returns {"replaced", old_epoch} without writing anything when an earlier
-- incarnation of this node id still has state (it must be purged first), else
-- {"ok", existed}: existed = 0 when the record was gone (first start, Redis
-- restarted empty, or this node was purged while it could not beat).
local record, nodes, epochs = KEYS[1], KEYS[2], KEYS[3]
local id, epoch, ttl, schema = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local known = redis.call('HGET', epochs, id)
if known and known ~= epoch then
  return {'replaced', known}
end
local existed = redis.call('EXISTS', record)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local fields = {'epoch', epoch, 'schema', schema, 'heartbeat', tostring(now)}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', record, unpack(fields))
redis.call('PEXPIRE', record, ttl)
redis.call('ZADD', nodes, now, id)
redis.call('HSET', epochs, id, epoch)
return {'ok', existed}
