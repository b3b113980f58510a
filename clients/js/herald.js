/**
 * herald.js: the browser client of Herald.
 *
 * A page wants one ordered, gap-free stream per channel, but the network picks the technique: a proxy kills
 * WebSockets, another buffers Server-Sent Events, a phone drops its connection every minute. This client speaks
 * all four of Herald's techniques (WebSocket, SSE, long polling, short polling) over ONE connection for all of a
 * page's subscriptions, falls back from one technique to the next when one cannot connect, and after every
 * reconnect or switch resumes each channel from its own cursor, so the page sees every message exactly once.
 *
 * The wire contract is docs/API.md of the Herald repository. No dependency; the browser globals it uses
 * (`WebSocket`, `EventSource`, `fetch`, timers, `document`) can be injected through the options, which is how the
 * Node tests drive it without a browser.
 */

/** The techniques, in the default order of preference. */
export const TRANSPORTS = Object.freeze(["websocket", "sse", "long-poll", "poll"]);

const CHANNEL_NAME = /^[A-Za-z0-9_\-.:@/=]{1,255}$/;

const DEFAULT_OPTIONS = Object.freeze({
  transports: TRANSPORTS,
  /** Milliseconds between two short polls. */
  pollInterval: 3000,
  /** Seconds a long poll asks the server to hold the request (`wait=`). */
  longPollWait: 25,
  /** `limit=` of a poll; an answer this long is followed by another poll at once. */
  pollLimit: 100,
  /** First reconnect delay in milliseconds; doubles per failed attempt, with jitter. */
  reconnectDelay: 1000,
  maxReconnectDelay: 30000,
  /** A transport that has not opened after this many milliseconds counts as failed. */
  connectTimeout: 10000,
  /** Milliseconds allowed for an HTTP request, on top of a long poll's wait. */
  requestTimeout: 10000,
  /** Failures in a row, before the transport ever opened, after which the next transport is tried. */
  failuresBeforeFallback: 2,
  /** Close the connection while `document.hidden`, and resume from the cursors when the page shows again. */
  pauseWhenHidden: false,
});

