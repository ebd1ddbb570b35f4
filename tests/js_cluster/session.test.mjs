// Sessions across nodes: data a handler stores in a client's session on one node
// is read by a handler on another node, for a session named in the CONNECT auth
// or carried by the rain_session cookie that the Engine.IO handshake sets.

import { test } from "node:test";
import { NODES, T, assert, connected, io, modeOptions, redis, unique } from "./helpers.mjs";

function open(t, url, mode, extra = {}) {
  const socket = io(url, { ...modeOptions(mode), ...extra });
  t.after(() => {
    socket.disconnect();
    socket.io.disconnect();
  });
  return socket;
}

test("a session named in auth is shared by every node", T, async (t) => {
  const sessionId = unique("s");
  const onA = open(t, NODES.A, "websocket", { auth: { sessionId } });
  await connected(onA, "websocket");
  const me = await onA.emitWithAck("whoami");
  assert.equal(me.node, "A");
  assert.equal(me.sessionId, sessionId);
  assert.equal(await onA.emitWithAck("session-set", { language: "fr", user: "ann" }), true);

  const onC = open(t, NODES.C, "polling", { auth: { sessionId } });
  await connected(onC, "polling");
  assert.equal((await onC.emitWithAck("whoami")).node, "C");
  assert.deepEqual(await onC.emitWithAck("session-get"), { language: "fr", user: "ann" });

  // A write on C is seen on A; the session lives in Redis with a TTL.
  assert.equal(await onC.emitWithAck("session-set", { language: "de" }), true);
  assert.deepEqual(await onA.emitWithAck("session-get"), { language: "de", user: "ann" });
  const ttl = Number(await redis("PTTL", `rain:session:${sessionId}`));
  assert.ok(ttl > 0, `session TTL ${ttl}`);
});

test("sessions stay apart, and a bad session id is replaced", T, async (t) => {
  const one = open(t, NODES.B, "websocket", { auth: { sessionId: unique("one") } });
  await connected(one, "websocket");
  const other = open(t, NODES.B, "websocket", { auth: { sessionId: "not valid; id" } });
  await connected(other, "websocket");
  await one.emitWithAck("session-set", { user: "one" });
  const mine = await other.emitWithAck("whoami");
  assert.notEqual(mine.sessionId, "not valid; id");
  assert.match(mine.sessionId, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(await other.emitWithAck("session-get"), {});
});

test("the handshake's session cookie names the session on another node", T, async () => {
  // A polling handshake without a cookie is given one.
  const response = await fetch(`${NODES.A}/socket.io/?EIO=4&transport=polling`);
  const cookie = response.headers.get("set-cookie");
  assert.match(cookie ?? "", /^rain_session=[A-Za-z0-9_-]+;/);
  const sessionId = cookie.split(";")[0].split("=")[1];

  // A websocket client carrying that cookie to node C gets that session.
  const socket = io(NODES.C, {
    transports: ["websocket"],
    extraHeaders: { cookie: `rain_session=${sessionId}` },
    reconnection: false,
  });
  try {
    await connected(socket, "websocket");
    assert.equal((await socket.emitWithAck("whoami")).sessionId, sessionId);
  } finally {
    socket.disconnect();
  }
});
