// Type declarations of herald.js, the browser client of Herald (see README.md beside this file).

/** A technique, in the order `transports` lists them by default. */
export type Transport = "websocket" | "sse" | "long-poll" | "poll";

export declare const TRANSPORTS: readonly Transport[];

/** A message as Herald delivers it (API.md, "Message envelope"). */
export interface Envelope<T = unknown> {
  channel: string;
  /** 1, 2, 3 … per channel, no gaps within an epoch. */
  offset: number;
  /** This message's position: `since=<cursor>` resumes after it. */
  cursor: string;
  /** `message` when the publisher gave none. */
  event: string;
  data: T;
  /** When Herald stored it, RFC 3339 UTC with milliseconds. */
  time: string;
}

/** The server's answer to a publish. */
export interface PublishAck {
  channel: string;
  offset: number;
  cursor: string;
  time: string;
}

/**
 * A subscriber token (a JWT issued by the page's backend), or a function that returns a fresh one. The function
 * may be async; it is called before the first connection, ahead of each token's expiry, and after the server
 * refused a token. It returns null (or undefined) when there is no token to give.
 */
export type TokenOption = string | (() => string | null | undefined | Promise<string | null | undefined>) | null;

export interface HeraldOptions {
  /** The subscriber token for private channels; default none. */
  token?: TokenOption;
  /** Tried in this order; default all four, WebSocket first. */
  transports?: Transport[];
  /** Milliseconds between two short polls; default 3000. */
  pollInterval?: number;
  /** Seconds a long poll is held by the server (`wait=`); default 25. */
  longPollWait?: number;
  /** `limit=` of a poll; default 100. */
  pollLimit?: number;
  /** First reconnect delay in ms, doubled per failed attempt, with jitter; default 1000. */
  reconnectDelay?: number;
  /** Cap of the reconnect delay in ms; default 30000. */
  maxReconnectDelay?: number;
  /** A transport that has not opened within this many ms counts as failed; default 10000. */
  connectTimeout?: number;
  /** Time allowed for an HTTP request in ms, on top of a long poll's wait; default 10000. */
  requestTimeout?: number;
  /** Failures in a row, before a transport ever opened, that make the client try the next; default 2. */
  failuresBeforeFallback?: number;
  /** Disconnect while `document.hidden`, resume from the cursors when shown; default false. */
  pauseWhenHidden?: boolean;
  /**
   * Share one connection among the tabs of the origin: a SharedWorker (`"worker"`), an elected tab (`"tab"`),
   * whichever the browser allows (`"auto"`, the default), or none (`false`).
   */
  share?: "auto" | "worker" | "tab" | boolean;

  /** Injected implementations (default: the globals), for tests and non-browser runtimes. */
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: typeof fetch;
  AbortController?: typeof AbortController;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  /** Source of the backoff jitter, in [0, 1). */
  random?: () => number;
  /** The clock tokens' `exp` is compared with, in ms since 1970; default `Date.now`. */
  now?: () => number;
  document?: unknown;
  window?: unknown;
}

export interface SubscribeOptions {
  /** Replay the newest N messages first, when the page has no position in the channel yet. */
  last?: number;
  /** A cursor to start after, when the page has no position in the channel yet. */
  since?: string;
  /** Only messages with this event name. */
  event?: string;
}

export interface Subscription {
  unsubscribe(): void;
}

/** A member of a channel's presence: one per user, however many tabs it has. */
export interface Member<Info = unknown> {
  user_id: string;
  /** What the user presents: its token's `info` claim, null when none. */
  user_info: Info | null;
}

export interface PresenceHandlers<Info = unknown> {
  /** The whole list, every time it changes, the first list included. */
  onChange?(members: Member<Info>[]): void;
  /** A user that came after the first list. */
  onJoin?(member: Member<Info>): void;
  /** A user that left after the first list. */
  onLeave?(member: Member<Info>): void;
}

