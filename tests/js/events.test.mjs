// Events both ways: client→server with and without acks, server→client acks
// (answered and timed out), binary payloads and bursts of server events.

import { describe, test } from "node:test";
import {
  MODES,
  T,
  assert,
  ask,
  bytes,
  client,
  expectNone,
  onceAll,
  once,
  record,
  sleep,
} from "./helpers.mjs";

for (const mode of MODES) {
  describe(`events [${mode}]`, () => {
    test("echo with an ack: the ack gets the same arguments", T, async (t) => {
      const { socket } = await client(t, mode);
      const args = ["text", 12.5, true, null, { nested: { list: [1, "two", { three: 3 }] } }, [], "ünï©ødé ✓"];
      const reply = await new Promise((resolve, reject) => {
        socket.timeout(3000).emit("echo", ...args, (err, ...got) => (err ? reject(err) : resolve(got)));
      });
      assert.deepEqual(reply, args);
      // emitWithAck resolves with the first argument
      assert.equal(await ask(socket, "echo", "single"), "single");
    });

    test("echo without an ack: the server emits echo back with the same arguments", T, async (t) => {
      const { socket } = await client(t, mode);
      const reply = onceAll(socket, "echo", 3000);
      socket.emit("echo", "hello", { n: 1 }, [true, false]);
      assert.deepEqual(await reply, ["hello", { n: 1 }, [true, false]]);
    });

    test("echo without an ack and without arguments", T, async (t) => {
      const { socket } = await client(t, mode);
      const reply = onceAll(socket, "echo", 3000);
      socket.emit("echo");
      assert.deepEqual(await reply, []);
    });

    test("many acks in flight are matched to their calls", T, async (t) => {
      const { socket } = await client(t, mode);
      const n = 50;
      const replies = await Promise.all(
        Array.from({ length: n }, (_, i) => ask(socket, "echo", { i })),
      );
      assert.deepEqual(
        replies,
        Array.from({ length: n }, (_, i) => ({ i })),
      );
    });

    test("ask: the server's event with an ack is answered by the client", T, async (t) => {
      const { socket } = await client(t, mode);
      const questions = [];
      socket.on("question", (question, ack) => {
        questions.push(question);
        assert.equal(typeof ack, "function", "question must come with an ack");
        ack({ said: `answer to ${question}` });
      });
      const reply = await ask(socket, "ask", { question: "why?" });
      assert.deepEqual(reply, { answer: { said: "answer to why?" } });
      assert.deepEqual(questions, ["why?"]);
    });

    test("ask: a client that does not answer makes the server time out", T, async (t) => {
      const { socket } = await client(t, mode);
      let asked = 0;
      socket.on("question", () => {
        asked += 1; // deliberately never calls the ack
      });
      const started = Date.now();
      const reply = await socket.timeout(6000).emitWithAck("ask", { question: "silence?" });
      const elapsed = Date.now() - started;
      assert.deepEqual(reply, { error: "timeout" });
      assert.equal(asked, 1);
      assert.ok(elapsed >= 1500, `server timed out after only ${elapsed} ms (expected ~2 s)`);
      assert.ok(elapsed < 5000, `server took ${elapsed} ms to time out (expected ~2 s)`);
      // the connection is still fine afterwards
      assert.equal(await ask(socket, "echo", "after"), "after");
    });

    test("binary: a Buffer round-trips through an ack", T, async (t) => {
      const { socket } = await client(t, mode);
      const payload = Buffer.from([0, 1, 2, 3, 254, 255, 0x2d, 0x5b]);
      const reply = await ask(socket, "echo", payload);
      assert.ok(typeof reply !== "string", "binary came back as a string");
      assert.deepEqual(bytes(reply), payload);
    });

    test("binary: several attachments nested in structures, with an ack", T, async (t) => {
      const { socket } = await client(t, mode);
      const a = Buffer.from("first attachment");
      const b = Buffer.alloc(70000, 7); // larger than one websocket frame chunk
      const c = Buffer.alloc(0);
      const reply = await new Promise((resolve, reject) => {
        socket
          .timeout(3000)
          .emit("echo", "label", { files: [a, { inner: b }], empty: c }, 5, (err, ...got) =>
            err ? reject(err) : resolve(got),
          );
      });
      assert.equal(reply.length, 3);
      assert.equal(reply[0], "label");
      assert.equal(reply[2], 5);
      assert.deepEqual(bytes(reply[1].files[0]), a);
      assert.deepEqual(bytes(reply[1].files[1].inner), b);
      assert.deepEqual(bytes(reply[1].empty), c);
    });

    test("binary: a Buffer round-trips without an ack (server emits echo)", T, async (t) => {
      const { socket } = await client(t, mode);
      const payload = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const reply = onceAll(socket, "echo", 3000);
      socket.emit("echo", { blob: payload, name: "bytes" }, payload);
      const [obj, raw] = await reply;
      assert.equal(obj.name, "bytes");
      assert.deepEqual(bytes(obj.blob), payload);
      assert.deepEqual(bytes(raw), payload);
    });

    test("binary events and text events stay in order", T, async (t) => {
      const { socket } = await client(t, mode);
      const seen = record(socket, "echo");
      for (let i = 0; i < 10; i++) {
        socket.emit("echo", i % 2 === 0 ? i : Buffer.from([i]));
      }
      const deadline = Date.now() + 3000;
      while (seen.length < 10 && Date.now() < deadline) await sleep(20);
      assert.equal(seen.length, 10);
      seen.forEach(([value], i) => {
        if (i % 2 === 0) assert.equal(value, i);
        else assert.deepEqual(bytes(value), Buffer.from([i]));
      });
    });

    test("flood: the server's burst of events all arrive, in full", T, async (t) => {
      const { socket } = await client(t, mode);
      const seen = record(socket, "flood");
      const count = 200;
      const size = 1000;
      const done = await ask(socket, "flood", { count, size });
      t.diagnostic(`flood ack: ${JSON.stringify(done)}`);
      const deadline = Date.now() + 5000;
      while (seen.length < count && Date.now() < deadline) await sleep(20);
      assert.equal(seen.length, count);
      for (const [s] of seen) {
        assert.equal(typeof s, "string");
        assert.equal(s.length, size);
      }
      await expectNone(socket, "flood", 200);
    });

    test("flood: one large event (200 kB)", T, async (t) => {
      const { socket } = await client(t, mode);
      const got = once(socket, "flood", 5000);
      socket.emit("flood", { count: 1, size: 200000 });
      const s = await got;
      assert.equal(s.length, 200000);
    });

    test("a large client event (300 kB) within max payload is echoed", T, async (t) => {
      const { socket } = await client(t, mode);
      const big = "z".repeat(300000);
      assert.equal(await ask(socket, "echo", big), big);
    });
  });
}
