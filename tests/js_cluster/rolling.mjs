// socket.io-client through HAProxy while the nodes behind it restart one
// after another. Run by `cargo test --test rolling_restart`, which starts a
// private redis-server, three rain-node processes, the `probe` HTTP
// component's backend and HAProxy, sets BALANCER_URL, publishes the room's
// `tick`s (POST /emit) and restarts the nodes.
//
// CLIENTS clients (default 300), each one Manager (one Engine.IO connection,
// default transports: polling upgraded to websocket, default reconnection)
// with four namespaces sharing one session: /core (its token from `session`,
// then `change_language`), /chat/1.0/main (`join` the room with a nick, again
// after every reconnect; receives `tick(seq)`), /echo/1.0/main (the first
// CALLERS clients call `echo` in turn, one every CALL_PERIOD_MS, 5 s ack
// timeout, sent again after a reconnect: `retries`) and /probe/1.0/main
// (`whoami`: the session's id and data as the component sees them).
//
// Commands on stdin, one answer line on stdout each:
//   phase K   → `phase K`: later disconnects count for restart K
//   status    → `status {up, clients, phases: {K: {disconnects, reconnects, maxMs}}, reasons, calls}`
//   check     → `check {ok, bad: [...]}`: every client's whoami names its
//               first session id, language and nick
//   finish FIRST LAST → `summary {...}` (missed: {seq: clients that missed it})
//               and exit 0
// Not a `node --test` file: it needs the cluster. The client comes from
// ../js/node_modules.

import readline from "node:readline";
import { Manager } from "../js/node_modules/socket.io-client/build/esm/index.js";

const URL = process.env.BALANCER_URL;
if (!URL) throw new Error("BALANCER_URL is not set: run through `cargo test --test rolling_restart`");
const CLIENTS = Number(process.env.CLIENTS || 300);
const CALLERS = Math.min(CLIENTS, Number(process.env.CALLERS || 30));
const CALL_PERIOD_MS = Number(process.env.CALL_PERIOD_MS || 100);
const ROOM = process.env.ROOM || "rolling";
const MAX_SEQ = 100000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const out = (line) => process.stdout.write(`${line}\n`);

// A RAIN call: acks are `(error | null, data)`.
function call(socket, event, arg, timeout = 5000) {
  return new Promise((resolve, reject) => {
    socket.timeout(timeout).emit(event, arg, (err, error, data) => {
      if (err) reject(err);
      else if (error) reject(new Error(JSON.stringify(error)));
      else resolve(data);
    });
  });
}

