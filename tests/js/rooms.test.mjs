// Rooms and broadcasts between several clients.

import { describe, test } from "node:test";
import { MODES, T, assert, ask, client, expectNone, once, unique } from "./helpers.mjs";

const sorted = (list) => [...list].sort();

for (const mode of MODES) {
  describe(`rooms [${mode}]`, () => {
    test("join / leave ack the socket's rooms; rooms() lists them", T, async (t) => {
      const { socket } = await client(t, mode);
      const r1 = unique("room");
      const r2 = unique("room");
      assert.deepEqual(await ask(socket, "rooms"), []);
      assert.deepEqual(await ask(socket, "join", r1), [r1]);
      assert.deepEqual(sorted(await ask(socket, "join", r2)), sorted([r1, r2]));
      // joining twice is harmless
      assert.deepEqual(sorted(await ask(socket, "join", r2)), sorted([r1, r2]));
      assert.deepEqual(sorted(await ask(socket, "rooms")), sorted([r1, r2]));
      assert.deepEqual(await ask(socket, "leave", r1), [r2]);
      assert.deepEqual(await ask(socket, "rooms"), [r2]);
      // leaving a room one is not in is harmless
      assert.deepEqual(await ask(socket, "leave", r1), [r2]);
      assert.deepEqual(await ask(socket, "leave", r2), []);
    });

    test("to-room, to-room-except, leave: who receives what", T, async (t) => {
      const [a, b, c] = (await Promise.all([
        client(t, mode),
        client(t, mode),
        client(t, mode),
      ])).map((x) => x.socket);
      const room = unique("room");
      const except = unique("except");
      // a: room; b: room + except; c: nothing
      assert.deepEqual(await ask(a, "join", room), [room]);
      assert.deepEqual(await ask(b, "join", room), [room]);
      assert.deepEqual(sorted(await ask(b, "join", except)), sorted([room, except]));

      // c (not a member) sends to the room: a and b get it, c does not
      {
        const ev = unique("ev");
        const ga = once(a, ev);
        const gb = once(b, ev);
        const nc = expectNone(c, ev, 400);
        assert.equal(await ask(c, "to-room", { room, event: ev, data: { hello: "room" } }), true);
        assert.deepEqual(await ga, { hello: "room" });
        assert.deepEqual(await gb, { hello: "room" });
        await nc;
      }

      // a (a member) sends to the room: it gets its own event too
      {
        const ev = unique("ev");
        const ga = once(a, ev);
        const gb = once(b, ev);
        const nc = expectNone(c, ev, 400);
        assert.equal(await ask(a, "to-room", { room, event: ev, data: [1, 2, 3] }), true);
        assert.deepEqual(await ga, [1, 2, 3]);
        assert.deepEqual(await gb, [1, 2, 3]);
        await nc;
      }

      // to-room without an ack still delivers
      {
        const ev = unique("ev");
        const gb = once(b, ev);
        c.emit("to-room", { room, event: ev, data: "no ack" });
        assert.equal(await gb, "no ack");
      }

      // to-room-except: members of `except` (b) are left out
      {
        const ev = unique("ev");
        const ga = once(a, ev);
        const nb = expectNone(b, ev, 400);
        const nc = expectNone(c, ev, 400);
        assert.equal(
          await ask(c, "to-room-except", { room, except, event: ev, data: "not for b" }),
          true,
        );
        assert.equal(await ga, "not for b");
        await nb;
        await nc;
      }

      // a leaves: it no longer gets the room's events, b still does
      assert.deepEqual(await ask(a, "leave", room), []);
      {
        const ev = unique("ev");
        const gb = once(b, ev);
        const na = expectNone(a, ev, 400);
        assert.equal(await ask(c, "to-room", { room, event: ev, data: "after leave" }), true);
        assert.equal(await gb, "after leave");
        await na;
      }
    });

    test("rooms are per namespace", T, async (t) => {
      const main = (await client(t, mode, "/")).socket;
      const custom = (await client(t, mode, "/custom")).socket;
      const sender = (await client(t, mode, "/custom")).socket;
      const room = unique("room");
      await ask(main, "join", room);
      await ask(custom, "join", room);
      const ev = unique("ev");
      const gc = once(custom, ev);
      const nm = expectNone(main, ev, 400);
      assert.equal(await ask(sender, "to-room", { room, event: ev, data: "custom only" }), true);
      assert.equal(await gc, "custom only");
      await nm;
    });

    test("a room's binary data reaches its members as binary", T, async (t) => {
      const [a, b] = (await Promise.all([client(t, mode), client(t, mode)])).map((x) => x.socket);
      const room = unique("room");
      await ask(a, "join", room);
      const ev = unique("ev");
      const ga = once(a, ev);
      const payload = Buffer.from([9, 8, 7, 0, 255]);
      assert.equal(await ask(b, "to-room", { room, event: ev, data: { payload } }), true);
      const got = await ga;
      assert.ok(Buffer.isBuffer(got.payload) || got.payload instanceof ArrayBuffer);
      assert.deepEqual(Buffer.from(got.payload), payload);
    });

    test("broadcast: every other socket of the namespace gets it, the sender does not", T, async (t) => {
      const [a, b, c] = (await Promise.all([
        client(t, mode),
        client(t, mode),
        client(t, mode),
      ])).map((x) => x.socket);
      const ev = unique("bc");
      const gb = once(b, ev);
      const gc = once(c, ev);
      const na = expectNone(a, ev, 500);
      assert.equal(await ask(a, "broadcast", { event: ev, data: { from: "a" } }), true);
      assert.deepEqual(await gb, { from: "a" });
      assert.deepEqual(await gc, { from: "a" });
      await na;
    });

    test("broadcast without an ack still delivers", T, async (t) => {
      const [a, b] = (await Promise.all([client(t, mode), client(t, mode)])).map((x) => x.socket);
      const ev = unique("bc");
      const gb = once(b, ev);
      const na = expectNone(a, ev, 400);
      a.emit("broadcast", { event: ev, data: "fire and forget" });
      assert.equal(await gb, "fire and forget");
      await na;
    });
  });
}
