-- Purges one node's state, a batch of its sockets per call, so a large node
-- never blocks Redis for the whole cluster. Call again while it returns > 0.
-- KEYS: none (names are built from the prefix and follow src/cluster/keys.rs).
-- ARGV[1]: the key prefix (e.g. "rain:"), ARGV[2]: the node id,
-- ARGV[3]: the start epoch of the incarnation to purge, ARGV[4]: batch size,
-- ARGV[5]: "dead" (a lapsed node: its record must still be gone) or
--          "replaced" (a node restarted with the same id purges its previous
--          incarnation: its record, if any, must still be the old one).
-- Every call re-checks, here in the script, that the incarnation is still the
-- one to purge, and stops otherwise: a node that comes back, or a new
-- incarnation, is never purged by a reaper that decided a moment earlier.
-- Returns the sockets still to purge (0: done), or -1 when it stopped.
local prefix, node, epoch, batch, mode = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local record = prefix .. 'node:' .. node
local epochs = prefix .. 'node-epochs'
if redis.call('HGET', epochs, node) ~= epoch then
  return -1
end
if mode == 'dead' then
  if redis.call('EXISTS', record) == 1 then
    return -1
  end
elseif redis.call('HGET', record, 'epoch') ~= epoch and redis.call('EXISTS', record) == 1 then
  return -1
end

-- Out of every host set first, so nothing more is routed to it.
local services = prefix .. 'node-services:' .. node
for _, service in ipairs(redis.call('SMEMBERS', services)) do
  redis.call('SREM', prefix .. 'service:' .. service .. ':nodes', node)
end
redis.call('DEL', services)

local sockets = prefix .. 'node-sockets:' .. node
for _, sid in ipairs(redis.call('SPOP', sockets, batch)) do
  local conn = prefix .. 'conn:' .. sid
  local namespace = redis.call('HGET', conn, 'namespace')
  if namespace then
    redis.call('SREM', prefix .. 'ns-sockets:' .. namespace, sid)
    local rooms = redis.call('HGET', conn, 'rooms')
    if rooms then
      for _, room in ipairs(cjson.decode(rooms)) do
        redis.call('SREM', prefix .. 'room-sockets:' .. namespace .. ':' .. room, sid)
      end
    end
  end
  redis.call('DEL', conn)
end
local left = redis.call('SCARD', sockets)
if left > 0 then
  return left
end

local instances = prefix .. 'node-instances:' .. node
for _, instance in ipairs(redis.call('SMEMBERS', instances)) do
  redis.call('DEL', prefix .. 'instance:' .. instance)
end
redis.call('DEL', instances)
redis.call('DEL', record)
redis.call('HDEL', epochs, node)
redis.call('ZREM', prefix .. 'nodes', node)
return 0
