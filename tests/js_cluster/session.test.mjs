// Sessions across nodes: data a handler stores in a client's session on one node
// is read by a handler on another node, for a session the client resumes with
// the token a node issued (as `auth.sessionId`, or the rain_session cookie that
// the Engine.IO handshake sets). A made-up or forged token gets a fresh session.
// Session data has a size: values and the whole session are capped.

import { test } from "node:test";
import { NODES, T, assert, connected, io, modeOptions, redis } from "./helpers.mjs";

const TOKEN = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/;

function open(t, url, mode, extra = {}) {
  const socket = io(url, { ...modeOptions(mode), ...extra });
  t.after(() => {
    socket.disconnect();
    socket.io.disconnect();
  });
  return socket;
}

test("a session token issued by one node resumes the session on every node", T, async (t) => {
  const onA = open(t, NODES.A, "websocket");
  await connected(onA, "websocket");
  const me = await onA.emitWithAck("whoami");
  assert.equal(me.node, "A");
  assert.match(me.session, TOKEN);
  const token = me.session;
  assert.equal(await onA.emitWithAck("session-set", { language: "fr", nick: "ann" }), true);

  const onC = open(t, NODES.C, "polling", { auth: { sessionId: token } });
  await connected(onC, "polling");
  const onCMe = await onC.emitWithAck("whoami");
  assert.equal(onCMe.node, "C");
  assert.equal(onCMe.session, token);
  assert.deepEqual(await onC.emitWithAck("session-get"), { language: "fr", nick: "ann" });

  // A write on C is seen on A; the session lives in Redis with a TTL, under
  // the id (the token's first part), never under the token.
  assert.equal(await onC.emitWithAck("session-set", { language: "de" }), true);
  assert.deepEqual(await onA.emitWithAck("session-get"), { language: "de", nick: "ann" });
  const id = token.split(".")[0];
  const ttl = Number(await redis("PTTL", `rain:session:${id}`));
  assert.ok(ttl > 0, `session TTL ${ttl}`);
});

test("a made-up or forged token gets a fresh session, never the claimed one", T, async (t) => {
  const one = open(t, NODES.B, "websocket");
  await connected(one, "websocket");
  await one.emitWithAck("session-set", { secret: "one's" });
  const token = (await one.emitWithAck("whoami")).session;
  const [id, mac] = token.split(".");
  const forgeries = [
    "my-session",
    id, // the bare id is not a token
    `${id}.${mac.slice(0, -1)}${mac.endsWith("A") ? "B" : "A"}`, // another MAC
    `${"A".repeat(22)}.${mac}`, // another id, the same MAC
    "not valid; id",
  ];
  for (const sessionId of forgeries) {
    const other = open(t, NODES.B, "websocket", { auth: { sessionId } });
    await connected(other, "websocket");
    const mine = await other.emitWithAck("whoami");
    assert.notEqual(mine.session, token, sessionId);
    assert.match(mine.session, TOKEN);
    assert.ok(!mine.session.startsWith(sessionId.split(".")[0]), sessionId);
    assert.deepEqual(await other.emitWithAck("session-get"), {}, sessionId);
    other.disconnect();
  }
});

test("the handshake's session cookie resumes the session on another node", T, async (t) => {
  // A polling handshake without a cookie is given one: HttpOnly, SameSite=Lax,
  // Path=/, not Secure over plain HTTP (COOKIE_SECURE=auto, no trusted proxy).
  const response = await fetch(`${NODES.A}/socket.io/?EIO=4&transport=polling`);
  const cookie = response.headers.get("set-cookie") ?? "";
  assert.match(cookie, /^rain_session=[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43};/);
  for (const part of ["HttpOnly", "SameSite=Lax", "Path=/"]) {
    assert.ok(cookie.includes(part), cookie);
  }
  assert.ok(!cookie.includes("Secure"), cookie);
  const token = cookie.split(";")[0].split("=")[1];

  // A websocket client carrying that cookie to node C gets that session.
  const socket = open(t, NODES.C, "websocket", {
    extraHeaders: { cookie: `theme=dark; rain_session=${token}` },
  });
  await connected(socket, "websocket");
  assert.equal((await socket.emitWithAck("whoami")).session, token);

  // A forged cookie is replaced by a fresh one.
  const forged = await fetch(`${NODES.B}/socket.io/?EIO=4&transport=polling`, {
    headers: { cookie: `rain_session=${token.slice(0, -2)}xx` },
  });
  const fresh = forged.headers.get("set-cookie") ?? "";
  assert.match(fresh, /^rain_session=[A-Za-z0-9_-]{22}\./);
  assert.ok(!fresh.includes(token.split(".")[0]), fresh);
  // A valid one is kept (no new cookie).
  const kept = await fetch(`${NODES.B}/socket.io/?EIO=4&transport=polling`, {
    headers: { cookie: `rain_session=${token}` },
  });
  assert.equal(kept.headers.get("set-cookie"), null);
});

test("session values and the whole session are capped; other clients carry on", T, async (t) => {
  const greedy = open(t, NODES.A, "websocket");
  await connected(greedy, "websocket");
  const other = open(t, NODES.B, "websocket");
  await connected(other, "websocket");
  // SESSION_VALUE_MAX_BYTES (4096 by default).
  assert.deepEqual(
    await greedy.emitWithAck("session-set", { big: "x".repeat(4097) }),
    { error: "session too large" },
  );
  assert.equal(await other.emitWithAck("session-set", { ok: "fine" }), true);
  // SESSION_MAX_BYTES (65536): 16 fields of 4001 bytes fit, a 17th does not,
  // and nothing of the refused write is kept.
  for (let i = 0; i < 16; i++) {
    assert.equal(await greedy.emitWithAck("session-set", { [`f${i.toString(16)}`]: "y".repeat(3999) }), true);
  }
  assert.deepEqual(
    await greedy.emitWithAck("session-set", { last: "z".repeat(2000) }),
    { error: "session too large" },
  );
  const fields = await greedy.emitWithAck("session-get");
  assert.equal(Object.keys(fields).length, 16);
  assert.equal(fields.last, undefined);
  // Replacing a value with a smaller one is allowed.
  assert.equal(await greedy.emitWithAck("session-set", { f0: "small" }), true);
  assert.equal(await other.emitWithAck("session-set", { ok: "still fine" }), true);
  assert.deepEqual(await other.emitWithAck("session-get"), { ok: "still fine" });
});
