-- Makes Redis hold exactly what one node holds for a batch of sockets, after
-- writes were lost (a failed pipeline, a full queue, a purge while it was
-- stopped). Idempotent: run it again and nothing changes.
-- KEYS: none (names are built from the prefix and follow src/cluster/keys.rs).
-- ARGV[1]: the key prefix, ARGV[2]: the node id,
-- ARGV[3]: JSON array of the node's sockets [{sid, namespace, session, rooms,
--          connected_at}], written whole (rooms it left are removed),
-- ARGV[4]: JSON array of socket ids Redis lists for the node that it no
--          longer holds: removed with their room and namespace entries.
-- Returns how many sockets were removed.
local prefix, node = ARGV[1], ARGV[2]
local held = cjson.decode(ARGV[3])
local gone = cjson.decode(ARGV[4])
local node_sockets = prefix .. 'node-sockets:' .. node

local function forget_rooms(sid, namespace, keep)
  local conn = prefix .. 'conn:' .. sid
  local old = redis.call('HGET', conn, 'rooms')
  local old_namespace = redis.call('HGET', conn, 'namespace') or namespace
  if old then
    for _, room in ipairs(cjson.decode(old)) do
      if not keep[room] or old_namespace ~= namespace then
        redis.call('SREM', prefix .. 'room-sockets:' .. old_namespace .. ':' .. room, sid)
      end
    end
  end
end

for _, socket in ipairs(held) do
  local keep = {}
  for _, room in ipairs(socket.rooms) do
    keep[room] = true
  end
  forget_rooms(socket.sid, socket.namespace, keep)
  local rooms = cjson.encode(socket.rooms)
  if #socket.rooms == 0 then
    rooms = '[]'
  end
  redis.call('HSET', prefix .. 'conn:' .. socket.sid, 'node', node, 'namespace', socket.namespace,
    'session', socket.session, 'rooms', rooms, 'connected_at', tostring(socket.connected_at))
  redis.call('SADD', node_sockets, socket.sid)
  redis.call('SADD', prefix .. 'ns-sockets:' .. socket.namespace, socket.sid)
  for _, room in ipairs(socket.rooms) do
    redis.call('SADD', prefix .. 'room-sockets:' .. socket.namespace .. ':' .. room, socket.sid)
  end
end

local removed = 0
for _, sid in ipairs(gone) do
  local conn = prefix .. 'conn:' .. sid
  -- Only what is still this node's: a socket id that moved is left alone.
  local owner = redis.call('HGET', conn, 'node')
  if owner == node or owner == false then
    local namespace = redis.call('HGET', conn, 'namespace')
    if namespace then
      redis.call('SREM', prefix .. 'ns-sockets:' .. namespace, sid)
      forget_rooms(sid, namespace, {})
    end
    redis.call('DEL', conn)
    removed = removed + 1
  end
  redis.call('SREM', node_sockets, sid)
end
return removed
