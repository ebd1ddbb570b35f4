// remote-join / remote-leave / remote-disconnect: a client on A changes the rooms
// of (or disconnects) sockets on B and C, by socket id and by room. The remote
// operation is acked when it has been sent; its effect is waited for (≤ 2 s).

import { test } from "node:test";
import {
  NODES,
  T,
  assert,
  ask,
  client,
  freshNamespace,
  once,
  record,
  redis,
  sleep,
  waitFor,
  waitListed,
  waitRegistered,
  waitSubscribers,
} from "./helpers.mjs";

/** ctl on A (websocket), b1 on B (polling), b2 on B (websocket), c1 on C (upgrade). */
async function spread(t) {
  const ns = freshNamespace("r");
  const ctl = await client(t, NODES.A, "websocket", ns, "ctl");
  const b1 = await client(t, NODES.B, "polling", ns, "b1");
  const b2 = await client(t, NODES.B, "websocket", ns, "b2");
  const c1 = await client(t, NODES.C, "upgrade", ns, "c1");
  await waitRegistered([ctl, b1, b2, c1]);
  await waitSubscribers(`rain:ns:${ns}`, 3);
  return { ns, ctl, b1, b2, c1 };
}

const sorted = (xs) => [...xs].sort();

/** Waits until `socket`'s own view of its rooms (the `rooms` event) is `want`. */
async function waitRooms(socket, want, what) {
  const target = JSON.stringify(sorted(want));
  await waitFor(
    async () => {
      const got = JSON.stringify(sorted(await ask(socket, "rooms")));
      if (got !== target) throw new Error(`${socket.label} is in ${got}`);
      return true;
    },
    2000,
    `${what}: ${socket.label} is in ${target}`,
  );
}

test("remote-join by sid and by room", T, async (t) => {
  const { ns, ctl, b1, b2, c1 } = await spread(t);

  assert.equal(await ask(ctl, "remote-join", { sid: b1.id, join: "x" }), true);
  await waitRooms(b1, ["x"], "remote-join {sid: b1, join: x}");
  await waitListed(ctl, "x", [b1]);
  assert.deepEqual(await ask(b2, "rooms"), [], "b2 (same node as b1) is untouched");
  assert.deepEqual(await ask(c1, "rooms"), [], "c1 is untouched");

  // the joined room works for broadcasts (the node subscribed to it)
  await waitSubscribers(`rain:room:${ns}:x`, 1);
  const inX = { b1: record(b1, "in-x"), b2: record(b2, "in-x"), c1: record(c1, "in-x") };
  assert.equal(await ask(ctl, "to-room", { room: "x", event: "in-x", data: 1 }), true);
  await waitFor(() => inX.b1.length === 1, 2000, "b1 gets to-room x");
  await sleep(200);
  assert.deepEqual([inX.b2.length, inX.c1.length], [0, 0], "only b1 is in x");

  // by room: every member of x, on every node, joins y
  await ask(c1, "join", "x");
  await waitListed(ctl, "x", [b1, c1]);
  assert.equal(await ask(ctl, "remote-join", { room: "x", join: "y" }), true);
  await waitRooms(b1, ["x", "y"], "remote-join {room: x, join: y}");
  await waitRooms(c1, ["x", "y"], "remote-join {room: x, join: y}");
  await waitListed(ctl, "y", [b1, c1]);
  assert.deepEqual(await ask(b2, "rooms"), [], "b2 (not in x) is untouched");

  await waitSubscribers(`rain:room:${ns}:y`, 2);
  const inY = { b1: record(b1, "in-y"), b2: record(b2, "in-y"), c1: record(c1, "in-y") };
  assert.equal(await ask(ctl, "to-room", { room: "y", event: "in-y", data: 2 }), true);
  await waitFor(() => inY.b1.length === 1 && inY.c1.length === 1, 2000, "b1 and c1 get to-room y");
  await sleep(200);
  assert.equal(inY.b2.length, 0, "b2 is not in y");
});

test("remote-leave by sid and by room", T, async (t) => {
  const { ns, ctl, b1, b2, c1 } = await spread(t);
  for (const s of [b1, b2, c1]) await ask(s, "join", "z");
  await ask(b1, "join", "p");
  await ask(b1, "join", "q");
  await waitListed(ctl, "z", [b1, b2, c1]);
  await waitListed(ctl, "p", [b1]);

  assert.equal(await ask(ctl, "remote-leave", { sid: c1.id, leave: "z" }), true);
  await waitRooms(c1, [], "remote-leave {sid: c1, leave: z}");
  await waitListed(ctl, "z", [b1, b2]);
  await waitRooms(b1, ["z", "p", "q"], "b1 keeps its rooms");
  await waitRooms(b2, ["z"], "b2 keeps its rooms");

  // by room: the selector room is left by its members
  assert.equal(await ask(ctl, "remote-leave", { room: "z", leave: "z" }), true);
  await waitRooms(b1, ["p", "q"], "remote-leave {room: z, leave: z}");
  await waitRooms(b2, [], "remote-leave {room: z, leave: z}");
  await waitListed(ctl, "z", []);

  // by room, leaving another room
  assert.equal(await ask(ctl, "remote-leave", { room: "p", leave: "q" }), true);
  await waitRooms(b1, ["p"], "remote-leave {room: p, leave: q}");

  // nobody is in z any more: a broadcast to it reaches no one
  const got = [b1, b2, c1].map((s) => record(s, "in-z"));
  assert.equal(await ask(ctl, "to-room", { room: "z", event: "in-z", data: 0 }), true);
  await sleep(400);
  assert.deepEqual(got.map((g) => g.length), [0, 0, 0], "nobody is in z");
  void ns;
});

test("remote-disconnect by sid and by room", T, async (t) => {
  const { ctl, b1, b2, c1 } = await spread(t);

  const reasonC1 = once(c1, "disconnect", 3000);
  const othersB1 = record(b1, "disconnect");
  assert.equal(await ask(ctl, "remote-disconnect", { sid: c1.id }), true);
  assert.equal(await reasonC1, "io server disconnect", "c1's disconnect reason");
  assert.equal(c1.connected, false);
  await waitListed(ctl, undefined, [ctl, b1, b2]);
  await waitFor(
    async () => (await redis("EXISTS", `rain:conn:${c1.id}`)) === 0,
    1000,
    `rain:conn:${c1.id} is gone`,
  );
  assert.deepEqual(othersB1, [], "b1 was not disconnected");

  await ask(b1, "join", "kick");
  await ask(b2, "join", "kick");
  await waitListed(ctl, "kick", [b1, b2]);
  const reasons = [once(b1, "disconnect", 3000), once(b2, "disconnect", 3000)];
  const ctlDisconnects = record(ctl, "disconnect");
  assert.equal(await ask(ctl, "remote-disconnect", { room: "kick" }), true);
  assert.deepEqual(await Promise.all(reasons), ["io server disconnect", "io server disconnect"]);
  await waitListed(ctl, undefined, [ctl]);
  assert.deepEqual(ctlDisconnects, [], "ctl (not in kick) stays connected");
  assert.equal(await ask(ctl, "echo", "still"), "still");
});
