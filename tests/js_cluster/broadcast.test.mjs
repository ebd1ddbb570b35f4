// Broadcasts across nodes with the official client: clients spread over A
// (websocket), B (polling and websocket) and C (polling upgraded to websocket).
// Every test uses a fresh dynamic namespace, so none sees another's traffic.

import { test } from "node:test";
import {
  NODES,
  T,
  assert,
  ask,
  bytes,
  client,
  freshNamespace,
  once,
  record,
  sleep,
  waitFor,
  waitRegistered,
  waitSubscribers,
} from "./helpers.mjs";

/** a on A (websocket), b on B (polling), c on C (upgrade), b2 on B (websocket). */
async function spread(t) {
  const ns = freshNamespace("b");
  const a = await client(t, NODES.A, "websocket", ns, "a");
  const b = await client(t, NODES.B, "polling", ns, "b");
  const c = await client(t, NODES.C, "upgrade", ns, "c");
  const b2 = await client(t, NODES.B, "websocket", ns, "b2");
  await waitSubscribers(`rain:ns:${ns}`, 3);
  return { ns, a, b, c, b2, all: [a, b, c, b2] };
}

/**
 * Waits until every socket of `want` (socket → expected argument arrays) got its
 * events, then a little longer, and checks every recorder of `seen` exactly.
 */
async function expectExactly(seen, want, what) {
  await waitFor(
    () => [...want].every(([socket, events]) => seen.get(socket).length >= events.length),
    3000,
    `${what}: ${[...want].map(([s, e]) => `${s.label} gets ${e.length}`).join(", ")}`,
  );
  await sleep(300); // anything extra (a duplicate, a wrong receiver) shows up by now
  for (const [socket, events] of seen) {
    assert.deepEqual(events, want.get(socket) ?? [], `${what}: what ${socket.label} got`);
  }
}

function recorders(sockets, event) {
  return new Map(sockets.map((s) => [s, record(s, event)]));
}

test("broadcast reaches every other socket on every node, never the sender", T, async (t) => {
  const { a, b, c, b2, all } = await spread(t);

  let seen = recorders(all, "news");
  assert.equal(await ask(a, "broadcast", { event: "news", data: { from: "a" } }), true);
  const fromA = [[{ from: "a" }]];
  await expectExactly(seen, new Map([[b, fromA], [c, fromA], [b2, fromA]]), "broadcast from A");

  // from the polling client on B: reaches its neighbour on B and the other nodes
  seen = recorders(all, "news2");
  assert.equal(await ask(b, "broadcast", { event: "news2", data: [1, "two", { three: 3 }] }), true);
  const fromB = [[[1, "two", { three: 3 }]]];
  await expectExactly(seen, new Map([[a, fromB], [c, fromB], [b2, fromB]]), "broadcast from B");
});

test("emit-all reaches every socket on every node, the sender included", T, async (t) => {
  const { c, all } = await spread(t);
  const seen = recorders(all, "everyone");
  assert.equal(await ask(c, "emit-all", { event: "everyone", data: "hi" }), true);
  await expectExactly(seen, new Map(all.map((s) => [s, [["hi"]]])), "emit-all from C");
});

test("to-room reaches the room's members on other nodes only", T, async (t) => {
  const { ns, a, b, c, b2, all } = await spread(t);
  assert.deepEqual(await ask(b, "join", "r"), ["r"]);
  assert.deepEqual(await ask(c, "join", "r"), ["r"]);
  await waitSubscribers(`rain:room:${ns}:r`, 2);

  const seen = recorders(all, "in-r");
  assert.equal(await ask(a, "to-room", { room: "r", event: "in-r", data: { n: 1 } }), true);
  const one = [[{ n: 1 }]];
  await expectExactly(seen, new Map([[b, one], [c, one]]), "to-room r from A");
  assert.equal(seen.get(b2).length, 0);
});

test("to-room-except skips the excepted room's members on every node", T, async (t) => {
  const { ns, a, b, c, b2, all } = await spread(t);
  for (const s of [b, c, b2]) await ask(s, "join", "r");
  await ask(c, "join", "ex");
  await ask(b2, "join", "ex2");
  await waitSubscribers(`rain:room:${ns}:r`, 2);

  let seen = recorders(all, "but-ex");
  assert.equal(
    await ask(a, "to-room-except", { room: "r", except: "ex", event: "but-ex", data: 1 }),
    true,
  );
  await expectExactly(seen, new Map([[b, [[1]]], [b2, [[1]]]]), "to-room r except ex (c on C)");

  seen = recorders(all, "but-ex2");
  assert.equal(
    await ask(a, "to-room-except", { room: "r", except: "ex2", event: "but-ex2", data: 2 }),
    true,
  );
  await expectExactly(seen, new Map([[b, [[2]]], [c, [[2]]]]), "to-room r except ex2 (b2 on B)");
});

