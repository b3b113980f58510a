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
 * This file is the public class. What it stands on is in native ES modules under herald/ (the book of channels
 * and their cursors, the connection and its fallback, tokens, one module per transport), imported by relative
 * URL: a page imports this one file, and the browser fetches the rest from beside it. Nothing to build or bundle.
 */

import { ChannelBook } from "./herald/channel-book.js";
import { Connection } from "./herald/connection.js";
import { channelPath, endpoint, requestJson } from "./herald/http.js";
import { Rosters } from "./herald/presence.js";
import { resolveEnv } from "./herald/runtime.js";
import { electionLink, workerLink } from "./herald/sharing/links.js";
import { SharedConnection, tabName } from "./herald/sharing/tab.js";
import { TRANSPORTS } from "./herald/transports.js";

export { backoffDelay } from "./herald/backoff.js";
export { HeraldError } from "./herald/error.js";
export { readTokenClaims, tokenRenewalDelay } from "./herald/tokens.js";
export { TRANSPORTS };

const CHANNEL_NAME = /^[A-Za-z0-9_\-.:@/=,;]{1,255}$/;

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
  /**
   * Share one connection among the tabs of the origin that use this server: `"auto"` (a SharedWorker where the
   * browser has one, else one elected tab), `"worker"`, `"tab"`, or `false` for a connection per tab.
   */
  share: "auto",
});

const SHARE_MODES = ["auto", "worker", "tab", "off"];

/**
 * How this client shares its connection: "worker", "tab" or "off". With a token, "auto" does not share: a token
 * is an identity, and two clients of one origin may hold different ones; `share: "tab"` shares anyway, with the
 * elected tab's token (a SharedWorker cannot call the page's token function). A page that pauses while hidden
 * keeps its own connection.
 */
function sharingMode(opts, env) {
  const asked = opts.share === true ? "auto" : opts.share === false ? "off" : opts.share;
  if (!SHARE_MODES.includes(asked)) throw new TypeError(`share must be one of ${SHARE_MODES.join(", ")} or a boolean`);
  const canElect = Boolean(env.BroadcastChannel && env.locks);
  const canWorker = Boolean(env.SharedWorker) && !opts.token && canElect;
  if (asked === "off" || (asked === "auto" && (opts.pauseWhenHidden || opts.token))) return "off";
  if ((asked === "auto" || asked === "worker") && canWorker) return "worker";
  return canElect ? "tab" : "off";
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
  #rosters = new Rosters((error) => this.#report(error));
  #listeners = new Map();
  #connection;

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
    const parts = {
      opts: this.#opts,
      env: this.#env,
      baseUrl: this.#baseUrl,
      book: this.#book,
      rosters: this.#rosters,
      deliver: (envelope) => this.#deliver(envelope),
      emit: (name, payload) => this.#emit(name, payload),
    };
    const mode = sharingMode(this.#opts, this.#env);
    if (mode === "off") {
      this.#connection = new Connection(parts);
      return;
    }
    const shared = new SharedConnection({ ...parts, tab: tabName(this.#env) });
    this.#connection = shared;
    const link = {
      env: this.#env,
      opts: this.#opts,
      baseUrl: this.#baseUrl,
      tab: shared.tab,
      receive: (message) => shared.receive(message),
      // A worker that dies before it says anything (no module workers here): the tabs elect one of them.
      failed: () => shared.attach(electionLink(link)),
    };
    shared.attach((mode === "worker" && workerLink(link)) || electionLink(link));
  }

  /**
   * How this client shares its connection with the other tabs of the origin: `{ mode, leader }`, `mode` being
   * `"worker"` (a SharedWorker runs it), `"tab"` (an elected tab runs it; `leader` says whether it is this one) or
   * `"off"`.
   */
  get sharing() {
    return this.#connection.sharing ?? { mode: "off", leader: false };
  }

  /** The current state: `{ state, transport }`. */
  get state() {
    return this.#connection.state;
  }

  /** The transport in use while connected, else null. */
  get transport() {
    const { state, transport } = this.#connection.state;
    return state === "connected" ? transport : null;
  }

  /**
   * Receives the messages of `channel`: `handler(data, envelope)`. Options: `last` (replay the newest N messages
   * when the page has no position in the channel yet), `since` (a cursor to start after), `event` (only messages
   * with that event name). Every subscription shares the client's one connection.
   */
  subscribe(channel, options, handler) {
    if (typeof options === "function") [options, handler] = [{}, options];
    options = options ?? {};
    if (this.#connection.closed) throw new Error("this Herald client is closed");
    if (typeof channel !== "string" || !CHANNEL_NAME.test(channel))
      throw new TypeError(`invalid channel name: ${channel}`);
    if (typeof handler !== "function") throw new TypeError("subscribe needs a handler function");
    const sub = { channel, event: options.event ?? null, last: Math.max(0, Math.floor(options.last ?? 0)), handler };
    if (this.#book.add(sub, options.since)) this.#connection.scheduleSync();
    let active = true;
    return {
      unsubscribe: () => {
        if (!active) return;
        active = false;
        if (this.#book.remove(sub)) this.#connection.scheduleSync();
      },
    };
  }

  /**
   * Follows who is in `channel` (a channel of a presence namespace): `onChange(members)` with the whole list, the
   * first one included, whenever it changes; `onJoin(member)` and `onLeave(member)` for each user that came or went
   * after the first list. A member is `{ user_id, user_info }`: one per user, however many tabs it has. The page is
   * a member itself when its token names a user (`sub`, presenting the token's `info`). Over WebSocket and SSE the
   * changes arrive as they happen; over polling the list is read every `pollInterval`. Returns `{ members, stop }`:
   * the current list, and a function that stops following. Presence is not carried between tabs: on a client that
   * shares its connection (`share`, see `sharing`) it throws; create the client with `share: false`.
   */
  presence(channel, handlers = {}) {
    if (this.#connection.closed) throw new Error("this Herald client is closed");
    if (this.#connection instanceof SharedConnection)
      throw new Error("presence needs a connection of its own: create this client with share: false");
    if (typeof channel !== "string" || !CHANNEL_NAME.test(channel))
      throw new TypeError(`invalid channel name: ${channel}`);
    const watcher = { channel, onJoin: handlers.onJoin, onLeave: handlers.onLeave, onChange: handlers.onChange };
    const rosters = this.#rosters;
    // The presence of a channel comes with its subscription.
    const subscription = this.subscribe(channel, () => {});
    if (rosters.watch(watcher)) this.#connection.scheduleSync();
    let active = true;
    return {
      get members() {
        return rosters.members(channel);
      },
      stop: () => {
        if (!active) return;
        active = false;
        if (rosters.unwatch(watcher)) this.#connection.scheduleSync();
        subscription.unsubscribe();
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
    if (this.#connection.publish) return this.#connection.publish(channel, event, data);
    const transport = this.#connection.openTransport;
    if (transport?.canPublish) return transport.publish(channel, event, data);
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
    this.#connection.setToken(token);
  }

  /** Closes the connection for good. */
  close() {
    this.#connection.close();
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
