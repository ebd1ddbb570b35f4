// Connecting: auth and the welcome event, refused connects, namespaces
// (static, dynamic, several on one connection) and the transport each mode ends on.

import { describe, test } from "node:test";
import {
  MODES,
  T,
  URL,
  assert,
  ask,
  client,
  connected,
  expectNone,
  expectedTransport,
  io,
  manager,
  modeOptions,
  once,
  record,
  track,
  unique,
} from "./helpers.mjs";

for (const mode of MODES) {
  describe(`connect [${mode}]`, () => {
    test("connect with auth: welcome has the sid, the namespace and the auth", T, async (t) => {
      const auth = { token: "secret-token", user: { name: "ada", n: 1 } };
      const { socket, welcome } = await client(t, mode, "/", { auth });
      assert.equal(socket.connected, true);
      assert.equal(typeof socket.id, "string");
      assert.ok(socket.id.length > 0);
      assert.deepEqual(welcome, { sid: socket.id, namespace: "/", auth });
      assert.equal(socket.io.engine.transport.name, expectedTransport(mode));
    });

    test("connect without auth: auth is an empty object, as on the reference server", T, async (t) => {
      const { socket, welcome } = await client(t, mode);
      assert.deepEqual(welcome, { sid: socket.id, namespace: "/", auth: {} });
    });

    test("a refused connect gives connect_error 'rejected'", T, async (t) => {
      const socket = track(
        t,
        io(URL, { ...modeOptions(mode), auth: { token: "reject" } }),
      );
      const welcomes = record(socket, "welcome");
      const connects = record(socket, "connect");
      const err = await once(socket, "connect_error", 5000);
      assert.ok(err instanceof Error);
      assert.equal(err.message, "rejected");
      assert.equal(socket.connected, false);
      await expectNone(socket, "connect", 300);
      assert.equal(welcomes.length, 0);
      assert.equal(connects.length, 0);
    });

    test("a refused connect does not hurt other namespaces of the connection", T, async (t) => {
      const m = manager(t, mode);
      const refused = m.socket("/custom", { auth: { token: "reject" } });
      const ok = m.socket("/", { auth: { token: "fine" } });
      const [err, welcome] = await Promise.all([
        once(refused, "connect_error", 5000),
        connected(ok, mode),
      ]);
      assert.equal(err.message, "rejected");
      assert.deepEqual(welcome, { sid: ok.id, namespace: "/", auth: { token: "fine" } });
      assert.deepEqual(await ask(ok, "echo", "still alive"), "still alive");
    });

    test("namespace /custom", T, async (t) => {
      const { socket, welcome } = await client(t, mode, "/custom", { auth: { a: 1 } });
      assert.deepEqual(welcome, { sid: socket.id, namespace: "/custom", auth: { a: 1 } });
      assert.equal(await ask(socket, "echo", "in custom"), "in custom");
    });

    test("dynamic namespace /dyn-abc", T, async (t) => {
      const { socket, welcome } = await client(t, mode, "/dyn-abc");
      assert.deepEqual(welcome, { sid: socket.id, namespace: "/dyn-abc", auth: {} });
      assert.deepEqual(await ask(socket, "echo", { x: [1, 2] }), { x: [1, 2] });
      const rooms = await ask(socket, "join", "r1");
      assert.deepEqual(rooms, ["r1"]);
    });

    test("a fresh dynamic namespace is created on first connect", T, async (t) => {
      const ns = `/dyn-${unique("fresh")}`;
      const { socket, welcome } = await client(t, mode, ns);
      assert.equal(welcome.namespace, ns);
      assert.equal(welcome.sid, socket.id);
      assert.equal(await ask(socket, "echo", 42), 42);
    });

    test("an unknown namespace is refused", T, async (t) => {
      const socket = track(t, io(`${URL}/no-such-namespace`, modeOptions(mode)));
      const err = await once(socket, "connect_error", 5000);
      assert.ok(err instanceof Error);
      assert.equal(socket.connected, false);
      t.diagnostic(`connect_error message: ${err.message}`);
    });

    test("two namespaces on one connection share one engine session", T, async (t) => {
      const m = manager(t, mode);
      const opens = record(m, "open");
      const main = m.socket("/", { auth: { who: "main" } });
      const custom = m.socket("/custom", { auth: { who: "custom" } });
      const [w1, w2] = await Promise.all([connected(main, mode), connected(custom, mode)]);
      assert.deepEqual(w1, { sid: main.id, namespace: "/", auth: { who: "main" } });
      assert.deepEqual(w2, { sid: custom.id, namespace: "/custom", auth: { who: "custom" } });
      assert.notEqual(main.id, custom.id);
      assert.equal(main.io, custom.io);
      assert.equal(opens.length, 1, "one engine session opened");
      const engineId = m.engine.id;
      assert.ok(engineId);
      // both namespaces work, in parallel, over the same session
      const [a, b] = await Promise.all([
        ask(main, "echo", "to main"),
        ask(custom, "echo", "to custom"),
      ]);
      assert.equal(a, "to main");
      assert.equal(b, "to custom");
      assert.equal(m.engine.id, engineId, "still the same engine session");
      assert.equal(opens.length, 1);
      // a broadcast in /custom stays in /custom
      const other = await client(t, mode, "/custom");
      const got = once(other.socket, "ns-check");
      const notMain = expectNone(main, "ns-check", 400);
      assert.equal(await ask(custom, "broadcast", { event: "ns-check", data: 7 }), true);
      assert.equal(await got, 7);
      await notMain;
    });

    if (mode === "upgrade") {
      test("starts on polling, upgrades to websocket, keeps working", T, async (t) => {
        const socket = track(t, io(URL, modeOptions(mode)));
        const engine = socket.io.engine;
        assert.equal(engine.transport.name, "polling");
        const upgraded = once(engine, "upgrade", 5000);
        const welcome = once(socket, "welcome", 5000);
        await once(socket, "connect", 5000);
        // an event sent right away, possibly during the upgrade, still gets through
        const early = ask(socket, "echo", "early");
        const transport = await upgraded;
        assert.equal(transport.name, "websocket");
        assert.equal(socket.io.engine.transport.name, "websocket");
        assert.equal((await welcome).sid, socket.id);
        assert.equal(await early, "early");
        assert.equal(await ask(socket, "echo", "late"), "late");
      });
    } else {
      test(`stays on ${mode}`, T, async (t) => {
        const { socket } = await client(t, mode);
        const engine = socket.io.engine;
        await expectNone(engine, "upgrade", 500);
        assert.equal(engine.transport.name, mode);
        assert.equal(await ask(socket, "echo", "ok"), "ok");
      });
    }
  });
}
