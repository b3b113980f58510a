// Subscriber tokens: where the client gets one (the page's string or function), what it reads from it (its
// claims, unverified: the server checks the signature), and when it asks for the next. A token is a problem of
// credentials, apart from any transport; the client only asks this module for the token to present.

import { backoffDelay } from "./backoff.js";
import { HeraldError } from "./error.js";

/** The most a fresh token is fetched before the current one expires. */
const RENEW_AHEAD_MS = 30000;

/** The claims of a JWT, read without checking its signature (the server does that); null if it is not a JWT. */
export function readTokenClaims(token) {
  const payload = typeof token === "string" ? token.split(".")[1] : undefined;
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/**
 * Milliseconds from `now` until a fresh token should replace `token`: 30 s or a tenth of its lifetime before its
 * `exp`, whichever is *closer* to `exp`, so a long token is renewed 30 s ahead and a 3 s one 0.3 s ahead (the
 * earlier of the two would renew a short token the moment it arrives). The lifetime is `exp - iat`; without `iat`,
 * what is left of it now. With `iat`, the delay never exceeds the lifetime, so a page clock running behind the
 * issuer's does not push the renewal past the real expiry. 0 when that moment has passed; null without `exp`.
 */
export function tokenRenewalDelay(token, now) {
  const claims = readTokenClaims(token);
  if (!claims || !Number.isFinite(claims.exp)) return null;
  let left = claims.exp * 1000 - now;
  let lifetime = left;
  if (Number.isFinite(claims.iat) && claims.iat < claims.exp) {
    lifetime = (claims.exp - claims.iat) * 1000;
    left = Math.min(left, lifetime);
  }
  if (lifetime <= 0) return 0;
  return Math.max(0, Math.round(left - Math.min(RENEW_AHEAD_MS, lifetime / 10)));
}

/**
 * The page's subscriber token: a string it gave (used until it gives another), or a function called for a fresh
 * one before the first connection, ahead of expiry and after a refusal. One call at a time: asking while a call
 * is running gets that call's answer. A call that takes longer than `requestTimeout` counts as failed, so a
 * function that never answers cannot stall the client.
 */
export class TokenSource {
  #source = null;
  #value = null;
  #stale = false;
  #pending = null;
  #generation = 0;
  #env;
  #timeoutMs;
  #onValue;

  /** `onValue()` runs whenever a call of the function brought a token (or none). */
  constructor(source, { env, timeoutMs, onValue }) {
    this.#env = env;
    this.#timeoutMs = timeoutMs;
    this.#onValue = onValue;
    this.replace(source);
  }

  replace(source) {
    if (source != null && typeof source !== "string" && typeof source !== "function")
      throw new TypeError("token must be a string, a function that returns one, or null");
    this.#source = source ?? null;
    this.#generation++;
    this.#pending = null;
    this.#value = typeof source === "string" && source ? source : null;
    this.#stale = typeof source === "function";
  }

  /** Whether a fresh token can be asked for (the page gave a function). */
  get renewable() {
    return typeof this.#source === "function";
  }

  /** The token to present, or null. */
  get value() {
    return this.#value;
  }

  /** Whether the function must be called before the next connection: never yet, or its token was refused. */
  get stale() {
    return this.#stale;
  }

  /** The server refused the token: the next connection asks for a fresh one first. */
  invalidate() {
    if (this.renewable) this.#stale = true;
  }

  /** Calls the page's function; resolves with its token (null for none), rejects with `token_unavailable`. */
  fetch() {
    if (!this.renewable) return Promise.resolve(this.#value);
    if (this.#pending) return this.#pending;
    const [generation, source, env] = [this.#generation, this.#source, this.#env];
    const pending = (async () => {
      let token;
      let timer;
      const late = new Promise((_, reject) => {
        timer = env.setTimeout(() => reject(new Error(`no answer within ${this.#timeoutMs} ms`)), this.#timeoutMs);
      });
      try {
        token = await Promise.race([source(), late]);
      } catch (cause) {
        throw new HeraldError("token_unavailable", `the token function failed: ${cause?.message ?? cause}`, { cause });
      } finally {
        env.clearTimeout(timer);
      }
      if (token != null && typeof token !== "string")
        throw new HeraldError("token_unavailable", "the token function must return a string, null or undefined");
      if (generation === this.#generation) {
        this.#value = token || null;
        this.#stale = false;
        this.#onValue();
      }
      return this.#value;
    })();
    this.#pending = pending;
    pending
      .finally(() => {
        if (this.#pending === pending) this.#pending = null;
      })
      .catch(() => {});
    return pending;
  }
}

/**
 * When to call the token function again: ahead of the current token's expiry, or after a refusal with the
 * reconnection backoff (once, however many refusals come together). `onDue()` runs when that moment comes. A token
 * that arrives already due is renewed after a growing delay, so a function that keeps returning one is not called
 * in a loop.
 */
export class RenewalSchedule {
  #env;
  #opts;
  #onDue;
  #timer = null;
  #queued = false; // a renewal after a refusal is waiting for its backoff
  #attempt = 0; // renewals after refusals in a row, for their backoff
  #staleTokens = 0; // tokens in a row that arrived already due for renewal

  constructor({ env, opts, onDue }) {
    this.#env = env;
    this.#opts = opts;
    this.#onDue = onDue;
  }

  /** A call of the token function brought `token` (or none): its renewal is planned ahead of its expiry. */
  planAhead(token) {
    this.clear();
    if (!token) return;
    let delay = tokenRenewalDelay(token, this.#env.now());
    if (delay === null) return; // not a JWT, or no `exp`: renewed only when refused
    const opts = this.#opts;
    if (delay === 0) {
      // Already due (a cached token, or a page clock ahead of the issuer's): do not ask again at once.
      delay = backoffDelay(this.#staleTokens++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
    } else {
      this.#staleTokens = 0;
    }
    this.#timer = this.#env.setTimeout(() => this.#due(), Math.min(delay, 2 ** 31 - 1));
  }

  /** The server refused the token: a fresh one after the backoff, unless one is already planned that way. */
  afterRefusal() {
    if (this.#queued) return;
    this.clear();
    this.#queued = true;
    const opts = this.#opts;
    const delay = backoffDelay(this.#attempt++, opts.reconnectDelay, opts.maxReconnectDelay, this.#env.random);
    this.#timer = this.#env.setTimeout(() => this.#due(), delay);
  }

  /** A token was accepted: the next refusal waits the shortest delay again. */
  accepted() {
    this.#attempt = 0;
  }

  /** The page gave a new token: nothing planned for the old one, and no backoff carried over. */
  restart() {
    this.#attempt = 0;
    this.#staleTokens = 0;
    this.clear();
  }

  clear() {
    if (this.#timer !== null) this.#env.clearTimeout(this.#timer);
    this.#timer = null;
    this.#queued = false;
  }

  #due() {
    this.clear();
    this.#onDue();
  }
}
