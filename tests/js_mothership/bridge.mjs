// A socket.io-client bridge for tests/mothership.rs: the Rust test drives the
// official client through this process, one JSON request per stdin line, and
// reads one `RES {…}` line per request on stdout (same `id`). The Rust side
// keeps process control (nodes, Redis, backends, kills) and this side keeps the
// clients, which stay connected across requests.
//
// Requests (`name` names a client of this bridge):
//   {id, op: "connect", name, url, ns, auth?, transports?}
//       → {ok: true, sid} | {ok: false, error, data}   (connect_error)
//   {id, op: "emit", name, event, args, timeout?}
//       → {ok: true, ack: [...every ack argument], at} | {ok: false, error}
//     (at: Date.now() when the ack arrived)
//     RAIN acks are `(error | null, data)`, so `ack` is `[error, data]`.
//   {id, op: "emits", name, event, argsList: [[...], ...], timeout?}
//       one after the other, each awaiting its ack → {ok: true, acks: [[...], ...]}
//   {id, op: "events", name, event, count?, timeout?}
//       waits until `count` (default 1) `event`s arrived, or `timeout` ms
//       (default 3000) → {ok: true, events: [[...args], ...]} (all so far; taken)
//   {id, op: "closes", name, count?, timeout?}
//       waits until the server closed client `name`'s connection `count`
//       (default 1) times, or `timeout` ms (default 3000)
//       → {ok: true, closes: [{at, reason}, ...]} (at: Date.now() when seen)
//   {id, op: "disconnect", name} → {ok: true}
//   {id, op: "exit"}
//
// socket.io-client comes from ../js/node_modules (installed by scripts/test).

import readline from "node:readline";
import { io } from "../js/node_modules/socket.io-client/build/esm-debug/index.js";

const clients = new Map();

function reply(id, body) {
  process.stdout.write(`RES ${JSON.stringify({ id, ...body })}\n`);
}

function get(name) {
  const c = clients.get(name);
  if (!c) throw new Error(`no client named ${name}`);
  return c;
}

function connect(req) {
  return new Promise((resolve) => {
    const socket = io(req.url + req.ns, {
      forceNew: true,
      reconnection: false,
      timeout: 5000,
      transports: req.transports ?? ["websocket"],
      auth: req.auth ?? {},
    });
    const entry = { socket, events: new Map(), waiters: [], closes: [] };
    socket.on("disconnect", (reason) => {
      entry.closes.push({ at: Date.now(), reason });
      for (const w of [...entry.waiters]) w();
    });
    socket.onAny((event, ...args) => {
      if (!entry.events.has(event)) entry.events.set(event, []);
      entry.events.get(event).push(args);
      for (const w of [...entry.waiters]) w();
    });
    const timer = setTimeout(() => {
      socket.close();
      resolve({ ok: false, error: "connect timed out" });
    }, 5000);
    socket.once("connect", () => {
      clearTimeout(timer);
      clients.set(req.name, entry);
      resolve({ ok: true, sid: socket.id });
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      resolve({ ok: false, error: err?.message ?? String(err), data: err?.data ?? null });
    });
  });
}

function emit(socket, event, args, timeout) {
  return new Promise((resolve) => {
    const started = Date.now();
    socket.timeout(timeout).emit(event, ...args, (err, ...ack) => {
      if (err) resolve({ ok: false, error: `no ack within ${timeout} ms`, elapsed: Date.now() - started });
      else resolve({ ok: true, ack, elapsed: Date.now() - started, at: Date.now() });
    });
  });
}

function events(entry, event, count, timeout) {
  return new Promise((resolve) => {
    const done = () => {
      const got = entry.events.get(event) ?? [];
      entry.events.set(event, []);
      resolve({ ok: true, events: got });
    };
    const check = () => {
      if ((entry.events.get(event) ?? []).length >= count) {
        clearTimeout(timer);
        entry.waiters = entry.waiters.filter((w) => w !== check);
        done();
      }
    };
    const timer = setTimeout(() => {
      entry.waiters = entry.waiters.filter((w) => w !== check);
      done();
    }, timeout);
    entry.waiters.push(check);
    check();
  });
}

function closes(entry, count, timeout) {
  return new Promise((resolve) => {
    const check = () => {
      if (entry.closes.length >= count) {
        clearTimeout(timer);
        entry.waiters = entry.waiters.filter((w) => w !== check);
        resolve({ ok: true, closes: entry.closes });
      }
    };
    const timer = setTimeout(() => {
      entry.waiters = entry.waiters.filter((w) => w !== check);
      resolve({ ok: true, closes: entry.closes });
    }, timeout);
    entry.waiters.push(check);
    check();
  });
}

async function handle(req) {
  switch (req.op) {
    case "connect":
      return connect(req);
    case "emit":
      return emit(get(req.name).socket, req.event, req.args ?? [], req.timeout ?? 5000);
    case "emits": {
      const socket = get(req.name).socket;
      const acks = [];
      for (const args of req.argsList) {
        const r = await emit(socket, req.event, args, req.timeout ?? 5000);
        if (!r.ok) return { ok: false, error: `${r.error} (after ${acks.length} acks)`, acks };
        acks.push(r.ack);
      }
      return { ok: true, acks };
    }
    case "events":
      return events(get(req.name), req.event, req.count ?? 1, req.timeout ?? 3000);
    case "closes":
      return closes(get(req.name), req.count ?? 1, req.timeout ?? 3000);
    case "disconnect": {
      const c = get(req.name);
      c.socket.disconnect();
      clients.delete(req.name);
      return { ok: true };
    }
    case "exit":
      for (const c of clients.values()) c.socket.disconnect();
      setTimeout(() => process.exit(0), 50);
      return { ok: true };
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  let req;
  try {
    req = JSON.parse(line);
  } catch (err) {
    process.stdout.write(`RES ${JSON.stringify({ id: null, ok: false, error: `bad request: ${err.message}` })}\n`);
    return;
  }
  // Requests run concurrently: each answers with its own id.
  handle(req).then(
    (body) => reply(req.id, body),
    (err) => reply(req.id, { ok: false, error: String(err?.stack ?? err) }),
  );
});
lines.on("close", () => {
  for (const c of clients.values()) c.socket.disconnect();
  setTimeout(() => process.exit(0), 50);
});
process.stdout.write("READY\n");
