-- Hands a message to a live host of a service, round-robin across the cluster.
-- KEYS[1]: the service's host set, KEYS[2]: its round-robin counter.
-- ARGV[1]: the node channel prefix (e.g. "rain:node:"), ARGV[2]: the message.
-- Starting at the next host in turn, publishes on each host's node channel until
-- one has a listener: a host that died but is not purged yet has none, so the
-- message goes to the next one instead of being lost. Returns the host that got
-- it, or false when no host is listening.
local hosts = redis.call('SMEMBERS', KEYS[1])
if #hosts == 0 then
  return false
end
table.sort(hosts)
local turn = redis.call('INCR', KEYS[2])
for i = 0, #hosts - 1 do
  local host = hosts[((turn - 1 + i) % #hosts) + 1]
  if redis.call('PUBLISH', ARGV[1] .. host, ARGV[2]) > 0 then
    return host
  end
end
return false