export interface Presence<Info = unknown> {
  /** The members now (empty until the first list arrives). */
  readonly members: Member<Info>[];
  /** Stops following (and the subscription that came with it). */
  stop(): void;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "offline";

export interface StateChange {
  state: ConnectionState;
  /** The transport connected, or being tried next; null while idle. */
  transport: Transport | null;
  /** Why a connection attempt ended, with `reconnecting`, `connecting` or `offline`. */
  error?: HeraldError;
  /**
   * Why the client is idle: `closed`, `hidden`, `no subscription`, or `unauthorized` (a string token was refused,
   * or every channel waits for a token: nothing connects until `setToken`, or the token function's next token).
   */
  reason?: string;
}

export interface ResetEvent {
  /** The channel whose messages were partly lost (history gone or server restarted). */
  channel: string;
  transport: Transport;
}

export interface HeraldEvents {
  state: StateChange;
  reset: ResetEvent;
  message: Envelope;
  error: Error;
}

export declare class HeraldError extends Error {
  /**
   * The API's error code (`transport_disabled`, `client_publish_forbidden`, `token_required`, `invalid_token`,
   * `token_expired`, `channel_forbidden` …) or the client's own (`token_unavailable`: the token function threw,
   * returned something else than a string, or did not answer within `requestTimeout`).
   */
  code: string;
  /** The HTTP status, for an HTTP error. */
  status?: number;
  /** Seconds to wait, from a `Retry-After` header. */
  retryAfter?: number;
  /** The WebSocket close code, for a closed WebSocket. */
  closeCode?: number;
  /**
   * The channel a refusal concerns: `channel_forbidden` (that subscription failed and was dropped),
   * `token_required` (the channel waits for a token), or a WebSocket `ended` frame's channel.
   */
  channel?: string;
  constructor(
    code: string,
    message: string,
    extra?: { status?: number; retryAfter?: number; closeCode?: number; channel?: string; cause?: unknown },
  );
}

export declare class Herald {
  /** `baseUrl` such as `http://127.0.0.1:7070` (a path prefix is kept); in a browser, relative to the page. */
  constructor(baseUrl?: string, options?: HeraldOptions);
  readonly state: { state: ConnectionState; transport: Transport | null };
  /** The transport in use while connected, else null. */
  readonly transport: Transport | null;
  /** How the connection is shared with the other tabs of the origin, and whether this tab runs it. */
  readonly sharing: { mode: "worker" | "tab" | "off"; leader: boolean };
  subscribe<T = unknown>(
    channel: string,
    options: SubscribeOptions,
    handler: (data: T, message: Envelope<T>) => void,
  ): Subscription;
  subscribe<T = unknown>(channel: string, handler: (data: T, message: Envelope<T>) => void): Subscription;
  publish(channel: string, event: string | null | undefined, data: unknown): Promise<PublishAck>;
  /** Follows who is in `channel`, a channel of a presence namespace. */
  presence<Info = unknown>(channel: string, handlers?: PresenceHandlers<Info>): Presence<Info>;
  on<K extends keyof HeraldEvents>(name: K, listener: (payload: HeraldEvents[K]) => void): () => void;
  off<K extends keyof HeraldEvents>(name: K, listener: (payload: HeraldEvents[K]) => void): void;
  /** Replaces the subscriber token; channels waiting for one resume from their cursors. */
  setToken(token: TokenOption): void;
  close(): void;
}

/** The claims of a JWT, read without checking its signature; null when it is not a JWT. */
export declare function readTokenClaims(token: string): Record<string, unknown> | null;

/**
 * Milliseconds from `now` until `token` should be renewed: 30 s or a tenth of its lifetime before `exp`, whichever
 * is closer to `exp`; 0 when that moment has passed; null when the token has no readable `exp`.
 */
export declare function tokenRenewalDelay(token: string, now: number): number | null;

/** Exponential backoff with equal jitter: between half and all of `base * 2^attempt`, capped at `max`. */
export declare function backoffDelay(attempt: number, base: number, max: number, random: () => number): number;

export default Herald;