test("emit-to reaches one socket by id, on any node", T, async (t) => {
  const { a, b, c, b2, all } = await spread(t);
  await waitRegistered(all);

  let seen = recorders(all, "direct");
  assert.equal(await ask(b2, "emit-to", { sid: c.id, event: "direct", data: "for c" }), true);
  await expectExactly(seen, new Map([[c, [["for c"]]]]), "emit-to c (on C) from B");

  seen = recorders(all, "direct2");
  assert.equal(await ask(a, "emit-to", { sid: b.id, event: "direct2", data: "for b" }), true);
  await expectExactly(seen, new Map([[b, [["for b"]]]]), "emit-to b (polling, on B) from A");

  seen = recorders(all, "direct3");
  assert.equal(await ask(b2, "emit-to", { sid: b.id, event: "direct3", data: "neighbour" }), true);
  await expectExactly(seen, new Map([[b, [["neighbour"]]]]), "emit-to b from b2 (same node)");

  seen = recorders(all, "direct4");
  assert.equal(await ask(c, "emit-to", { sid: a.id, event: "direct4", data: { to: "a" } }), true);
  await expectExactly(seen, new Map([[a, [[{ to: "a" }]]]]), "emit-to a (on A) from C");
});

test("binary data crosses nodes intact", T, async (t) => {
  const { ns, a, b, c } = await spread(t);
  await ask(b, "join", "bin");
  await ask(c, "join", "bin");
  await waitSubscribers(`rain:room:${ns}:bin`, 2);
  const payload = Buffer.from([0, 1, 2, 127, 128, 253, 254, 255]);
  const gotB = once(b, "blob", 3000);
  const gotC = once(c, "blob", 3000);
  assert.equal(
    await ask(a, "to-room", { room: "bin", event: "blob", data: { label: "raw", payload } }),
    true,
  );
  for (const [who, got] of [["b (polling)", await gotB], ["c (websocket)", await gotC]]) {
    assert.equal(got.label, "raw", who);
    assert.deepEqual(bytes(got.payload), payload, `${who}: the bytes`);
  }
});

test("messages from one sender arrive in order on another node", T, async (t) => {
  const { ns, a, c, b } = await spread(t);
  await ask(c, "join", "seq");
  await ask(b, "join", "seq");
  await waitSubscribers(`rain:room:${ns}:seq`, 2);
  const seenC = record(c, "seq");
  const seenB = record(b, "seq");
  for (let i = 0; i < 50; i += 1) a.emit("to-room", { room: "seq", event: "seq", data: i });
  await ask(a, "echo", "sync");
  await waitFor(() => seenC.length >= 50 && seenB.length >= 50, 5000, "50 messages on c and b");
  await sleep(200);
  const want = Array.from({ length: 50 }, (_, i) => [i]);
  assert.deepEqual(seenC, want, "c (C) got them in order, once each");
  assert.deepEqual(seenB, want, "b (B, polling) got them in order, once each");
});

test("namespaces are separate across nodes", T, async (t) => {
  const ns1 = freshNamespace("n");
  const ns2 = freshNamespace("m");
  const a1 = await client(t, NODES.A, "websocket", ns1, "a1");
  const b1 = await client(t, NODES.B, "websocket", ns1, "b1");
  const b2 = await client(t, NODES.B, "polling", ns2, "b2");
  const c2 = await client(t, NODES.C, "websocket", ns2, "c2");
  await waitSubscribers(`rain:ns:${ns1}`, 2);
  await waitSubscribers(`rain:ns:${ns2}`, 2);
  const all = [a1, b1, b2, c2];

  let seen = recorders(all, "ns-wide");
  assert.equal(await ask(a1, "emit-all", { event: "ns-wide", data: ns1 }), true);
  await expectExactly(seen, new Map([[a1, [[ns1]]], [b1, [[ns1]]]]), `emit-all in ${ns1}`);

  // a room of the same name in both namespaces
  await ask(b1, "join", "shared");
  await ask(c2, "join", "shared");
  await ask(b2, "join", "shared");
  await waitSubscribers(`rain:room:${ns1}:shared`, 1);
  await waitSubscribers(`rain:room:${ns2}:shared`, 2);
  seen = recorders(all, "same-name");
  assert.equal(await ask(a1, "to-room", { room: "shared", event: "same-name", data: 1 }), true);
  await expectExactly(seen, new Map([[b1, [[1]]]]), `to-room shared in ${ns1}`);
});
