-- Sets some fields of a session, unless the session would then be larger than
-- SESSION_MAX_BYTES (field names and values, in bytes): checked and written in
-- one step, so nodes writing the same session at once cannot overshoot it.
-- The TTL slides either way (the session was used).
-- KEYS[1]: the session's hash (session:{id}).
-- ARGV[1]: the TTL in ms, ARGV[2]: the largest size in bytes, then field,
-- value pairs.
-- Returns 1 when written, 0 when refused as too large (nothing written).
local key, ttl, max = KEYS[1], ARGV[1], tonumber(ARGV[2])
local current = redis.call('HGETALL', key)
local size, sizes = 0, {}
for i = 1, #current, 2 do
  sizes[current[i]] = #current[i] + #current[i + 1]
end
for i = 3, #ARGV, 2 do
  sizes[ARGV[i]] = #ARGV[i] + #ARGV[i + 1]
end
for _, n in pairs(sizes) do
  size = size + n
end
if size > max then
  if #current > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
  return 0
end
redis.call('HSET', key, unpack(ARGV, 3))
redis.call('PEXPIRE', key, ttl)
return 1
