// The WebSocket transport: one socket for every channel, a `subscribe` frame each with its own cursor, and the
// only transport that can publish and take a renewed token without reconnecting. A channel whose presence the
// page follows gets a `presence` frame after its `subscribe`: the members, then `join` and `leave` frames.

import { HeraldError } from "../error.js";
import { endpoint, parseJson } from "../http.js";
import { CHANNEL_REFUSALS, TOKEN_REFUSALS } from "../refusals.js";

/** The socket's address: the server's, `ws:` for `http:` and `wss:` for `https:`. */
function wsUrl(baseUrl) {
  return endpoint(baseUrl, "/v1/ws").replace(/^http/, "ws");
}

/**
 * The token goes in an `auth` frame, sent first on every new socket and again whenever the token is renewed: the
 * server answers in frames the page can read (a refused handshake is only a close 1006 in a browser), the same
 * frame renews the token without a reconnection, and the token stays out of URLs. Frames are answered in the
 * order they were sent, so subscriptions sent after an `auth` frame are checked with its token.
 */
export class WebSocketTransport {
  #link;
  #ws;
  #open = false;
  #nextId = 1;
  #pending = new Map();
  #subscribed = new Map();
  /** The channels whose members this socket asked for. */
  #presence = new Set();
  /** The id of the `auth` frame the server has not answered yet, or null. */
  #authPending = null;

  constructor(link) {
    this.#link = link;
    const ws = new link.env.WebSocket(wsUrl(link.baseUrl));
    this.#ws = ws;
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      this.#open = true;
      link.healthy();
      this.authenticate();
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

  /** Presents the current token (a new one replaces the last, and the subscriptions stay). */
  authenticate() {
    const token = this.#link.token();
    if (!this.#open || !token) return;
    this.#authPending = this.#nextId++;
    this.#send({ op: "auth", token, id: this.#authPending });
  }

  sync() {
    if (!this.#open) return;
    const wanted = new Set(this.#link.channels());
    for (const name of wanted) if (!this.#subscribed.has(name)) this.#subscribe(name);
    for (const name of [...this.#subscribed.keys()]) {
      if (wanted.has(name)) continue;
      this.#subscribed.delete(name);
      this.#presence.delete(name);
      this.#send({ op: "unsubscribe", channel: name });
    }
    const presence = new Set(this.#link.presenceChannels());
    for (const name of presence) if (this.#subscribed.has(name)) this.#askPresence(name);
    for (const name of [...this.#presence]) if (!presence.has(name)) this.#presence.delete(name);
  }

  /** Asks for the members of `name`, once per subscription, if the page follows its presence. */
  #askPresence(name) {
    if (this.#presence.has(name) || !this.#link.presenceChannels().includes(name)) return;
    this.#presence.add(name);
    // Frames are answered in order: a `presence` after its `subscribe` finds the channel subscribed.
    this.#send({ op: "presence", channel: name, id: this.#nextId++ });
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
    this.#presence.delete(name);
    this.#send(frame);
    this.#askPresence(name);
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
      case "authenticated":
        if (frame.id === this.#authPending) this.#authPending = null;
        link.tokenAccepted();
        break;
      case "ended":
        if (!subscribed) break;
        this.#subscribed.delete(frame.channel);
        this.#presence.delete(frame.channel);
        this.#refused(
          frame.channel,
          new HeraldError(frame.code ?? "ended", frame.message ?? "the server ended the subscription", {
            channel: frame.channel,
          }),
        );
        break;
      case "published": {
        const { op: _op, id: _id, ...ack } = frame;
        this.#settle(frame.id)?.resolve(ack);
        break;
      }
      case "presence":
        if (subscribed && this.#presence.has(frame.channel)) link.presenceList(frame.channel, frame.members);
        break;
      case "join":
      case "leave":
        if (subscribed && this.#presence.has(frame.channel))
          link.presenceChange(frame.channel, frame.op === "join", frame.member);
        break;
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
    if (frame.id !== undefined && frame.id === this.#authPending) {
      this.#authPending = null;
      this.#link.tokenRefused(error);
      return;
    }
    const channel = [...this.#subscribed].find(([, id]) => id === frame.id)?.[0];
    if (channel === undefined || error.code === "already_subscribed") {
      if (error.code !== "already_subscribed") this.#link.error(error);
      return;
    }
    this.#subscribed.delete(channel);
    this.#presence.delete(channel);
    if (error.code === "invalid_cursor") {
      // The cursor cannot be read: the page cannot know what it missed. Say so, and start over without it.
      this.#link.reset(channel, true);
      this.#subscribe(channel);
    } else if (TOKEN_REFUSALS.has(error.code) || CHANNEL_REFUSALS.has(error.code)) {
      error.channel = channel;
      this.#refused(channel, error);
    } else {
      this.#link.error(error);
    }
  }

  /**
   * The server refused or ended `channel` (already out of `#subscribed`): for want of a valid token, the channel
   * waits for one; not granted (or ended for a reason the client does not know), the subscription fails.
   */
  #refused(channel, error) {
    const tokenRelated = TOKEN_REFUSALS.has(error.code) || CHANNEL_REFUSALS.has(error.code);
    if (tokenRelated && this.#authPending !== null) {
      // The server judged it with the token before the `auth` frame in flight; ask again, after that frame.
      this.#subscribe(channel);
    } else if (tokenRelated && error.code !== "channel_forbidden") {
      this.#link.needsToken(channel, error);
    } else {
      this.#link.forbidden(channel, error);
    }
  }
}
