/**
 * herald.js: the browser client of Herald.
 *
 * A page wants one ordered, gap-free stream per channel, but the network picks the technique: a proxy kills
 * WebSockets, another buffers Server-Sent Events, a phone drops its connection every minute. This client speaks
 * all four of Herald's techniques (WebSocket, SSE, long polling, short polling) over ONE connection for all of a
 * page's subscriptions, falls back from one technique to the next when one cannot connect, and after every
 * reconnect or switch resumes each channel from its own cursor, so the page sees every message exactly once.
 *
 * Private channels need a subscriber token (a JWT from the page's backend, docs/SECURITY.md). The client presents
 * it on every transport, fetches a fresh one from the page's function ahead of its expiry and whenever the server
 * refuses it, and tells a refused token (a problem of credentials: no fallback to another transport) from a
 * transport that fails.
 *
 * The wire contract is docs/API.md of the Herald repository. No dependency; the browser globals it uses
 * (`WebSocket`, `EventSource`, `fetch`, timers, `document`) can be injected through the options, which is how the
 * Node tests drive it without a browser.
 *
 * What this file stands on is in native ES modules under herald/, imported by relative URL: a page imports this
 * one file, and the browser fetches the rest from beside it. Nothing to build or bundle.
 */

import { backoffDelay } from "./herald/backoff.js";
import { ChannelBook } from "./herald/channel-book.js";
import { HeraldError } from "./herald/error.js";
import { channelPath, endpoint, requestJson } from "./herald/http.js";
import { TOKEN_REFUSALS } from "./herald/refusals.js";
import { TokenSource, tokenRenewalDelay } from "./herald/tokens.js";
import { REQUIRED_GLOBAL, TRANSPORTS, openTransport } from "./herald/transports.js";

