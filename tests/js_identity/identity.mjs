// The client side of tests/identity.rs: the official socket.io-client against a
// rain-node whose AUTH_URL is the test's auth backend, which accepts
// `auth.token` "good-<user>" as <user> and refuses or misbehaves for the other
// tokens (see tests/identity.rs). Prints `SECRET <text>` for every session
// token it was given, so the Rust side can check the node's log holds none of
// them; exits non-zero on the first failed assertion.

import assert from "node:assert/strict";
import { io } from "../js/node_modules/socket.io-client/build/esm-debug/index.js";

const URL = process.env.RAIN_URL;
const open = [];

function connect(ns, auth, extra = {}) {
  return new Promise((resolve) => {
    const socket = io(URL + ns, {
      forceNew: true,
      reconnection: false,
      transports: ["websocket"],
      auth,
      ...extra,
    });
    open.push(socket);
    socket.once("connect", () => resolve({ socket }));
    socket.once("connect_error", (err) => {
      socket.close();
      resolve({ error: err.message });
    });
  });
}

// RAIN acks are `(error | null, data)`: both, or a timeout.
function call(socket, event, arg) {
  return new Promise((resolve, reject) => {
    socket.timeout(3000).emit(event, arg, (timeout, error, data) => {
      if (timeout) reject(new Error(`no ack to ${event}`));
      else resolve([error, data]);
    });
  });
}

async function session(socket) {
  const [error, data] = await call(socket, "session", {});
  assert.equal(error, null);
  console.log(`SECRET ${data.token}`);
  console.log(`SECRET ${data.token.split(".")[0]}`);
  return data;
}

// Accepted: the socket knows its user, /core gives the session token.
const ann = await connect("/core", { token: "good-ann" }, {
  extraHeaders: { "user-agent": "identity-test", cookie: "theme=dark" },
});
assert.ok(ann.socket, `ann refused: ${ann.error}`);
const annSession = await session(ann.socket);
assert.equal(annSession.user, "ann");

// Refused with the backend's message; over-long messages are cut.
assert.deepEqual(await connect("/core", { token: "bad" }), { error: "bad token" });
assert.deepEqual(await connect("/core", {}), { error: "no token" });
const long = await connect("/core", { token: "long-error" });
assert.ok(long.error.length <= 200 && long.error.startsWith("nope"), long.error);

// Anything else is "auth unavailable": timeout, redirect, other status, an
// answer too large, an answer of the wrong shape.
for (const token of ["slow", "redirect", "status-500", "huge", "shapeless"]) {
  assert.deepEqual(await connect("/core", { token }), { error: "auth unavailable" }, token);
}

// The session resumes with its token, as another user too; a forged token
// gets a fresh session.
const again = await connect("/core", { token: "good-ann", sessionId: annSession.token });
assert.ok(again.socket, again.error);
assert.equal((await session(again.socket)).token, annSession.token);
const forged = await connect("/core", { token: "good-ann", sessionId: annSession.token.slice(0, -3) + "abc" });
assert.ok(forged.socket, forged.error);
assert.notEqual((await session(forged.socket)).token, annSession.token);

// An HTTP component's backend is told the user (and the session data has it).
const bob = await connect("/probe/1.0/main", { token: "good-bob" });
assert.ok(bob.socket, bob.error);
const [error, seen] = await call(bob.socket, "whoami", {});
assert.equal(error, null);
assert.equal(seen.user, "bob");
assert.equal(seen.data.user, "bob");
console.log(`SECRET ${seen.session}`);

// Another client was served all along.
assert.equal((await session(ann.socket)).user, "ann");

for (const socket of open) socket.close();
console.log("DONE");
process.exit(0);
