// broadcast-with-ack across nodes: the server emits `event(data, cb)` to every
// target socket on every node (the sender excluded) and acks the sender with
// {responses: [...]}, the values the clients acked, within `timeout` ms.

import { test } from "node:test";
import {
  NODES,
  T,
  assert,
  ask,
  client,
  freshNamespace,
  record,
  waitListed,
  waitRegistered,
  waitSubscribers,
} from "./helpers.mjs";

/**
 * s (the sender) on A (websocket), a2 on A (polling), b1 on B (websocket), b2 on
 * B (upgrade), c1 on C (polling). Every one but s answers `q` with
 * {name, got: data}; s records any `q` it gets (it must get none).
 */
async function spread(t) {
  const ns = freshNamespace("k");
  const s = await client(t, NODES.A, "websocket", ns, "s");
  const a2 = await client(t, NODES.A, "polling", ns, "a2");
  const b1 = await client(t, NODES.B, "websocket", ns, "b1");
  const b2 = await client(t, NODES.B, "upgrade", ns, "b2");
  const c1 = await client(t, NODES.C, "polling", ns, "c1");
  for (const socket of [a2, b1, b2, c1]) {
    socket.on("q", (data, cb) => cb({ name: socket.label, got: data }));
  }
  const toSender = record(s, "q");
  await waitRegistered([s, a2, b1, b2, c1]);
  await waitSubscribers(`rain:ns:${ns}`, 3);
  return { ns, s, a2, b1, b2, c1, toSender };
}

const byName = (responses) => [...responses].sort((x, y) => (x.name < y.name ? -1 : 1));

/** broadcast-with-ack through `socket`; resolves with {result, elapsed}. */
async function broadcastWithAck(socket, args, clientTimeout) {
  const started = Date.now();
  const result = await socket.timeout(clientTimeout).emitWithAck("broadcast-with-ack", args);
  return { result, elapsed: Date.now() - started };
}

test("collects every client's answer from every node, the sender excluded", T, async (t) => {
  const { s, toSender } = await spread(t);
  const data = { k: 1, list: [1, "two"] };
  const { result } = await broadcastWithAck(s, { event: "q", data, timeout: 1500 }, 6000);
  assert.ok(Array.isArray(result?.responses), `acked ${JSON.stringify(result)}`);
  assert.deepEqual(
    byName(result.responses),
    ["a2", "b1", "b2", "c1"].map((name) => ({ name, got: data })),
  );
  assert.deepEqual(toSender, [], "the sender is not asked");
});

test("answers as soon as every client answered, not at the timeout", T, async (t) => {
  const { s } = await spread(t);
  const { result, elapsed } = await broadcastWithAck(
    s,
    { event: "q", data: "fast", timeout: 5000 },
    8000,
  );
  assert.equal(result?.responses?.length, 4, `acked ${JSON.stringify(result)}`);
  assert.ok(
    elapsed < 2500,
    `every client answered at once, but the result took ${elapsed} ms (timeout 5000)`,
  );
});

test("to a room: only its members, on every node, answer", T, async (t) => {
  const { ns, s, a2, b1, c1 } = await spread(t);
  await ask(b1, "join", "rq");
  await ask(c1, "join", "rq");
  await waitListed(s, "rq", [b1, c1]);
  await waitSubscribers(`rain:room:${ns}:rq`, 2);
  const asked = record(a2, "q");
  const { result } = await broadcastWithAck(
    s,
    { room: "rq", event: "q", data: 2, timeout: 1500 },
    6000,
  );
  assert.deepEqual(byName(result.responses), [
    { name: "b1", got: 2 },
    { name: "c1", got: 2 },
  ]);
  assert.deepEqual(asked, [], "a2 (not in rq) is not asked");

  const empty = await broadcastWithAck(
    s,
    { room: "nobody", event: "q", data: 3, timeout: 500 },
    4000,
  );
  assert.deepEqual(empty.result, { responses: [] }, "a room without members");
});

test("a client that never answers: the others' answers arrive after the timeout", T, async (t) => {
  const { s, a2, b1, b2, c1 } = await spread(t);
  for (const socket of [a2, b1, c1]) {
    socket.on("q2", (data, cb) => cb({ name: socket.label, got: data }));
  }
  const ignored = [];
  b2.on("q2", (data, cb) => ignored.push([data, typeof cb])); // never calls cb
  const { result, elapsed } = await broadcastWithAck(
    s,
    { event: "q2", data: "hello?", timeout: 1000 },
    6000,
  );
  assert.deepEqual(byName(result.responses), [
    { name: "a2", got: "hello?" },
    { name: "b1", got: "hello?" },
    { name: "c1", got: "hello?" },
  ]);
  assert.deepEqual(ignored, [["hello?", "function"]], "b2 was asked (with an ack) too");
  assert.ok(elapsed >= 900, `the result came after ${elapsed} ms, before the 1000 ms timeout`);
  assert.ok(elapsed < 3500, `the result came ${elapsed} ms after a 1000 ms timeout`);
});
