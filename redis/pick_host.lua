-- Picks a live host of a component, round-robin across the cluster.
-- KEYS[1]: the component's host set, KEYS[2]: its round-robin counter.
-- Returns a node id, or false when the component has no live host.
local hosts = redis.call('SMEMBERS', KEYS[1])
if #hosts == 0 then
  return false
end
table.sort(hosts)
local turn = redis.call('INCR', KEYS[2])
return hosts[((turn - 1) % #hosts) + 1]
