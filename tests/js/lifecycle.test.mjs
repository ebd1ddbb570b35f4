// Disconnections: by the client, by the server (no reconnection) and a dropped
// transport (automatic reconnection with a new session).

import { describe, test } from "node:test";
import {
  MODES,
  T,
  assert,
  ask,
  client,
  connected,
  expectNone,
  manager,
  once,
  onceAll,
  record,
  sleep,
  unique,
} from "./helpers.mjs";

for (const mode of MODES) {
  describe(`lifecycle [${mode}]`, () => {
    test("client disconnect: the server forgets the socket", T, async (t) => {
      // `gone` ("/") and `keep` ("/custom") share one connection, so packets the
      // server would still send to `gone` would be visible on the manager.
      const m = manager(t, mode);
      const gone = m.socket("/");
      const keep = m.socket("/custom");
      await Promise.all([connected(gone, mode), connected(keep, mode)]);
      const room = unique("room");
      assert.deepEqual(await ask(gone, "join", room), [room]);
      const other = (await client(t, mode)).socket;
      const observer = (await client(t, mode)).socket;
      await ask(observer, "join", room);

      const reason = once(gone, "disconnect");
      gone.disconnect();
      assert.equal(await reason, "io client disconnect");
      assert.equal(gone.connected, false);
      // the connection itself is still up for /custom; a round trip on it makes
      // sure the server has processed the namespace disconnect first
      assert.equal(await ask(keep, "echo", "still here"), "still here");
      assert.equal(m.engine.readyState, "open");

      const packets = [];
      m.on("packet", (p) => {
        if (p.nsp === "/") packets.push(p);
      });
      const bc = unique("bc");
      const toRoom = unique("tr");
      const ob1 = once(observer, bc);
      assert.equal(await ask(other, "broadcast", { event: bc, data: 1 }), true);
      await ob1;
      const ob2 = once(observer, toRoom);
      assert.equal(await ask(other, "to-room", { room, event: toRoom, data: 2 }), true);
      await ob2;
      await sleep(300);
      assert.deepEqual(packets, [], "the server still sent packets to the disconnected namespace");
      assert.equal(await ask(keep, "echo", "end"), "end");
    });

    test("client disconnect of the only socket closes the connection; others unaffected", T, async (t) => {
      const { socket } = await client(t, mode);
      const other = (await client(t, mode)).socket;
      const engine = socket.io.engine;
      const closed = once(engine, "close", 3000);
      socket.disconnect();
      await closed;
      const ev = unique("bc");
      const gone = expectNone(socket, ev, 300);
      const self = expectNone(other, ev, 300);
      assert.equal(await ask(other, "broadcast", { event: ev, data: "x" }), true);
      await gone;
      await self;
      assert.equal(await ask(other, "echo", "alive"), "alive");
    });

    test("disconnect-me: 'io server disconnect', and no reconnection", T, async (t) => {
      const { socket } = await client(t, mode, "/", { reconnection: true });
      const connects = record(socket, "connect");
      const reason = once(socket, "disconnect", 3000);
      socket.emit("disconnect-me");
      assert.equal(await reason, "io server disconnect");
      assert.equal(socket.connected, false);
      assert.equal(socket.active, false, "the client must not plan a reconnection");
      await expectNone(socket, "connect", 1500);
      assert.equal(connects.length, 0);
      assert.equal(socket.connected, false);
    });

    test("disconnect-me in one namespace leaves the other one connected", T, async (t) => {
      const m = manager(t, mode);
      const main = m.socket("/");
      const custom = m.socket("/custom");
      await Promise.all([connected(main, mode), connected(custom, mode)]);
      const reason = once(custom, "disconnect", 3000);
      custom.emit("disconnect-me");
      assert.equal(await reason, "io server disconnect");
      assert.equal(main.connected, true);
      assert.equal(await ask(main, "echo", "main lives"), "main lives");
      await expectNone(custom, "connect", 500);
    });

    test("drop-transport: automatic reconnection with a new sid", T, async (t) => {
      const { socket, welcome } = await client(t, mode, "/", {
        auth: { token: "again" },
        reconnection: true,
      });
      const firstSid = socket.id;
      const firstEngine = socket.io.engine.id;
      assert.equal(welcome.sid, firstSid);
      const disconnected = onceAll(socket, "disconnect", 5000);
      const rewelcome = once(socket, "welcome", 8000);
      const reconnected = once(socket, "connect", 8000);
      const started = Date.now();
      socket.emit("drop-transport");
      const [reason] = await disconnected;
      t.diagnostic(`disconnect reason: ${reason}`);
      assert.ok(
        reason === "transport close" || reason === "transport error",
        `unexpected disconnect reason ${JSON.stringify(reason)}`,
      );
      await reconnected;
      const elapsed = Date.now() - started;
      t.diagnostic(`reconnected after ${elapsed} ms`);
      assert.ok(elapsed < 5000, `reconnection took ${elapsed} ms`);
      const again = await rewelcome;
      assert.notEqual(socket.id, firstSid, "a new socket id after reconnection");
      assert.notEqual(socket.io.engine.id, firstEngine, "a new engine session");
      assert.deepEqual(again, { sid: socket.id, namespace: "/", auth: { token: "again" } });
      if (mode === "upgrade" && socket.io.engine.transport.name !== "websocket") {
        await once(socket.io.engine, "upgrade", 3000);
      }
      assert.equal(await ask(socket, "echo", "after reconnect"), "after reconnect");
    });

    test("drop-transport reconnects every namespace of the connection", T, async (t) => {
      const m = manager(t, mode, { reconnection: true });
      const main = m.socket("/");
      const custom = m.socket("/custom");
      await Promise.all([connected(main, mode), connected(custom, mode)]);
      const sids = [main.id, custom.id];
      const back = Promise.all([once(main, "welcome", 8000), once(custom, "welcome", 8000)]);
      const reconnects = once(m, "reconnect", 8000);
      main.emit("drop-transport");
      await reconnects;
      const [w1, w2] = await back;
      assert.equal(w1.namespace, "/");
      assert.equal(w2.namespace, "/custom");
      assert.notEqual(main.id, sids[0]);
      assert.notEqual(custom.id, sids[1]);
      assert.equal(await ask(custom, "echo", "custom back"), "custom back");
      assert.equal(await ask(main, "echo", "main back"), "main back");
    });
  });
}
