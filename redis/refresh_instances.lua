-- Keeps alive the instances a node rendered whose rendering socket is still
-- connected (its conn:{sid} record exists, on any node); the others expire
-- INSTANCE_TTL_MS after their last refresh, and an expired one leaves the
-- node's set. Run on every heartbeat of the rendering node.
-- KEYS: none (names are built from the prefix and follow src/cluster/keys.rs).
-- ARGV[1]: the key prefix, ARGV[2]: the node id, ARGV[3]: the TTL in ms.
-- Returns how many instances are still alive.
local prefix, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local owned = prefix .. 'node-instances:' .. node
local alive = 0
for _, id in ipairs(redis.call('SMEMBERS', owned)) do
  local key = prefix .. 'instance:' .. id
  local sid = redis.call('HGET', key, 'socket')
  if not sid then
    redis.call('SREM', owned, id)
  else
    if redis.call('EXISTS', prefix .. 'conn:' .. sid) == 1 then
      redis.call('PEXPIRE', key, ttl)
    end
    alive = alive + 1
  end
end
return alive
