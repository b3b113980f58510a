// Subscriber tokens: where the client gets one (the page's string or function), what it reads from it (its
// claims, unverified: the server checks the signature), and when it asks for the next. A token is a problem of
// credentials, apart from any transport; the client only asks this module for the token to present.

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