function connected(socket, what) {
  if (socket.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no connect within 10 s`)), 10000);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

let phase = 0;
const phases = {};
const reasons = {};
const problems = [];
let joinsInterrupted = 0;
const clients = [];

function phaseStats(k) {
  phases[k] ??= { disconnects: 0, reconnects: 0, maxMs: 0 };
  return phases[k];
}

async function setup(i) {
  const manager = new Manager(URL, { timeout: 5000 });
  const c = { i, manager, received: new Uint8Array(MAX_SEQ), joined: false, downAt: null, downPhase: 0 };
  c.core = manager.socket("/core");
  await connected(c.core, `client ${i} /core`);
  const { token } = await call(c.core, "session", {});
  c.token = token;
  c.sessionId = token.split(".")[0];
  const auth = { sessionId: token };
  c.core.auth = auth;
  await call(c.core, "change_language", { language: `l${i}` });
  c.chat = manager.socket("/chat/1.0/main", { auth });
  // The official client's at-least-once emits: a call whose connection
  // closed before its answer (the close crossing it on the wire) is sent
  // again after the reconnect; each try waits 5 s.
  c.echo = manager.socket("/echo/1.0/main", { auth, retries: 3, ackTimeout: 5000 });
  c.echoDisconnects = 0;
  c.echo.on("disconnect", () => {
    c.echoDisconnects += 1;
  });
  c.probe = manager.socket("/probe/1.0/main", { auth });
  c.chat.on("tick", (seq) => {
    if (Number.isInteger(seq) && seq > 0 && seq < MAX_SEQ) c.received[seq] = 1;
  });
  c.chat.on("disconnect", (reason) => {
    c.joined = false;
    reasons[reason] = (reasons[reason] ?? 0) + 1;
    if (reason === "io server disconnect" || reason === "io client disconnect") {
      problems.push(`client ${i}: ${reason} (no reconnection)`);
    }
    if (c.downAt === null) {
      c.downAt = Date.now();
      c.downPhase = phase;
      phaseStats(phase).disconnects += 1;
    }
  });
  // Rooms belong to a socket: after a reconnect the client joins again, as
  // an application would.
  c.chat.on("connect", () => {
    call(c.chat, "join", { room: ROOM, nick: `n${i}` }).then(
      () => {
        c.joined = true;
        if (c.downAt !== null) {
          const stats = phaseStats(c.downPhase);
          stats.reconnects += 1;
          stats.maxMs = Math.max(stats.maxMs, Date.now() - c.downAt);
          c.downAt = null;
        }
      },
      (error) => {
        // Closed again before the answer: the next connect joins again.
        if (c.chat.connected) problems.push(`client ${i}: join after connect: ${error.message}`);
        else joinsInterrupted += 1;
      },
    );
  });
  await Promise.all([
    connected(c.chat, `client ${i} chat`),
    connected(c.echo, `client ${i} echo`),
    connected(c.probe, `client ${i} probe`),
  ]);
  while (!c.joined) await sleep(10);
  c.first = await call(c.probe, "whoami", {});
  clients[i] = c;
}

const up = (c) => c && c.joined && c.core.connected && c.echo.connected && c.probe.connected;

// Connect in waves, not 300 handshakes at once.
const started = Date.now();
for (let wave = 0; wave < CLIENTS; wave += 25) {
  const batch = [];
  for (let i = wave; i < Math.min(CLIENTS, wave + 25); i++) batch.push(setup(i));
  await Promise.all(batch);
}
const nodes = {};
for (const c of clients) nodes[c.first.node] = (nodes[c.first.node] ?? 0) + 1;
out(`ready ${JSON.stringify({ clients: clients.length, ms: Date.now() - started, whoamiServedBy: nodes })}`);

// Routed calls at a fixed rate, from the first CALLERS clients in turn.
const calls = { sent: 0, answered: 0, resent: 0, skipped: 0, failed: [], answeredByPhase: {} };
const pending = new Set();
let next = 0;
const caller = setInterval(() => {
  const c = clients[next++ % CALLERS];
  if (!c.echo.connected) {
    calls.skipped += 1;
    return;
  }
  const n = ++calls.sent;
  const sentIn = phase;
  const disconnects = c.echoDisconnects;
  const p = new Promise((resolve, reject) => {
    c.echo.emit("echo", { i: c.i, n }, (err, error, data) => {
      if (err) reject(err);
      else if (error) reject(new Error(JSON.stringify(error)));
      else resolve(data);
    });
  })
    .then((data) => {
      if (data?.args?.[0]?.n !== n) throw new Error(`wrong answer ${JSON.stringify(data)}`);
      calls.answered += 1;
      if (c.echoDisconnects > disconnects) calls.resent += 1;
      calls.answeredByPhase[sentIn] = (calls.answeredByPhase[sentIn] ?? 0) + 1;
    })
    .catch((error) => calls.failed.push({ client: c.i, n, phase: sentIn, at: Date.now(), error: error.message }))
    .finally(() => pending.delete(p));
  pending.add(p);
}, CALL_PERIOD_MS);

async function check() {
  const bad = [];
  await Promise.all(
    clients.map(async (c) => {
      try {
        const now = await call(c.probe, "whoami", {});
        const data = now.session?.data ?? {};
        if (now.session?.id !== c.sessionId || data.language !== `l${c.i}` || data.nick !== `n${c.i}`) {
          bad.push({ client: c.i, first: c.first.session, now: now.session });
        }
      } catch (error) {
        bad.push({ client: c.i, error: error.message });
      }
    }),
  );
  return { ok: clients.length - bad.length, bad: bad.slice(0, 10), badCount: bad.length };
}

async function finish(first, last) {
  clearInterval(caller);
  await Promise.allSettled([...pending]);
  const missed = {};
  let received = 0;
  for (let seq = first; seq <= last; seq++) {
    let misses = 0;
    for (const c of clients) {
      if (c.received[seq]) received += 1;
      else misses += 1;
    }
    if (misses > 0) missed[seq] = misses;
  }
  return { clients: clients.length, first, last, received, missed, calls, phases, reasons, joinsInterrupted, problems };
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const [command, ...args] = line.trim().split(/\s+/);
  if (command === "phase") {
    phase = Number(args[0]);
    phaseStats(phase);
    out(`phase ${phase}`);
  } else if (command === "status") {
    const count = clients.filter(up).length;
    const { failed, ...rest } = calls;
    out(`status ${JSON.stringify({ up: count, clients: clients.length, phases, reasons, joinsInterrupted, calls: { ...rest, failed: failed.length }, problems: problems.length })}`);
  } else if (command === "check") {
    out(`check ${JSON.stringify(await check())}`);
  } else if (command === "finish") {
    out(`summary ${JSON.stringify(await finish(Number(args[0]), Number(args[1])))}`);
    process.exit(0);
  } else if (command) {
    out(`error unknown command ${command}`);
  }
}
process.exit(0);