/** An error reported by Herald (`code` is the API's error code) or by the client itself. */
export class HeraldError extends Error {
  constructor(code, message, { status, retryAfter, closeCode } = {}) {
    super(message);
    this.name = "HeraldError";
    this.code = code;
    if (status !== undefined) this.status = status;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
    if (closeCode !== undefined) this.closeCode = closeCode;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Cursor bookkeeping

/**
 * What the client knows of each subscribed channel: who listens, where the page is in it, and the last offset it
 * delivered (the safety net against a message shown twice).
 *
 * A channel's own cursor comes from the last envelope delivered (or a WebSocket `subscribed`). Before its first
 * message a channel may still have a *stream cursor*: the multi-channel cursor of a poll answer or an SSE event,
 * which names it at the position the stream had reached. Resuming passes stream cursors first and own cursors
 * last, because for a channel named twice the last `since` wins (API.md, "Cursors").
 */
class ChannelBook {
  #channels = new Map();
  #streamCursorSeq = 0;

  get size() {
    return this.#channels.size;
  }

  names() {
    return [...this.#channels.keys()];
  }

  get(name) {
    return this.#channels.get(name);
  }

  /** Adds a subscriber; true when its channel is new to the book. */
  add(sub, since) {
    let channel = this.#channels.get(sub.channel);
    const isNew = channel === undefined;
    if (isNew) {
      channel = { cursor: since ?? null, streamCursor: null, streamSeq: 0, lastOffset: 0, subscribers: new Set() };
      this.#channels.set(sub.channel, channel);
    }
    channel.subscribers.add(sub);
    return isNew;
  }

  /** Removes a subscriber; true when its channel has no subscriber left and was dropped. */
  remove(sub) {
    const channel = this.#channels.get(sub.channel);
    if (!channel || !channel.subscribers.delete(sub)) return false;
    if (channel.subscribers.size > 0) return false;
    this.#channels.delete(sub.channel);
    return true;
  }

  /** The cursor to resume one channel from, or null when the page has no position in it yet. */
  resumeCursor(name) {
    const channel = this.#channels.get(name);
    return channel ? (channel.cursor ?? channel.streamCursor) : null;
  }

  /** Every `since` needed to resume `names` in one request, in the order the server must merge them. */
  sinceList(names) {
    const stream = [];
    const own = [];
    for (const name of names) {
      const channel = this.#channels.get(name);
      if (!channel) continue;
      if (channel.cursor) own.push(channel.cursor);
      else if (channel.streamCursor) stream.push([channel.streamSeq, channel.streamCursor]);
    }
    stream.sort((a, b) => a[0] - b[0]);
    return [...new Set([...stream.map(([, cursor]) => cursor), ...own])];
  }

  /** The `last=N` for the channels of `names` that have no position yet: the largest any of their subscribers asked. */
  replayCount(names) {
    let last = 0;
    for (const name of names) {
      const channel = this.#channels.get(name);
      if (!channel || this.resumeCursor(name)) continue;
      for (const sub of channel.subscribers) last = Math.max(last, sub.last);
    }
    return last;
  }

  /** Records a delivered envelope; returns its channel, or null when it must not be shown (unknown or seen). */
  accept(envelope) {
    const channel = this.#channels.get(envelope.channel);
    if (!channel) return null;
    if (Number.isInteger(envelope.offset)) {
      if (envelope.offset <= channel.lastOffset) return null;
      channel.lastOffset = envelope.offset;
    }
    if (typeof envelope.cursor === "string" && envelope.cursor) channel.cursor = envelope.cursor;
    return channel;
  }

  setCursor(name, cursor) {
    const channel = this.#channels.get(name);
    if (channel && typeof cursor === "string" && cursor) channel.cursor = cursor;
  }

  /** A multi-channel cursor from a stream: the position of those of `names` that have no own cursor. */
  noteStreamCursor(names, cursor) {
    if (typeof cursor !== "string" || !cursor) return;
    const seq = ++this.#streamCursorSeq;
    for (const name of names) {
      const channel = this.#channels.get(name);
      if (channel && !channel.cursor) {
        channel.streamCursor = cursor;
        channel.streamSeq = seq;
      }
    }
  }

  /**
   * The server said messages of `name` were lost: its offsets start over (new epoch) or jump, so the duplicate
   * check restarts. `forgetCursor` drops the position too, when the answer that reported the reset carries a
   * better one.
   */
  reset(name, forgetCursor) {
    const channel = this.#channels.get(name);
    if (!channel) return false;
    channel.lastOffset = 0;
    if (forgetCursor) {
      channel.cursor = null;
      channel.streamCursor = null;
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Wire helpers

/** `base` + `path`, for a base with or without a trailing slash or a path prefix. */
function endpoint(baseUrl, path) {
  return baseUrl.replace(/\/+$/, "") + path;
}

function sseUrl(baseUrl, names, book) {
  const query = new URLSearchParams();
  for (const name of names) query.append("channel", name);
  query.append("envelope", "true");
  for (const cursor of book.sinceList(names)) query.append("since", cursor);
  const last = book.replayCount(names);
  if (last > 0) query.append("last", String(last));
  return `${endpoint(baseUrl, "/v1/sse")}?${query}`;
}

function pollUrl(baseUrl, names, book, { wait, limit, last = book.replayCount(names) }) {
  const query = new URLSearchParams();
  for (const name of names) query.append("channel", name);
  for (const cursor of book.sinceList(names)) query.append("since", cursor);
  // Without a cursor a poll answers the history from the oldest; `last=0` asks for "only what comes next",
  // which is what SSE and WebSocket do for a channel subscribed without `last`.
  if (names.some((name) => !book.resumeCursor(name))) query.append("last", String(last));
  query.append("limit", String(limit));
  query.append("wait", String(wait));
  return `${endpoint(baseUrl, "/v1/poll")}?${query}`;
}

function wsUrl(baseUrl) {
  return endpoint(baseUrl, "/v1/ws").replace(/^http/, "ws");
}

function channelPath(name) {
  // Every character of a channel name is safe in a path except `/` (API.md, "Channels").
  return name.replace(/\//g, "%2F");
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function errorFromResponse(res) {
  let code = `http_${res.status}`;
  let message = `HTTP ${res.status}`;
  const body = parseJson(await res.text().catch(() => ""));
  if (body && body.error) {
    code = body.error.code ?? code;
    message = body.error.message ?? message;
  }
  const retryAfter = Number(res.headers?.get?.("Retry-After"));
  return new HeraldError(code, message, {
    status: res.status,
    retryAfter: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
  });
}

/** A fetch bounded by `timeoutMs`, answering parsed JSON or throwing a HeraldError. */
async function requestJson(env, url, init, timeoutMs, controller = new env.AbortController()) {
  const timer = env.setTimeout(() => controller.abort(), timeoutMs);
  try {
    const res = await env.fetch(url, { ...init, signal: controller.signal });
    if (!res.ok) throw await errorFromResponse(res);
    return await res.json();
  } finally {
    env.clearTimeout(timer);
  }
}

/** Exponential backoff with "equal jitter": between half and all of `base * 2^attempt`, capped at `max`. */
export function backoffDelay(attempt, base, max, random) {
  const ceiling = Math.min(max, base * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

// ---------------------------------------------------------------------------------------------------------------
// Transports
//
// A transport is one connection for every subscribed channel. It reads the book and reports to its `link`;
// the link ignores a transport once the client has moved on, so a late event of a closed connection is harmless.
// Each has `sync()` (the channel set changed) and `close()`; the WebSocket one also `publish()`.

class WebSocketTransport {
  #link;
  #ws;
  #open = false;
  #nextId = 1;
  #pending = new Map();
  #subscribed = new Map();

  constructor(link) {
    this.#link = link;
    const ws = new link.env.WebSocket(wsUrl(link.baseUrl));
    this.#ws = ws;
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      this.#open = true;
      link.healthy();
      this.sync();
    };
    ws.onmessage = (event) => {
      if (this.#ws === ws) this.#onFrame(event.data);
    };
    ws.onerror = () => {}; // a close event always follows, with the code
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      this.#teardown(new HeraldError("connection_lost", "the WebSocket closed before the server answered"));
      link.failed(new HeraldError("connection_closed", `WebSocket closed (${event.code})`, { closeCode: event.code }));
    };
  }

  get canPublish() {
    return this.#open;
  }

  sync() {
    if (!this.#open) return;
    const wanted = new Set(this.#link.channels());
    for (const name of wanted) if (!this.#subscribed.has(name)) this.#subscribe(name);
    for (const name of [...this.#subscribed.keys()]) {
      if (wanted.has(name)) continue;
      this.#subscribed.delete(name);
      this.#send({ op: "unsubscribe", channel: name });
    }
  }

  publish(channel, event, data) {
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      const frame = { op: "publish", channel, data: data === undefined ? null : data, id };
      if (event != null) frame.event = event;
      const { env, opts } = this.#link;
      const timer = env.setTimeout(() => {
        this.#pending.delete(id);
        reject(new HeraldError("timeout", "no answer to the publish in time"));
      }, opts.requestTimeout);
      this.#pending.set(id, { resolve, reject, timer });
      this.#send(frame);
    });
  }

  close() {
    const ws = this.#ws;
    this.#ws = null;
    this.#teardown(new HeraldError("connection_lost", "the connection was closed before the server answered"));
    if (ws && ws.readyState < 2) ws.close(1000);
  }

  #subscribe(name) {
    const { book } = this.#link;
    const frame = { op: "subscribe", channel: name, id: this.#nextId++ };
    const since = book.resumeCursor(name);
    if (since) frame.since = since;
    else {
      const last = book.replayCount([name]);
      if (last > 0) frame.last = last;
    }
    this.#subscribed.set(name, frame.id);
    this.#send(frame);
  }

  #send(frame) {
    this.#ws.send(JSON.stringify(frame));
  }

  #teardown(reason) {
    this.#open = false;
    for (const { reject, timer } of this.#pending.values()) {
      this.#link.env.clearTimeout(timer);
      reject(reason);
    }
    this.#pending.clear();
  }

  #onFrame(text) {
    const link = this.#link;
    const frame = parseJson(text);
    if (!frame || typeof frame !== "object") {
      link.error(new HeraldError("invalid_frame", "the server sent a frame that is not JSON"));
      return;
    }
    const subscribed = this.#subscribed.has(frame.channel);
    switch (frame.op) {
      case "message": {
        const { op: _op, ...envelope } = frame;
        if (subscribed) link.deliver(envelope);
        break;
      }
      case "subscribed":
        if (!subscribed) break;
        if (frame.reset) link.reset(frame.channel, false);
        link.setCursor(frame.channel, frame.cursor);
        break;
      case "reset":
        if (!subscribed) break;
        link.reset(frame.channel, false);
        link.setCursor(frame.channel, frame.cursor);
        break;
      case "published": {
        const { op: _op, id: _id, ...ack } = frame;
        this.#settle(frame.id)?.resolve(ack);
        break;
      }
      case "error":
        this.#onError(frame);
        break;
      default: // pong, unsubscribed: nothing to do
    }
  }

  #settle(id) {
    const pending = this.#pending.get(id);
    if (!pending) return undefined;
    this.#pending.delete(id);
    this.#link.env.clearTimeout(pending.timer);
    return pending;
  }

  #onError(frame) {
    const error = new HeraldError(frame.code ?? "error", frame.message ?? "the server refused a frame");
    const pending = this.#settle(frame.id);
    if (pending) {
      pending.reject(error);
      return;
    }
    const channel = [...this.#subscribed].find(([, id]) => id === frame.id)?.[0];
    if (channel === undefined || error.code === "already_subscribed") {
      if (error.code !== "already_subscribed") this.#link.error(error);
      return;
    }
    this.#subscribed.delete(channel);
    if (error.code === "invalid_cursor") {
      // The cursor cannot be read: the page cannot know what it missed. Say so, and start over without it.
      this.#link.reset(channel, true);
      this.#subscribe(channel);
    } else {
      this.#link.error(error);
    }
  }
}

class SseTransport {
  #link;
  #source = null;

  constructor(link) {
    this.#link = link;
    this.#open();
  }

  /** The channel set changed: a new stream, from the cursors. */
  sync() {
    this.#source?.close();
    this.#open();
  }

  close() {
    const source = this.#source;
    this.#source = null;
    source?.close();
  }

  #open() {
    const link = this.#link;
    const names = link.channels();
    const source = new link.env.EventSource(sseUrl(link.baseUrl, names, link.book));
    this.#source = source;
    const live = () => this.#source === source;
    source.onopen = () => {
      if (!live()) return;
      link.healthy();
      this.#learnPositions(names, live);
    };
    // envelope=true leaves the `event:` line out, so every message arrives here whatever its event.
    source.onmessage = (event) => {
      if (!live()) return;
      const envelope = parseJson(event.data);
      if (!envelope || typeof envelope !== "object") {
        link.error(new HeraldError("invalid_frame", "the server sent an event that is not a JSON envelope"));
        return;
      }
      link.noteStreamCursor(names, event.lastEventId);
      link.deliver(envelope);
    };
    source.addEventListener("herald.reset", (event) => {
      if (!live()) return;
      const channels = parseJson(event.data)?.channels;
      for (const name of Array.isArray(channels) ? channels : names) link.reset(name, false);
    });
    // The browser would reconnect by itself, but without our backoff or fallback: take over.
    source.onerror = () => {
      if (!live()) return;
      this.close();
      link.failed(new HeraldError("stream_failed", "the event stream could not open or ended"));
    };
  }

  /**
   * EventSource hides the position a stream starts from (its first `id:` dispatches no event), so a channel
   * that stays quiet would have no cursor, and a new stream after a drop would skip what was published
   * meanwhile. One poll that waits for nothing tells those channels where they are. Without polling (disabled
   * on the server) the stream's first event gives the position instead.
   */
  async #learnPositions(names, live) {
    const link = this.#link;
    const { env, opts, book } = link;
    const missing = names.filter((name) => !book.resumeCursor(name));
    if (missing.length === 0 || !env.fetch) return;
    const url = pollUrl(link.baseUrl, missing, book, { wait: 0, limit: 1, last: 0 });
    try {
      const body = await requestJson(env, url, { headers: { Accept: "application/json" } }, opts.requestTimeout);
      if (live())
        link.noteStreamCursor(
          missing.filter((name) => !book.resumeCursor(name)),
          body?.cursor,
        );
    } catch {
      // Best effort, see above.
    }
  }
}

class PollTransport {
  #link;
  #long;
  #generation = 0;
  #controller = null;
  #timer = null;

  constructor(link, { long }) {
    this.#link = link;
    this.#long = long;
    this.#poll(this.#generation, true);
  }

  /** The channel set changed: drop the request in flight and ask again at once, from the cursors. */
  sync() {
    this.#stop();
    this.#poll(this.#generation, true);
  }

  close() {
    this.#stop();
  }

  #stop() {
    this.#generation++;
    this.#controller?.abort();
    this.#controller = null;
    if (this.#timer !== null) this.#link.env.clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** One request. `quick` asks without waiting: the first poll of a connection catches up and proves it works. */
  async #poll(generation, quick) {
    const link = this.#link;
    const { env, opts } = link;
    const names = link.channels();
    const wait = this.#long && !quick ? opts.longPollWait : 0;
    const url = pollUrl(link.baseUrl, names, link.book, { wait, limit: opts.pollLimit });
    const controller = new env.AbortController();
    this.#controller = controller;
    let body;
    try {
      body = await requestJson(
        env,
        url,
        { headers: { Accept: "application/json" } },
        wait * 1000 + opts.requestTimeout,
        controller,
      );
      if (!body || !Array.isArray(body.messages))
        throw new HeraldError("invalid_response", "the poll answer has no messages");
    } catch (error) {
      if (generation !== this.#generation) return;
      if (error.code === "invalid_cursor") for (const name of names) link.reset(name, true);
      link.failed(error, { fatal: error.code === "transport_disabled" });
      return;
    }
    if (generation !== this.#generation) return;
    link.healthy();
    const resetChannels = body.reset ? (Array.isArray(body.reset_channels) ? body.reset_channels : names) : [];
    for (const name of resetChannels) link.reset(name, true);
    for (const envelope of body.messages) link.deliver(envelope);
    link.noteStreamCursor(names, body.cursor);
    if (generation !== this.#generation) return; // a handler changed the subscriptions or closed the client
    const cutShort = body.messages.length >= opts.pollLimit;
    if (this.#long || cutShort) this.#poll(generation, cutShort);
    else this.#timer = env.setTimeout(() => this.#poll(generation, false), opts.pollInterval);
  }
}

const TRANSPORT_FACTORIES = {
  websocket: (link) => new WebSocketTransport(link),
  sse: (link) => new SseTransport(link),
  "long-poll": (link) => new PollTransport(link, { long: true }),
  poll: (link) => new PollTransport(link, { long: false }),
};

const REQUIRED_GLOBAL = { websocket: "WebSocket", sse: "EventSource", "long-poll": "fetch", poll: "fetch" };

// ---------------------------------------------------------------------------------------------------------------
// The client

function resolveEnv(options) {
  const g = globalThis;
  return {
    WebSocket: options.WebSocket ?? g.WebSocket,
    EventSource: options.EventSource ?? g.EventSource,
    fetch: options.fetch ?? (g.fetch ? (...args) => g.fetch(...args) : undefined),
    AbortController: options.AbortController ?? g.AbortController,
    setTimeout: options.setTimeout ?? ((fn, ms) => g.setTimeout(fn, ms)),
    clearTimeout: options.clearTimeout ?? ((id) => g.clearTimeout(id)),
    random: options.random ?? Math.random,
    document: options.document ?? g.document,
    window: options.window ?? g.window,
  };
}

function resolveBaseUrl(baseUrl) {
  const here = globalThis.location?.href;
  const url = here ? new URL(baseUrl ?? "/", here) : new URL(baseUrl);
  return url.href.replace(/[?#].*$/, "").replace(/\/+$/, "");
}

/**
 * A connection to one Herald server, shared by every subscription of the page.
 *
 * States (the `state` event): `idle` (nothing to do: no subscription, paused while hidden, or closed),
 * `connecting` (never connected yet), `connected` (with `transport`), `reconnecting` (lost a connection that
 * worked), `offline` (every transport failed in a row; retries go on with backoff).
 */
export class Herald {
  #opts;
  #env;
  #baseUrl;
  #book = new ChannelBook();
  #listeners = new Map();
  #state = { state: "idle", transport: null };

  #transportIndex = 0;
  #transport = null;
  #link = null;
  #healthy = false;
  #everConnected = false;
  #failures = 0; // of the current transport, in a row, before it opened
  #switches = 0; // transports given up in a row; a full round means offline
  #attempt = 0; // reconnects in a row, for the backoff
  #offline = false;
  #retryTimer = null;
  #connectTimer = null;
  #syncQueued = false;
  #paused = false;
  #closed = false;
  #onVisibility = () => this.#visibilityChanged();
  #onOnline = () => this.#retryNow();

  constructor(baseUrl, options = {}) {
    this.#opts = { ...DEFAULT_OPTIONS, ...options };
    const transports = this.#opts.transports;
    if (!Array.isArray(transports) || transports.length === 0)
      throw new TypeError("transports must be a non-empty array");
    for (const kind of transports) {
      if (!TRANSPORTS.includes(kind))
        throw new TypeError(`unknown transport "${kind}" (known: ${TRANSPORTS.join(", ")})`);
    }
    this.#env = resolveEnv(options);
    this.#baseUrl = resolveBaseUrl(baseUrl);
    const doc = this.#env.document;
    if (this.#opts.pauseWhenHidden && doc?.addEventListener) {
      doc.addEventListener("visibilitychange", this.#onVisibility);
      this.#paused = Boolean(doc.hidden);
    }
    this.#env.window?.addEventListener?.("online", this.#onOnline);
  }

  /** The current state: `{ state, transport }`. */
  get state() {
    return { ...this.#state };
  }

  /** The transport in use while connected, else null. */
  get transport() {
    return this.#state.state === "connected" ? this.#state.transport : null;
  }

  /**
   * Receives the messages of `channel`: `handler(data, envelope)`. Options: `last` (replay the newest N messages
   * when the page has no position in the channel yet), `since` (a cursor to start after), `event` (only messages
   * with that event name). Every subscription shares the client's one connection.
   */
  subscribe(channel, options, handler) {
    if (typeof options === "function") [options, handler] = [{}, options];
    options = options ?? {};
    if (this.#closed) throw new Error("this Herald client is closed");
    if (typeof channel !== "string" || !CHANNEL_NAME.test(channel))
      throw new TypeError(`invalid channel name: ${channel}`);
    if (typeof handler !== "function") throw new TypeError("subscribe needs a handler function");
    const sub = { channel, event: options.event ?? null, last: Math.max(0, Math.floor(options.last ?? 0)), handler };
    if (this.#book.add(sub, options.since)) this.#scheduleSync();
    let active = true;
    return {
      unsubscribe: () => {
        if (!active) return;
        active = false;
        if (this.#book.remove(sub)) this.#scheduleSync();
      },
    };
  }

  /**
   * Publishes a message; resolves with the server's acknowledgement `{ channel, offset, cursor, time }`.
   * Goes over the WebSocket when that is the open connection (the namespace must allow client publishing),
   * else `POST /v1/channels/{channel}/messages`.
   */
  publish(channel, event, data) {
    if (typeof channel !== "string" || !CHANNEL_NAME.test(channel)) {
      return Promise.reject(new TypeError(`invalid channel name: ${channel}`));
    }
    const transport = this.#transport;
    if (this.#healthy && transport?.canPublish) return transport.publish(channel, event, data);
    const body = { data: data === undefined ? null : data };
    if (event != null) body.event = event;
    const url = endpoint(this.#baseUrl, `/v1/channels/${channelPath(channel)}/messages`);
    const init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    return requestJson(this.#env, url, init, this.#opts.requestTimeout);
  }

  /**
   * Listens to `state`, `reset` (`{ channel, transport }`), `message` (every envelope) or `error`.
   * Returns a function that stops listening.
   */
  on(name, listener) {
    if (!this.#listeners.has(name)) this.#listeners.set(name, new Set());
    this.#listeners.get(name).add(listener);
    return () => this.off(name, listener);
  }

  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
  }

  /** Closes the connection for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropTransport();
    this.#clearRetry();
    this.#env.document?.removeEventListener?.("visibilitychange", this.#onVisibility);
    this.#env.window?.removeEventListener?.("online", this.#onOnline);
    this.#setState("idle", null, { reason: "closed" });
  }

  // --- connection lifecycle

  #scheduleSync() {
    if (this.#syncQueued) return;
    this.#syncQueued = true;
    // Subscriptions made in one go (a page's start) give one connection, not one per call.
    queueMicrotask(() => {
      this.#syncQueued = false;
      this.#sync();
    });
  }

  #sync() {
    if (this.#closed || this.#paused) return;
    if (this.#book.size === 0) {
      this.#dropTransport();
      this.#clearRetry();
      this.#setState("idle", null, { reason: "no subscription" });
      return;
    }
    if (this.#transport) this.#transport.sync();
    else if (this.#retryTimer === null) this.#connect();
  }

  #connect() {
    this.#retryTimer = null;
    if (this.#closed || this.#paused || this.#book.size === 0) return;
    const kind = this.#opts.transports[this.#transportIndex];
    this.#setState(this.#offline ? "offline" : this.#everConnected ? "reconnecting" : "connecting", kind);
    const link = this.#makeLink(kind);
    this.#link = link;
    this.#healthy = false;
    const env = this.#env;
    if (!env[REQUIRED_GLOBAL[kind]]) {
      link.failed(new HeraldError("unsupported", `${REQUIRED_GLOBAL[kind]} is not available here`), { fatal: true });
      return;
    }
    this.#connectTimer = env.setTimeout(() => {
      link.failed(new HeraldError("connect_timeout", `${kind} did not open within ${this.#opts.connectTimeout} ms`));
    }, this.#opts.connectTimeout);
    let transport;
    try {
      transport = TRANSPORT_FACTORIES[kind](link);
    } catch (error) {
      link.failed(error, { fatal: true });
      return;
    }
    if (this.#link === link) this.#transport = transport;
    else transport.close();
  }

  /** The transport's view of the client; everything it reports is ignored once the client has moved on. */
  #makeLink(kind) {
    const book = this.#book;
    const link = {
      env: this.#env,
      opts: this.#opts,
      baseUrl: this.#baseUrl,
      book,
      channels: () => book.names(),
      live: () => this.#link === link,
      healthy: () => link.live() && this.#onHealthy(kind),
      deliver: (envelope) => link.live() && this.#deliver(envelope),
      setCursor: (name, cursor) => link.live() && book.setCursor(name, cursor),
      noteStreamCursor: (names, cursor) => link.live() && book.noteStreamCursor(names, cursor),
      reset: (name, forgetCursor) => {
        if (link.live() && book.reset(name, forgetCursor)) this.#emit("reset", { channel: name, transport: kind });
      },
      failed: (error, { fatal = false } = {}) => link.live() && this.#onFailed(kind, error, fatal),
      error: (error) => link.live() && this.#emit("error", error),
    };
    return link;
  }

  #onHealthy(kind) {
    this.#env.clearTimeout(this.#connectTimer);
    if (this.#healthy) return;
    this.#healthy = true;
    this.#everConnected = true;
    this.#offline = false;
    this.#failures = 0;
    this.#switches = 0;
    this.#attempt = 0;
    this.#setState("connected", kind);
  }

  #onFailed(kind, error, fatal) {
    const wasHealthy = this.#healthy;
    this.#dropTransport();
    const opts = this.#opts;
    const backoff = () => backoffDelay(this.#attempt++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
    let delay;
    if (wasHealthy) {
      // A connection that worked and dropped: the same transport again, soon.
      this.#attempt = 0;
      delay = backoff();
    } else if (fatal || ++this.#failures >= opts.failuresBeforeFallback) {
      this.#failures = 0;
      if (++this.#switches >= opts.transports.length) {
        // Every transport failed in a row: the network or the server is down. Start the round over from the
        // preferred transport, and wait longer each time.
        this.#switches = 0;
        this.#transportIndex = 0;
        this.#offline = true;
        delay = backoff();
      } else {
        this.#transportIndex = (this.#transportIndex + 1) % opts.transports.length;
        delay = 0;
      }
    } else {
      delay = backoff();
    }
    if (error?.retryAfter) delay = Math.max(delay, error.retryAfter * 1000);
    const next = opts.transports[this.#transportIndex];
    this.#setState(this.#offline ? "offline" : this.#everConnected ? "reconnecting" : "connecting", next, { error });
    this.#retryTimer = this.#env.setTimeout(() => this.#connect(), delay);
  }

  #dropTransport() {
    if (this.#connectTimer !== null) this.#env.clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
    const transport = this.#transport;
    this.#transport = null;
    this.#link = null;
    this.#healthy = false;
    transport?.close();
  }

  #clearRetry() {
    if (this.#retryTimer !== null) this.#env.clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  #retryNow() {
    if (this.#retryTimer === null || this.#closed || this.#paused) return;
    this.#clearRetry();
    this.#attempt = 0;
    this.#connect();
  }

  #visibilityChanged() {
    if (this.#closed) return;
    if (this.#env.document.hidden) {
      this.#paused = true;
      this.#dropTransport();
      this.#clearRetry();
      this.#setState("idle", null, { reason: "hidden" });
    } else if (this.#paused) {
      this.#paused = false;
      this.#attempt = 0;
      this.#sync();
    }
  }

  // --- delivery

  #deliver(envelope) {
    if (!envelope || typeof envelope.channel !== "string") return;
    const channel = this.#book.accept(envelope);
    if (!channel) return;
    this.#emit("message", envelope);
    for (const sub of [...channel.subscribers]) {
      if (sub.event !== null && sub.event !== envelope.event) continue;
      try {
        sub.handler(envelope.data, envelope);
      } catch (error) {
        this.#report(error);
      }
    }
  }

  #setState(state, transport, extra = {}) {
    if (this.#state.state === state && this.#state.transport === transport) return;
    this.#state = { state, transport };
    this.#emit("state", { state, transport, ...extra });
  }

  #emit(name, payload) {
    for (const listener of [...(this.#listeners.get(name) ?? [])]) {
      try {
        listener(payload);
      } catch (error) {
        if (name === "error") globalThis.console?.error(error);
        else this.#report(error);
      }
    }
  }

  /** A page's handler threw: the stream goes on, and the error is not swallowed. */
  #report(error) {
    if (this.#listeners.get("error")?.size) this.#emit("error", error);
    else globalThis.console?.error(error);
  }
}

export default Herald;
