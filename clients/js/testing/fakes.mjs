// Stand-ins for the browser's network and clock, so the client's logic runs in Node under test.
// Each fake records what the client did (URLs, frames) and lets the test play the server's side.
// (Kept out of test/: `node --test test/` would run every module there as a test file.)

/** Lets pending promise callbacks and queued microtasks run. */
export async function flush() {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Timers that only fire when the test advances time. */
export class FakeClock {
  now = 0;
  #timers = new Map();
  #nextId = 1;

  setTimeout = (fn, ms = 0) => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.now + ms, ms, fn });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  /** The delays (ms) of the timers still pending, in the order they were set. */
  pendingDelays() {
    return [...this.#timers.values()].map((t) => t.ms);
  }

  /** Runs every timer due within `ms`, in time order, letting promises settle between them. */
  async advance(ms) {
    const end = this.now + ms;
    await flush();
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, timer] of this.#timers) {
        if (timer.at <= end && (next === null || timer.at < next.at)) [nextId, next] = [id, timer];
      }
      if (next === null) break;
      this.#timers.delete(nextId);
      this.now = next.at;
      next.fn();
      await flush();
    }
    this.now = end;
  }
}

/** A fake WebSocket, EventSource and fetch sharing one log of what the client opened. */
export function fakeNetwork() {
  const sockets = [];
  const sources = [];
  const requests = [];

  class WebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = null;
      sockets.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error("send on a WebSocket that is not open");
      this.sent.push(JSON.parse(text));
    }
    close(code) {
      this.closedByClient = code ?? 1005;
      this.readyState = 3;
    }
    // The server's side:
    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }
    frame(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    drop(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code });
    }
  }

  class EventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.closed = false;
      this.listeners = new Map();
      sources.push(this);
    }
    addEventListener(name, fn) {
      this.listeners.set(name, fn);
    }
    close() {
      this.closed = true;
      this.readyState = 2;
    }
    // The server's side:
    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }
    message(envelope, lastEventId = "") {
      this.onmessage?.({ data: JSON.stringify(envelope), lastEventId });
    }
    named(name, data) {
      this.listeners.get(name)?.({ data: JSON.stringify(data), lastEventId: "" });
    }
    fail() {
      this.onerror?.({});
    }
  }

  function fetch(url, init = {}) {
    return new Promise((resolve, reject) => {
      const request = {
        url,
        init,
        aborted: false,
        settled: false,
        respond(status, body, headers = {}) {
          request.settled = true;
          resolve(response(status, body, headers));
        },
        fail(error = new TypeError("Failed to fetch")) {
          request.settled = true;
          reject(error);
        },
      };
      init.signal?.addEventListener("abort", () => {
        request.aborted = true;
        reject(new DOMException("The operation was aborted.", "AbortError"));
      });
      requests.push(request);
    });
  }

  return { WebSocket, EventSource, fetch, sockets, sources, requests };
}

function response(status, body, headers) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    ok: status >= 200 && status < 300,
    status,
    headers: { get: (name) => lower[name.toLowerCase()] ?? null },
    json: async () => body,
    text: async () => JSON.stringify(body),
  };
}

/** An envelope as the server would send it; its cursor spells its position so tests can read URLs. */
export function envelope(channel, offset, data = { top_seller: `seller-${offset}` }, event = "newTopSeller") {
  return { channel, offset, cursor: `${channel}-${offset}`, event, data, time: "2026-11-28T02:31:48.123Z" };
}

/**
 * A JWT with these claims, as a backend would issue it. The signature is not a real one: the client never checks
 * it (the server does), it only reads `exp` and `iat` to renew the token in time.
 */
export function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2lnbmF0dXJl`;
}

/** The query of a URL as [key, value] pairs, in order. */
export function query(url) {
  return [...new URL(url).searchParams];
}

/** A client wired to fakes, plus everything a test needs to play the server. */
export function setup(HeraldClass, options = {}) {
  const clock = new FakeClock();
  const net = fakeNetwork();
  const states = [];
  const resets = [];
  const herald = new HeraldClass("http://herald.test", {
    WebSocket: net.WebSocket,
    EventSource: net.EventSource,
    fetch: net.fetch,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: () => clock.now,
    random: () => 1,
    ...options,
  });
  herald.on("state", ({ state, transport }) => states.push(transport ? `${state}:${transport}` : state));
  herald.on("reset", ({ channel }) => resets.push(channel));
  const errors = [];
  herald.on("error", (error) => errors.push(error.channel ? `${error.code}:${error.channel}` : error.code));
  return { herald, clock, net, states, resets, errors };
}

/**
 * The tabs of one origin: a BroadcastChannel that delivers to the other channels of the same name (a copy, a
 * task later, as a browser does) and Web Locks granted in request order, released when the holder's promise ends.
 */
export function fakeOrigin() {
  const channels = new Set();
  class BroadcastChannel {
    constructor(name) {
      this.name = name;
      this.onmessage = null;
      channels.add(this);
    }
    postMessage(message) {
      for (const other of channels) {
        if (other === this || other.name !== this.name) continue;
        const copy = structuredClone(message);
        setImmediate(() => channels.has(other) && other.onmessage?.({ data: copy }));
      }
    }
    close() {
      channels.delete(this);
    }
  }
  const held = new Set();
  const queues = new Map();
  const grant = (name) => {
    const queue = queues.get(name) ?? [];
    if (held.has(name) || queue.length === 0) return;
    const { callback, resolve, reject } = queue.shift();
    held.add(name);
    Promise.resolve()
      .then(() => callback({ name }))
      .then(resolve, reject)
      .finally(() => {
        held.delete(name);
        grant(name);
      });
  };
  const locks = {
    request(name, callback) {
      return new Promise((resolve, reject) => {
        if (!queues.has(name)) queues.set(name, []);
        queues.get(name).push({ callback, resolve, reject });
        grant(name);
      });
    },
  };
  return { BroadcastChannel, locks };
}

/** Tabs of one origin sharing a connection, on one fake network and clock: `tab()` opens one more. */
export function setupTabs(HeraldClass, options = {}) {
  const clock = new FakeClock();
  const net = fakeNetwork();
  const origin = fakeOrigin();
  const tab = (extra = {}) =>
    new HeraldClass("http://herald.test", {
      WebSocket: net.WebSocket,
      EventSource: net.EventSource,
      fetch: net.fetch,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      now: () => clock.now,
      random: Math.random,
      BroadcastChannel: origin.BroadcastChannel,
      locks: origin.locks,
      share: "tab",
      ...options,
      ...extra,
    });
  return { clock, net, tab };
}
