// Shared helpers of the socket.io-client interop tests.
//
// The server under test is the `testbed` example; its URL comes from RAIN_URL
// (set by `cargo test --test interop`, or by hand:
// `RAIN_URL=http://127.0.0.1:PORT node --test tests/js/`).

import assert from "node:assert/strict";
import { io, Manager } from "socket.io-client";

export const URL = process.env.RAIN_URL;
if (!URL) {
  throw new Error(
    "RAIN_URL is not set: run these through `cargo test --test interop` " +
      "or set RAIN_URL=http://127.0.0.1:PORT of a running testbed",
  );
}

/** The three transport modes every scenario is run in. */
export const MODES = ["websocket", "polling", "upgrade"];

/** Client options of a mode: the transports, and no implicit reconnection delays. */
export function modeOptions(mode) {
  const base = {
    forceNew: true,
    timeout: 5000,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    randomizationFactor: 0,
  };
  switch (mode) {
    case "websocket":
      return { ...base, transports: ["websocket"] };
    case "polling":
      return { ...base, transports: ["polling"] };
    case "upgrade":
      // the default transports: polling first, then an upgrade to websocket
      return { ...base };
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

/** The transport a connected client of `mode` must end up on. */
export function expectedTransport(mode) {
  return mode === "polling" ? "polling" : "websocket";
}

/**
 * Resolves with the arguments (an array) of the next `event` of `emitter`,
 * rejects after `ms`.
 */
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

/** Resolves with the first argument of the next `event`, rejects after `ms`. */
export async function once(emitter, event, ms = 3000) {
  const args = await onceAll(emitter, event, ms);
  return args[0];
}

/** Resolves after `ms` if `event` does not happen on `emitter`; rejects if it does. */
export function expectNone(emitter, event, ms = 300) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      resolve();
    }, ms);
    function handler(...args) {
      clearTimeout(timer);
      emitter.off(event, handler);
      reject(
        new Error(`unexpected "${event}" within ${ms} ms: ${JSON.stringify(args)}`),
      );
    }
    emitter.on(event, handler);
  });
}

/** Collects every occurrence of `event` (its argument arrays) into an array. */
export function record(emitter, event) {
  const seen = [];
  emitter.on(event, (...args) => seen.push(args));
  return seen;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh name, unique within this run (alphanumeric, so usable in /dyn-<name>). */
let counter = 0;
export function unique(prefix = "x") {
  counter += 1;
  return `${prefix}${process.pid}n${counter}r${Math.random().toString(36).slice(2, 8)}`;
}

/** Emits with an ack and a timeout; resolves with the ack's arguments (first one). */
export function ask(socket, event, ...args) {
  return socket.timeout(3000).emitWithAck(event, ...args);
}

/** Closes `socket` (and its manager) when the test `t` ends. */
export function track(t, socket) {
  t.after(() => {
    socket.disconnect();
    const manager = socket.io;
    manager.disconnect();
  });
  return socket;
}

/** Closes `manager` (and all its sockets) when the test `t` ends. */
export function trackManager(t, manager) {
  t.after(() => {
    for (const socket of Object.values(manager.nsps)) socket.disconnect();
    manager.disconnect();
  });
  return manager;
}

/**
 * Waits until the engine of `socket` is on the transport its mode asks for: in
 * "upgrade" mode that is after the engine's "upgrade" event.
 */
export async function settleTransport(socket, mode) {
  const engine = socket.io.engine;
  if (mode === "upgrade" && engine.transport.name !== "websocket") {
    await once(engine, "upgrade", 3000);
  }
  assert.equal(engine.transport.name, expectedTransport(mode));
}

/**
 * Waits for `socket` to connect and for the server's `welcome`; returns the
 * welcome payload. Must be called before the socket can possibly connect (i.e. in
 * the same tick it was created).
 */
export async function connected(socket, mode) {
  const failed = failedConnects.get(mode) ?? 0;
  if (failed >= FAIL_FAST_AFTER) {
    throw new Error(
      `not trying: ${failed} connects in a row failed in this file in mode ${mode} (see the first failures)`,
    );
  }
  try {
    const welcome = once(socket, "welcome", 3000);
    welcome.catch(() => {}); // awaited below; never an unhandled rejection
    await waitConnect(socket, 3000);
    const payload = await welcome;
    if (mode) await settleTransport(socket, mode);
    failedConnects.set(mode, 0);
    return payload;
  } catch (err) {
    failedConnects.set(mode, (failedConnects.get(mode) ?? 0) + 1);
    throw err;
  }
}

/**
 * Fail fast: a server that cannot connect clients would otherwise cost ~3 s a
 * test. Counted per mode, so one broken transport does not hide the others.
 */
const FAIL_FAST_AFTER = 3;
const failedConnects = new Map();

/** Resolves on the next "connect" of `socket`; rejects on "connect_error" or after `ms`. */
export function waitConnect(socket, ms = 5000) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${ms} ms waiting for "connect"`));
    }, ms);
    function onConnect() {
      done();
      resolve();
    }
    function onError(err) {
      done();
      reject(new Error(`connect_error: ${err && err.message}`));
    }
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/**
 * A connected client of `mode` in namespace `ns`, closed when the test ends.
 * Returns { socket, welcome }.
 */
export async function client(t, mode, ns = "/", opts = {}) {
  const socket = track(t, io(URL + ns, { ...modeOptions(mode), ...opts }));
  const welcome = await connected(socket, mode);
  return { socket, welcome };
}

/** A Manager of `mode`, closed when the test ends. */
export function manager(t, mode, opts = {}) {
  return trackManager(t, new Manager(URL, { ...modeOptions(mode), ...opts }));
}

/** Bytes of a Buffer / Uint8Array / ArrayBuffer, as a Buffer; fails on anything else. */
export function bytes(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (value instanceof ArrayBuffer) return Buffer.from(new Uint8Array(value));
  assert.fail(`expected binary data, got ${typeof value}: ${JSON.stringify(value)}`);
}

export { io, Manager, assert };

/** Options of every test: a hung test fails after 10 s instead of stalling the run. */
export const T = { timeout: 10000 };
