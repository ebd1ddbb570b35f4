// Shared helpers of the cluster tests (socket.io-client against several nodes).
//
// Run by `cargo test --test cluster`, which starts a private redis-server and the
// nodes and sets NODE_A, NODE_B, NODE_C (the nodes' URLs) and REDIS_URL. The
// client comes from ../js/node_modules (installed by scripts/test): nothing is
// installed here.

import assert from "node:assert/strict";
import net from "node:net";
import { io } from "../js/node_modules/socket.io-client/build/esm-debug/index.js";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run these through \`cargo test --test cluster\` ` +
        "(it starts redis-server and the nodes and sets NODE_A, NODE_B, NODE_C, REDIS_URL)",
    );
  }
  return value;
}

export const NODES = { A: required("NODE_A"), B: required("NODE_B"), C: required("NODE_C") };
export const REDIS_URL = required("REDIS_URL");

/** Options of every test: a hung test fails after 15 s instead of stalling the run. */
export const T = { timeout: 15000 };

export function modeOptions(mode) {
  const base = {
    forceNew: true,
    timeout: 5000,
    reconnection: false,
  };
  switch (mode) {
    case "websocket":
      return { ...base, transports: ["websocket"] };
    case "polling":
      return { ...base, transports: ["polling"] };
    case "upgrade":
      return { ...base };
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let counter = 0;
/** A fresh alphanumeric name, unique within this run. */
export function unique(prefix = "x") {
  counter += 1;
  return `${prefix}${process.pid}n${counter}r${Math.random().toString(36).slice(2, 8)}`;
}

/** A fresh dynamic namespace (`/dyn-<alnum>`): no test sees another's traffic. */
export function freshNamespace(prefix = "t") {
  return `/dyn-${unique(prefix)}`;
}

/** Resolves with the arguments of the next `event`; rejects after `ms`. */
export function onceAll(emitter, event, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    function handler(...args) {
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args);
    }
    emitter.on(event, handler);
  });
}

export async function once(emitter, event, ms = 3000) {
  return (await onceAll(emitter, event, ms))[0];
}

/** Collects every occurrence of `event` (its argument arrays). */
export function record(emitter, event) {
  const seen = [];
  emitter.on(event, (...args) => seen.push(args));
  return seen;
}

/** Emits with an ack (3 s); resolves with the ack's first argument. */
export function ask(socket, event, ...args) {
  return socket.timeout(3000).emitWithAck(event, ...args);
}