export { backoffDelay, HeraldError, TRANSPORTS };
export { readTokenClaims, tokenRenewalDelay } from "./herald/tokens.js";

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
  /** The subscriber token: a string, or a function (sync or async) that returns a fresh one. */
  token: null,
});

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
    now: options.now ?? (() => Date.now()),
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
 * States (the `state` event): `idle` (nothing to do: no subscription, paused while hidden, closed, or waiting for a
 * token), `connecting` (never connected yet), `connected` (with `transport`), `reconnecting` (lost a connection
 * that worked), `offline` (every transport failed in a row; retries go on with backoff).
 *
 * Tokens: a refusal of the token (`invalid_token`, `token_expired`) is not a failure of the transport, so it never
 * makes the client fall back to another one. With a token function the client asks it for a fresh token and tries
 * again after the reconnection backoff; with a string it stops (`idle`, reason `unauthorized`) until `setToken`.
 * A channel refused for want of a token (`token_required`) waits, parked, for a new token; a channel the token
 * does not grant (`channel_forbidden`) is dropped. Each of these is reported as an `error` event.
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
  #token;
  #unauthorized = false; // a string token was refused: nothing connects until setToken()
  #tokenWait = null; // the call of the token function a connection waits for
  #renewTimer = null;
  #renewalQueued = false; // a renewal after a refusal is waiting for its backoff
  #renewAttempt = 0; // renewals after refusals in a row, for their backoff
  #staleRenewals = 0; // tokens in a row that arrived already due for renewal
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
    this.#token = new TokenSource(this.#opts.token, {
      env: this.#env,
      timeoutMs: this.#opts.requestTimeout,
      onValue: () => this.#onTokenValue(),
    });
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

  /**
   * Replaces the subscriber token: a string, a function that returns one, or null. Channels waiting for a token
   * resume from their cursors. A string is taken by the open connection: a WebSocket presents it in an `auth`
   * frame (its subscriptions stay), an SSE stream reopens with it, polls carry it from their next request. A
   * function starts the connection over, calling it first. With null, SSE and polls go on without a token; a
   * WebSocket cannot take back the token it presented, which holds until it expires.
   */
  setToken(token) {
    this.#token.replace(token);
    this.#renewAttempt = 0;
    this.#staleRenewals = 0;
    this.#clearRenewal();
    if (!this.#closed) this.#tokenChanged();
  }

  /** Closes the connection for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropTransport();
    this.#clearRetry();
    this.#clearRenewal();
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
    if (this.#book.activeSize === 0 || this.#unauthorized) {
      this.#dropTransport();
      this.#clearRetry();
      this.#setState("idle", null, { reason: this.#book.size === 0 ? "no subscription" : "unauthorized" });
      return;
    }
    if (this.#transport) this.#transport.sync();
    else if (this.#retryTimer === null && this.#tokenWait === null) this.#connect();
  }

  #connect() {
    this.#retryTimer = null;
    if (this.#closed || this.#paused || this.#unauthorized || this.#book.activeSize === 0) return;
    const kind = this.#opts.transports[this.#transportIndex];
    this.#setState(this.#offline ? "offline" : this.#everConnected ? "reconnecting" : "connecting", kind);
    if (this.#token.stale) {
      this.#connectWithFreshToken(kind);
      return;
    }
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
      transport = openTransport(kind, link);
    } catch (error) {
      link.failed(error, { fatal: true });
      return;
    }
    if (this.#link === link) this.#transport = transport;
    else transport.close();
  }

  /** Calls the token function, then connects; a function that fails is tried again after the backoff. */
  #connectWithFreshToken(kind) {
    const wait = this.#token.fetch();
    this.#tokenWait = wait;
    wait.then(
      () => {
        if (this.#tokenWait !== wait) return;
        this.#tokenWait = null;
        this.#book.unparkAll();
        this.#connect();
      },
      (error) => {
        if (this.#tokenWait !== wait) return;
        this.#tokenWait = null;
        this.#emit("error", error);
        const opts = this.#opts;
        const delay = backoffDelay(this.#attempt++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
        const state = this.#offline ? "offline" : this.#everConnected ? "reconnecting" : "connecting";
        this.#setState(state, kind, { error });
        this.#retryTimer = this.#env.setTimeout(() => this.#connect(), delay);
      },
    );
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
      token: () => this.#token.value,
      tokenAccepted: () => link.live() && (this.#renewAttempt = 0),
      tokenRefused: (error) => link.live() && this.#onTokenRefusedInPlace(error),
      needsToken: (name, error) => link.live() && this.#parkChannel(name, error),
      forbidden: (name, error) => link.live() && this.#failChannel(name, error),
      refusedChannels: (refused) => link.live() && this.#onChannelsRefused(refused),
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
    this.#renewAttempt = 0;
    this.#setState("connected", kind);
  }

  #onFailed(kind, error, fatal) {
    if (TOKEN_REFUSALS.has(error?.code)) {
      this.#onTokenRefused(kind, error);
      return;
    }
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

  /**
   * A connection was refused, or ended, because of its token: not the transport's fault, so no fallback. A token
   * function is asked for a fresh one before the next attempt, after the backoff; a string token stops the client
   * until `setToken`.
   */
  #onTokenRefused(kind, error) {
    const wasHealthy = this.#healthy;
    this.#dropTransport();
    this.#token.invalidate();
    this.#emit("error", error);
    if (!this.#token.renewable) {
      this.#unauthorized = true;
      this.#setState("idle", null, { reason: "unauthorized", error });
      return;
    }
    if (wasHealthy) this.#attempt = 0;
    const opts = this.#opts;
    const delay = backoffDelay(this.#attempt++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
    this.#setState(this.#everConnected ? "reconnecting" : "connecting", kind, { error });
    this.#retryTimer = this.#env.setTimeout(() => this.#connect(), delay);
  }

  /** A WebSocket's `auth` frame was refused; the connection stays (with its earlier token, if any). */
  #onTokenRefusedInPlace(error) {
    this.#token.invalidate();
    this.#emit("error", error);
    this.#scheduleRenewal();
  }

  /** `channel` cannot be served without a (valid) token: it waits for one, keeping its cursor. */
  #parkChannel(channel, error) {
    error.channel = channel;
    if (!this.#book.park(channel)) return;
    this.#emit("error", error);
    this.#scheduleRenewal();
    this.#scheduleSync();
  }

  /** The token does not grant `channel`: that subscription fails, the others go on. */
  #failChannel(channel, error) {
    error.channel = channel;
    if (!this.#book.drop(channel)) return;
    this.#emit("error", error);
    this.#scheduleSync();
  }

  /** A request was refused for some of its channels: they are set aside, and the others are asked for at once. */
  #onChannelsRefused(refused) {
    this.#dropTransport();
    for (const [channel, error] of refused) {
      if (error.code === "channel_forbidden") this.#failChannel(channel, error);
      else this.#parkChannel(channel, error);
    }
    this.#scheduleSync();
  }

  // --- token renewal

  /**
   * A call of the token function brought a token: its renewal is planned. (Parked channels are let go by whoever
   * asked for it, once the token is in place: a WebSocket must send its `auth` frame before their subscriptions.)
   */
  #onTokenValue() {
    this.#clearRenewal();
    const token = this.#token.value;
    if (this.#closed || !token) return;
    let delay = tokenRenewalDelay(token, this.#env.now());
    if (delay === null) return; // not a JWT, or no `exp`: renewed only when refused
    const opts = this.#opts;
    if (delay === 0) {
      // Already due (a cached token, or a page clock ahead of the issuer's): do not ask again at once.
      delay = backoffDelay(this.#staleRenewals++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
    } else {
      this.#staleRenewals = 0;
    }
    this.#renewTimer = this.#env.setTimeout(() => this.#renewToken(), Math.min(delay, 2 ** 31 - 1));
  }

  /** After a refusal: a fresh token after the backoff (once, however many channels were refused together). */
  #scheduleRenewal() {
    if (!this.#token.renewable || this.#renewalQueued || this.#closed) return;
    this.#clearRenewal();
    this.#renewalQueued = true;
    const opts = this.#opts;
    const delay = backoffDelay(this.#renewAttempt++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
    this.#renewTimer = this.#env.setTimeout(() => this.#renewToken(), delay);
  }

  #clearRenewal() {
    if (this.#renewTimer !== null) this.#env.clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
    this.#renewalQueued = false;
  }

  /** Asks the function for a fresh token and hands it to the open connection; without one, to the next. */
  #renewToken() {
    this.#clearRenewal();
    if (this.#closed || !this.#token.renewable) return;
    if (!this.#transport || !this.#healthy) {
      this.#token.invalidate();
      this.#tokenChanged();
      return;
    }
    this.#token.fetch().then(
      () => {
        if (!this.#closed) this.#tokenChanged();
      },
      (error) => {
        if (this.#closed) return;
        this.#emit("error", error);
        this.#scheduleRenewal();
      },
    );
  }

  /**
   * The token changed. An open connection takes it in place (WebSocket: an `auth` frame; SSE and polls: their
   * next stream or request, through `sync`); a connection still being made, or one that must first call the
   * token function, starts over.
   */
  #tokenChanged() {
    this.#unauthorized = false;
    this.#book.unparkAll();
    if (this.#closed || this.#paused) return;
    if (this.#transport && this.#healthy && !this.#token.stale) this.#transport.authenticate?.();
    else if (this.#transport || this.#tokenWait) this.#dropTransport();
    this.#scheduleSync();
  }

  #dropTransport() {
    this.#tokenWait = null;
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
