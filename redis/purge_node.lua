-- Removes a node and every socket it held from the shared state.
-- ARGV[1]: the key prefix (e.g. "rain:"), ARGV[2]: the node id.
-- Key names follow src/cluster/keys.rs. Returns how many sockets were purged.
local prefix = ARGV[1]
local node = ARGV[2]
local sids = redis.call('SMEMBERS', prefix .. 'node-sockets:' .. node)
for _, sid in ipairs(sids) do
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
for _, service in ipairs(redis.call('SMEMBERS', prefix .. 'node-services:' .. node)) do
  redis.call('SREM', prefix .. 'service:' .. service .. ':nodes', node)
end
redis.call('DEL', prefix .. 'node-sockets:' .. node, prefix .. 'node:' .. node, prefix .. 'node-services:' .. node)
redis.call('ZREM', prefix .. 'nodes', node)
return #sids