/** Polls `check` (sync or async) every 25 ms until truthy; fails after `ms`. */
export async function waitFor(check, ms, what) {
  const started = Date.now();
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() - started >= ms) {
      assert.fail(`${what}: not true after ${ms} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(25);
  }
}

/** Waits for the connect and the testbed's welcome; returns the welcome. */
export async function connected(socket, mode) {
  const welcome = once(socket, "welcome", 5000);
  welcome.catch(() => {});
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timed out waiting for connect")), 5000);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(new Error(`connect_error: ${err && err.message}`));
    });
  });
  const payload = await welcome;
  if (mode === "upgrade" && socket.io.engine.transport.name !== "websocket") {
    await once(socket.io.engine, "upgrade", 3000);
  }
  assert.equal(socket.io.engine.transport.name, mode === "polling" ? "polling" : "websocket");
  return payload;
}

/**
 * A connected client of node `url` (NODES.X) in namespace `ns`, closed when the
 * test ends; the socket, with `.node` and `.label` set.
 */
export async function client(t, url, mode, ns = "/", label = "") {
  const socket = io(url + ns, modeOptions(mode));
  t.after(() => {
    socket.disconnect();
    socket.io.disconnect();
  });
  const welcome = await connected(socket, mode);
  assert.equal(welcome.sid, socket.id);
  socket.label = label || socket.id;
  return socket;
}

/** `fetch-sockets` through `socket`: the entries sorted by sid. */
export async function fetchSockets(socket, room) {
  const entries = await ask(socket, "fetch-sockets", room === undefined ? {} : { room });
  assert.ok(Array.isArray(entries), `fetch-sockets acked ${JSON.stringify(entries)}`);
  return [...entries].sort((x, y) => (x.sid < y.sid ? -1 : 1));
}

/** The sids fetch-sockets lists (in `room` if given), sorted. */
export async function listedSids(socket, room) {
  return (await fetchSockets(socket, room)).map((e) => e.sid).sort();
}

/** Waits until fetch-sockets (through `via`, in `room` if given) lists exactly `sockets`. */
export async function waitListed(via, room, sockets, ms = 2000) {
  const want = JSON.stringify(sockets.map((s) => s.id).sort());
  await waitFor(
    async () => {
      const got = JSON.stringify(await listedSids(via, room));
      if (got !== want) throw new Error(`lists ${got}`);
      return true;
    },
    ms,
    `fetch-sockets ${room === undefined ? "" : `{room: ${room}} `}lists exactly ${want}`,
  );
}

// ---------------------------------------------------------------------------
// A minimal Redis client (RESP over one connection per command), to wait for
// asynchronous SUBSCRIBEs and socket records before publishing.
// ---------------------------------------------------------------------------

function parseResp(buf, pos) {
  const end = buf.indexOf("\r\n", pos);
  if (end < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString("utf8", pos + 1, end);
  const next = end + 2;
  switch (type) {
    case "+":
      return { value: line, pos: next };
    case "-":
      return { value: new Error(line), pos: next };
    case ":":
      return { value: Number(line), pos: next };
    case "$": {
      const n = Number(line);
      if (n < 0) return { value: null, pos: next };
      if (buf.length < next + n + 2) return null;
      return { value: buf.toString("utf8", next, next + n), pos: next + n + 2 };
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return { value: null, pos: next };
      const out = [];
      let p = next;
      for (let i = 0; i < n; i += 1) {
        const r = parseResp(buf, p);
        if (!r) return null;
        out.push(r.value);
        p = r.pos;
      }
      return { value: out, pos: p };
    }
    default:
      throw new Error(`unexpected RESP reply type ${JSON.stringify(type)}`);
  }
}

/** Runs one Redis command on the test's redis-server; resolves with the reply. */
export function redis(...args) {
  const { hostname, port } = new URL(REDIS_URL);
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ host: hostname, port: Number(port) });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${args.join(" ")}: no reply within 2 s`));
    }, 2000);
    sock.on("connect", () => {
      let cmd = `*${args.length}\r\n`;
      for (const a of args) {
        const s = String(a);
        cmd += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
      }
      sock.write(cmd);
    });
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const parsed = parseResp(buf, 0);
      if (!parsed) return;
      clearTimeout(timer);
      sock.end();
      if (parsed.value instanceof Error) reject(parsed.value);
      else resolve(parsed.value);
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Subscriber connections on `channel` (PUBSUB NUMSUB). */
export async function numsub(channel) {
  const reply = await redis("PUBSUB", "NUMSUB", channel);
  return Number(reply[1]);
}

/**
 * Waits until `count` subscriber connections listen on `channel`: a node
 * SUBSCRIBEs asynchronously after its first local member joined, so a message
 * published right after a join could otherwise legitimately be missed.
 */
export async function waitSubscribers(channel, count, ms = 2000) {
  await waitFor(async () => (await numsub(channel)) >= count, ms, `${count} subscriber(s) on ${channel}`);
}

/** Waits until the socket records of `sockets` are in Redis (rain:conn:{sid}). */
export async function waitRegistered(sockets, ms = 2000) {
  for (const s of sockets) {
    await waitFor(async () => (await redis("EXISTS", `rain:conn:${s.id}`)) === 1, ms, `rain:conn:${s.id} exists`);
  }
}

/** Bytes of a Buffer / Uint8Array / ArrayBuffer, as a Buffer. */
export function bytes(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (value instanceof ArrayBuffer) return Buffer.from(new Uint8Array(value));
  assert.fail(`expected binary data, got ${typeof value}: ${JSON.stringify(value)}`);
}

export { io, assert };
