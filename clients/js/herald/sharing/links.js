// How a tab reaches the hub of its origin's shared connection: a SharedWorker that runs the hub for every tab,
// or, where there is none (or a token function must be called, which only a tab can do), an election among the
// tabs — Web Locks grant one tab the hub, BroadcastChannel carries the messages — in which the next tab in line
// takes over when the elected one closes. Either way a tab holds a lock named after itself for as long as it
// lives, and the hub waits for that lock: granted, it means the tab is gone, and its subscriptions go with it.

import { SharedHub } from "./hub.js";

/** The options a hub in a SharedWorker runs with: the tab's, less what cannot be sent (functions). */
function shareable(opts) {
  const copy = {};
  for (const [key, value] of Object.entries(opts)) {
    if (typeof value !== "function" && typeof value !== "object") copy[key] = value;
  }
  copy.transports = [...opts.transports];
  copy.token = null;
  return copy;
}

/**
 * What names a shared connection: the server and the options that shape it. Clients with other transports or
 * intervals (the demo page's four panels, one per technique) get connections of their own.
 */
function shareName(baseUrl, opts) {
  const shape = shareable(opts);
  delete shape.token;
  delete shape.share;
  return `herald ${baseUrl} ${JSON.stringify(shape)}`;
}

/**
 * Holds the tab's own lock until `release()`. `held` resolves once it is held: a tab says hello only then, or a
 * hub that asks for the lock first would be granted it and take the tab for gone.
 */
function holdTabLock(env, tab) {
  let release = () => {};
  let granted;
  const held = new Promise((resolve) => (granted = resolve));
  if (!env.locks) granted();
  env.locks
    ?.request(`herald-tab ${tab}`, () => {
      granted();
      return new Promise((resolve) => (release = resolve));
    })
    .catch(() => granted());
  return { held, release: () => release() };
}

/** Calls `gone()` once the tab `tab` has closed (its lock is free). */
function whenTabGone(env, tab, gone) {
  env.locks?.request(`herald-tab ${tab}`, () => gone()).catch(() => {});
}

/** The link through a SharedWorker, or null when none can be started. `failed()` is called if it dies at once. */
export function workerLink({ env, opts, baseUrl, tab, receive, failed }) {
  let worker;
  try {
    const script = new URL("./worker.js", import.meta.url);
    worker = new env.SharedWorker(script, { type: "module", name: shareName(baseUrl, opts) });
  } catch {
    return null; // another origin's script, or no module workers
  }
  const tabLock = holdTabLock(env, tab);
  let heard = false;
  const port = worker.port;
  port.onmessage = (event) => {
    heard = true;
    receive(event.data);
  };
  worker.onerror = () => {
    if (!heard) failed();
  };
  port.start?.();
  return {
    mode: "worker",
    ready: tabLock.held,
    leader: () => false,
    post(message) {
      port.postMessage(message.type === "hello" ? { ...message, baseUrl, opts: shareable(opts) } : message);
    },
    close() {
      port.close();
      tabLock.release();
    },
  };
}

/** The link through an election among the tabs of the origin. */
export function electionLink({ env, opts, baseUrl, tab, receive }) {
  const name = shareName(baseUrl, opts);
  const channel = new env.BroadcastChannel(name);
  channel.onmessage = (event) => receive(event.data);
  const tabLock = holdTabLock(env, tab);
  const watched = new Set();
  let hub = null;
  let hubChannel = null;
  let resign = null;
  let closed = false;
  const lead = () => {
    if (closed) return undefined;
    hubChannel = new env.BroadcastChannel(name);
    hub = new SharedHub({ opts, env, baseUrl, send: (_tabs, message) => hubChannel.postMessage(message) });
    hubChannel.onmessage = (event) => {
      const message = event.data;
      if (message?.type !== "hello") return hub.receive(message);
      hub.hello(message.tab);
      if (watched.has(message.tab)) return undefined;
      watched.add(message.tab);
      return whenTabGone(env, message.tab, () => hub?.tabGone(message.tab));
    };
    // Every tab (this one too: its own channel is another object) hands its subscriptions to the new hub.
    hubChannel.postMessage({ type: "leader" });
    return new Promise((resolve) => (resign = resolve));
  };
  env.locks.request(`leader of ${name}`, lead).catch(() => {});
  return {
    mode: "tab",
    ready: tabLock.held,
    leader: () => hub !== null,
    post: (message) => channel.postMessage(message),
    setToken: (token) => hub?.setToken(token),
    close() {
      closed = true;
      channel.close();
      hub?.close();
      hubChannel?.close();
      hub = null;
      resign?.();
      tabLock.release();
    },
  };
}
