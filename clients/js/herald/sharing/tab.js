// A tab's side of a connection shared by the tabs of an origin: what the Herald class uses instead of its own
// Connection when it shares. It hands the tab's subscriptions to the hub (sharing/hub.js) with the tab's own
// cursors, and hears back messages, resets, states and errors. The tab's book stays the judge of what the page
// sees: it drops what it already showed, so a hub that rewinds for another tab, or a new hub, shows nothing twice.

import { HeraldError } from "../error.js";

let nextTab = 0;

/** A name for this tab, unique among the tabs of the origin. */
export function tabName(env) {
  return `${env.now().toString(36)}-${Math.floor(env.random() * 2 ** 32).toString(36)}-${++nextTab}`;
}

/**
 * The tab's stand-in for Connection: same `state`, `closed`, `scheduleSync`, `setToken`, `close`, plus `publish`.
 * `link` reaches the hub: `post(message)` sends, and the link calls `receive(message)` with what the hub sends;
 * `close()` leaves it; `mode` says how the tabs share ("worker" or "tab"), `leader()` whether this tab runs it.
 */
export class SharedConnection {
  #env;
  #opts;
  #book;
  #deliver;
  #emit;
  #tab;
  #link = null;
  #ready = false; // the link is up and the tab's lock held: it may speak
  #state = { state: "idle", transport: null };
  #registered = new Map(); // subscription id -> { sub, channel }
  #ids = new WeakMap();
  #nextId = 0;
  #nextReq = 0;
  #pending = new Map();
  #syncQueued = false;
  #closed = false;

  constructor({ opts, env, book, deliver, emit, tab }) {
    this.#opts = opts;
    this.#env = env;
    this.#book = book;
    this.#deliver = deliver;
    this.#emit = emit;
    this.#tab = tab;
  }

  /** Connects the tab to its hub through `link` (sharing/links.js), once the link is ready. */
  attach(link) {
    this.#link = link;
    this.#ready = false;
    link.ready.then(() => {
      if (this.#link !== link) return;
      this.#ready = true;
      this.rejoin();
    });
  }

  get tab() {
    return this.#tab;
  }

  get state() {
    return { ...this.#state };
  }

  get closed() {
    return this.#closed;
  }

  /** Sharing has no transport of its own in the tab: publishing goes through the hub. */
  get openTransport() {
    return null;
  }

  get sharing() {
    return { mode: this.#link?.mode ?? "off", leader: Boolean(this.#link?.leader()) };
  }

  scheduleSync() {
    if (this.#syncQueued) return;
    this.#syncQueued = true;
    queueMicrotask(() => {
      this.#syncQueued = false;
      this.#sync();
    });
  }

  /** A new hub: everything is handed to it again, from the tab's cursors. */
  rejoin() {
    if (this.#closed || !this.#ready) return;
    this.#registered.clear();
    this.#link.post({ type: "hello", tab: this.#tab });
    this.#sync();
  }

  /**
   * A new token: the shared connection takes it when this tab runs it (elected), and this tab uses it if it is
   * elected later; a SharedWorker's connection has no token (with a token, tabs elect one of them).
   */
  setToken(token) {
    this.#opts.token = token;
    this.#link?.setToken?.(token);
  }

  publish(channel, event, data) {
    if (this.#closed) return Promise.reject(new Error("this Herald client is closed"));
    const req = ++this.#nextReq;
    return new Promise((resolve, reject) => {
      const timer = this.#env.setTimeout(() => {
        this.#pending.delete(req);
        reject(new HeraldError("timeout", "no answer to the publish in time"));
      }, this.#opts.requestTimeout * 2);
      this.#pending.set(req, { resolve, reject, timer });
      this.#link.post({ type: "publish", tab: this.#tab, req, channel, event, data });
    });
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#link?.post({ type: "bye", tab: this.#tab });
    this.#link?.close();
    this.#setState({ state: "idle", transport: null, reason: "closed" });
  }

  /** What the hub sends; each tab hears every broadcast, so anything addressed to another tab is ignored. */
  receive(message) {
    if (this.#closed || !message || (message.to !== undefined && message.to !== this.#tab)) return;
    switch (message.type) {
      case "message":
        return this.#deliver(message.envelope);
      case "reset":
        if (this.#book.reset(message.channel, false))
          this.#emit("reset", { channel: message.channel, transport: message.transport });
        return;
      case "state":
        return this.#setState({ state: message.state, transport: message.transport });
      case "error":
        return this.#error(message.error);
      case "published":
        return this.#published(message);
      case "leader":
        return this.rejoin();
    }
  }

  #sync() {
    if (this.#closed || !this.#ready) return;
    const current = new Map();
    for (const name of this.#book.names()) {
      for (const sub of this.#book.get(name).subscribers) {
        if (!this.#ids.has(sub)) this.#ids.set(sub, ++this.#nextId);
        current.set(this.#ids.get(sub), sub);
      }
    }
    for (const [id, sub] of current) {
      if (this.#registered.has(id)) continue;
      this.#registered.set(id, sub);
      const channel = this.#book.get(sub.channel);
      this.#link.post({
        type: "subscribe",
        tab: this.#tab,
        id,
        channel: sub.channel,
        since: this.#book.resumeCursor(sub.channel),
        offset: channel?.lastOffset ?? 0,
        last: sub.last,
      });
    }
    for (const id of [...this.#registered.keys()]) {
      if (current.has(id)) continue;
      this.#registered.delete(id);
      this.#link.post({ type: "unsubscribe", tab: this.#tab, id });
    }
    if (current.size === 0) this.#setState({ state: "idle", transport: null, reason: "no subscription" });
  }

  #error(fields) {
    const error = new HeraldError(fields.code, fields.message, {
      status: fields.status ?? undefined,
      retryAfter: fields.retryAfter ?? undefined,
      channel: fields.channel ?? undefined,
    });
    if (fields.code === "channel_forbidden" && fields.channel && !this.#book.drop(fields.channel)) return;
    this.#emit("error", error);
  }

  #published({ req, result, error }) {
    const pending = this.#pending.get(req);
    if (!pending) return;
    this.#pending.delete(req);
    this.#env.clearTimeout(pending.timer);
    if (error) pending.reject(new HeraldError(error.code, error.message, { status: error.status ?? undefined }));
    else pending.resolve(result);
  }

  #setState(next) {
    if (this.#state.state === next.state && this.#state.transport === next.transport) return;
    this.#state = { state: next.state, transport: next.transport };
    this.#emit("state", next);
  }
}
