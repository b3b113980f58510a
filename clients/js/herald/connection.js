// The page's one connection to a Herald server, kept up whatever happens to it: which transport to try, when to
// try again or fall back to the next, and when to ask for a fresh token. The public class (herald.js) hands it
// the book of channels and hears back through two functions, `deliver` and `emit`; everything here is the
// machinery behind the `state` event.

import { backoffDelay } from "./backoff.js";
import { HeraldError } from "./error.js";
import { TOKEN_REFUSALS } from "./refusals.js";
import { RenewalSchedule, TokenSource } from "./tokens.js";
import { REQUIRED_GLOBAL, openTransport } from "./transports.js";

/**
 * Owns the transport in use and everything that decides the next one: the states of the `state` event (the Herald
 * class documents them), the fallback from a transport that failed `failuresBeforeFallback` times before it ever
 * opened, the reconnection backoff, and the token's renewal. Each attempt gets its own `link`, and what an old
 * link reports is ignored.
 */
export class Connection {
  #opts;
  #env;
  #baseUrl;
  #book;
  #rosters;
  #deliver;
  #emit;
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
  #renewal;
  #unauthorized = false; // a string token was refused: nothing connects until setToken()
  #tokenWait = null; // the call of the token function a connection waits for
  #onVisibility = () => this.#visibilityChanged();
  #onOnline = () => this.#retryNow();

  /**
   * `deliver(envelope)` gets every message a transport brings, `emit(name, payload)` every event for the page;
   * `rosters` is told the members of the channels whose presence the page follows.
   */
  constructor({ opts, env, baseUrl, book, rosters, deliver, emit }) {
    this.#opts = opts;
    this.#env = env;
    this.#baseUrl = baseUrl;
    this.#book = book;
    this.#rosters = rosters;
    this.#deliver = deliver;
    this.#emit = emit;
    this.#token = new TokenSource(opts.token, {
      env,
      timeoutMs: opts.requestTimeout,
      onValue: () => this.#onTokenValue(),
    });
    this.#renewal = new RenewalSchedule({ env, opts, onDue: () => this.#renewToken() });
    const doc = env.document;
    if (opts.pauseWhenHidden && doc?.addEventListener) {
      doc.addEventListener("visibilitychange", this.#onVisibility);
      this.#paused = Boolean(doc.hidden);
    }
    env.window?.addEventListener?.("online", this.#onOnline);
  }

  /** `{ state, transport }`, a copy. */
  get state() {
    return { ...this.#state };
  }

  get closed() {
    return this.#closed;
  }

  /** The transport while it is open, else null. */
  get openTransport() {
    return this.#healthy ? this.#transport : null;
  }

  /** Replaces the subscriber token (see `Herald.setToken`). */
  setToken(token) {
    this.#token.replace(token);
    this.#renewal.restart();
    if (!this.#closed) this.#tokenChanged();
  }

  /** Closes the connection for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropTransport();
    this.#clearRetry();
    this.#renewal.clear();
    this.#env.document?.removeEventListener?.("visibilitychange", this.#onVisibility);
    this.#env.window?.removeEventListener?.("online", this.#onOnline);
    this.#setState("idle", null, { reason: "closed" });
  }

  /**
   * Connects again at once, from the book's cursors: a shared hub moved a channel's position back for a tab that
   * joined it from further behind (sharing/hub.js).
   */
  restart() {
    if (this.#closed || this.#paused) return;
    if (!this.#transport && this.#tokenWait === null) {
      this.scheduleSync();
      return;
    }
    this.#dropTransport();
    this.#clearRetry();
    this.#connect();
  }

  /** The channel set changed; subscriptions made in one go (a page's start) give one connection, not one per call. */
  scheduleSync() {
    if (this.#syncQueued) return;
    this.#syncQueued = true;
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
    this.#setState(this.#tryingState(), kind);
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
        const delay = this.#backoff();
        this.#setState(this.#tryingState(), kind, { error });
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
      presenceChannels: () => this.#rosters.channels(),
      presenceList: (name, members) => link.live() && this.#rosters.replace(name, members),
      presenceChange: (name, join, member) => link.live() && this.#rosters.change(name, join, member),
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
      tokenAccepted: () => link.live() && this.#renewal.accepted(),
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
    this.#renewal.accepted();
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
    let delay;
    if (wasHealthy) {
      // A connection that worked and dropped: the same transport again, soon.
      this.#attempt = 0;
      delay = this.#backoff();
    } else if (fatal || ++this.#failures >= opts.failuresBeforeFallback) {
      this.#failures = 0;
      if (++this.#switches >= opts.transports.length) {
        // Every transport failed in a row: the network or the server is down. Start the round over from the
        // preferred transport, and wait longer each time.
        this.#switches = 0;
        this.#transportIndex = 0;
        this.#offline = true;
        delay = this.#backoff();
      } else {
        this.#transportIndex = (this.#transportIndex + 1) % opts.transports.length;
        delay = 0;
      }
    } else {
      delay = this.#backoff();
    }
    if (error?.retryAfter) delay = Math.max(delay, error.retryAfter * 1000);
    const next = opts.transports[this.#transportIndex];
    this.#setState(this.#tryingState(), next, { error });
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
    const delay = this.#backoff();
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
    this.scheduleSync();
  }

  /** The token does not grant `channel`: that subscription fails, the others go on. */
  #failChannel(channel, error) {
    error.channel = channel;
    if (!this.#book.drop(channel)) return;
    this.#emit("error", error);
    this.scheduleSync();
  }

  /** A request was refused for some of its channels: they are set aside, and the others are asked for at once. */
  #onChannelsRefused(refused) {
    this.#dropTransport();
    for (const [channel, error] of refused) {
      if (error.code === "channel_forbidden") this.#failChannel(channel, error);
      else this.#parkChannel(channel, error);
    }
    this.scheduleSync();
  }

  // --- token renewal

  /**
   * A call of the token function brought a token: its renewal is planned. (Parked channels are let go by whoever
   * asked for it, once the token is in place: a WebSocket must send its `auth` frame before their subscriptions.)
   */
  #onTokenValue() {
    this.#renewal.planAhead(this.#closed ? null : this.#token.value);
  }

  /** After a refusal: a fresh token after the backoff (once, however many channels were refused together). */
  #scheduleRenewal() {
    if (this.#token.renewable && !this.#closed) this.#renewal.afterRefusal();
  }

  /** Asks the function for a fresh token and hands it to the open connection; without one, to the next. */
  #renewToken() {
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
    this.scheduleSync();
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

  /** The next reconnection delay: doubled per attempt in a row, with jitter. */
  #backoff() {
    const opts = this.#opts;
    return backoffDelay(this.#attempt++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
  }

  /** The state while a connection is being tried. */
  #tryingState() {
    return this.#offline ? "offline" : this.#everConnected ? "reconnecting" : "connecting";
  }

  #setState(state, transport, extra = {}) {
    if (this.#state.state === state && this.#state.transport === transport) return;
    this.#state = { state, transport };
    this.#emit("state", { state, transport, ...extra });
  }
}
