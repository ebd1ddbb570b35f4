// socket.io-client through HAProxy (round-robin, no stickiness) in front of
// three nodes. Run by `cargo test --test balancer`, which starts a private
// redis-server, the nodes and HAProxy and sets BALANCER_URL.
//
//   node balancer.mjs modes        websocket only, polling only, polling
//                                  upgraded to websocket: connect, acks, a
//                                  room broadcast between two clients
//   node balancer.mjs soak         polling-only clients exchange events for
//                                  SOAK_MS (default 60000); prints a summary
//                                  line the test checks, exits 1 on any loss
//
// Not a `node --test` file (the cluster tests' runner skips it): it needs
// the balancer. The client comes from ../js/node_modules.

import assert from "node:assert/strict";
import { io } from "../js/node_modules/socket.io-client/build/esm-debug/index.js";

const URL = process.env.BALANCER_URL;
if (!URL) throw new Error("BALANCER_URL is not set: run through `cargo test --test balancer`");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function connect(transports) {
  const socket = io(URL, { forceNew: true, timeout: 5000, reconnection: false, transports });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no welcome within 5 s")), 5000);
    socket.once("welcome", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("connect_error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

const MODES = { websocket: ["websocket"], polling: ["polling"], upgrade: ["polling", "websocket"] };

async function modes() {
  for (const [mode, transports] of Object.entries(MODES)) {
    const a = await connect(transports);
    const b = await connect(transports);
    if (mode === "upgrade") {
      for (const socket of [a, b]) {
        if (socket.io.engine.transport.name !== "websocket") {
          await new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error("no upgrade within 5 s")), 5000);
            socket.io.engine.once("upgrade", () => {
              clearTimeout(timer);
              resolve();
            });
          });
        }
      }
    }
    const expected = mode === "polling" ? "polling" : "websocket";
    assert.equal(a.io.engine.transport.name, expected, `${mode}: transport`);
    for (let i = 0; i < 20; i++) {
      const answer = await a.timeout(3000).emitWithAck("echo", { i, mode });
      assert.deepEqual(answer, { i, mode });
    }
    const room = `room-${mode}-${process.pid}`;
    await b.timeout(3000).emitWithAck("join", room);
    const got = new Promise((resolve) => b.once("news", resolve));
    await a.timeout(3000).emitWithAck("to-room", { room, event: "news", data: mode });
    assert.equal(await Promise.race([got, sleep(3000).then(() => "nothing")]), mode);
    a.disconnect();
    b.disconnect();
    console.log(`ok ${mode}`);
  }
}

async function soak() {
  const duration = Number(process.env.SOAK_MS || 60000);
  const clients = Number(process.env.SOAK_CLIENTS || 6);
  const period = Number(process.env.SOAK_PERIOD_MS || 200);
  const room = `soak-${process.pid}`;
  const sockets = [];
  const received = [];
  const problems = [];
  for (let i = 0; i < clients; i++) {
    const socket = await connect(["polling"]);
    received.push(0);
    socket.on("tick", () => {
      received[i] += 1;
    });
    socket.on("disconnect", (reason) => problems.push(`client ${i} disconnected: ${reason}`));
    socket.io.engine.on("error", (error) => problems.push(`client ${i}: ${error}`));
    await socket.timeout(3000).emitWithAck("join", room);
    sockets.push(socket);
  }
  let sent = 0;
  let acked = 0;
  let ticks = 0;
  const started = Date.now();
  const pending = [];
  while (Date.now() - started < duration && problems.length === 0) {
    // Every client: an event with an ack (client → node → client); one
    // client: a tick to the room, which every client must receive.
    for (const [i, socket] of sockets.entries()) {
      sent += 1;
      pending.push(
        socket
          .timeout(10000)
          .emitWithAck("echo", { i, n: sent })
          .then(() => {
            acked += 1;
          })
          .catch((error) => problems.push(`echo of client ${i}: ${error}`)),
      );
    }
    ticks += 1;
    pending.push(
      sockets[ticks % clients]
        .timeout(10000)
        .emitWithAck("to-room", { room, event: "tick", data: ticks })
        .catch((error) => problems.push(`tick ${ticks}: ${error}`)),
    );
    await sleep(period);
  }
  await Promise.all(pending);
  // The last ticks are on their way.
  const deadline = Date.now() + 5000;
  while (received.some((n) => n < ticks) && Date.now() < deadline) await sleep(50);
  for (const socket of sockets) {
    socket.off("disconnect");
    socket.disconnect();
  }
  const summary = { seconds: Math.round((Date.now() - started) / 1000), clients, sent, acked, ticks, received, problems };
  console.log(`summary ${JSON.stringify(summary)}`);
  assert.deepEqual(problems, []);
  assert.equal(acked, sent, "every echo answered");
  for (const [i, n] of received.entries()) assert.equal(n, ticks, `client ${i} got every tick`);
}

const what = process.argv[2];
if (what === "modes") await modes();
else if (what === "soak") await soak();
else throw new Error("usage: node balancer.mjs modes|soak");
process.exit(0);
