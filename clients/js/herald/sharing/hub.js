// The shared side of a connection shared by the tabs of an origin: ONE Connection and ChannelBook for every
// subscription of every tab, run by a SharedWorker or by the elected tab. Tabs talk to it in messages (the
// protocol below); it knows nothing of how they reach it, only `send(tabs, message)`.
//
// Exactly once, per tab: each tab keeps its own book (its cursors and the last offset it showed), and drops what
// it has seen. The hub follows each channel from the OLDEST position any tab needs: a tab that joins a channel the
// hub already follows, from further back (a cursor behind the hub's, or `last: N`), rewinds the hub's channel to
// that position and the hub reconnects from its cursors; the other tabs drop the messages they already have. So a
// new hub (the elected tab closed, another took over) loses nothing: every tab joins it again with its cursors.
//
// Messages from a tab: hello {tab, opts, baseUrl}, subscribe {tab, id, channel, since, offset, last},
// unsubscribe {tab, id}, publish {tab, req, channel, event, data}, bye {tab}.
// Messages to tabs: message {envelope}, reset {channel, transport}, state {state, transport},
// error {error: {code, message, channel, status}}, published {to, req, result | error}.

import { Connection } from "../connection.js";
import { Rosters } from "../presence.js";
import { ChannelBook } from "../channel-book.js";
import { channelPath, endpoint, requestJson } from "../http.js";

/** How long joins are gathered before the hub reconnects from rewound cursors (a new hub gets every tab at once). */
const REWIND_GATHER_MS = 50;

/** A serializable copy of an error, for a tab to make its HeraldError again. */
export function errorFields(error) {
  return {
    code: error?.code ?? "error",
    message: String(error?.message ?? error),
    channel: error?.channel ?? null,
    status: error?.status ?? null,
    retryAfter: error?.retryAfter ?? null,
  };
}

export class SharedHub {
  #env;
  #opts;
  #baseUrl;
  #send;
  #book = new ChannelBook();
  #connection;
  #subs = new Map(); // "tab/id" -> the hub's subscriber for that tab's subscription
  #tabs = new Set();
  #state = { state: "idle", transport: null };
  #rewindTimer = null;
  #closed = false;

  /** `send(tabs, message)`: to each tab of the set (a broadcast may send once to all). */
  constructor({ opts, env, baseUrl, send }) {
    this.#opts = opts;
    this.#env = env;
    this.#baseUrl = baseUrl;
    this.#send = send;
    this.#connection = new Connection({
      opts,
      env,
      baseUrl,
      book: this.#book,
      // Presence is not carried between tabs: a page that follows presence keeps a connection of its own
      // (Herald#presence refuses on a shared one), so the shared connection follows none.
      rosters: new Rosters(() => {}),
      deliver: (envelope) => this.#deliver(envelope),
      emit: (name, payload) => this.#emit(name, payload),
    });
  }

  /** A tab arrived (or joined again): it is told the state now. */
  hello(tab) {
    this.#tabs.add(tab);
    this.#send(new Set([tab]), { type: "state", to: tab, ...this.#state });
  }

  /** A message from a tab. */
  receive(message) {
    if (this.#closed || !message || typeof message.tab !== "string") return;
    switch (message.type) {
      case "subscribe":
        return this.#subscribe(message);
      case "unsubscribe":
        return this.#unsubscribe(`${message.tab}/${message.id}`);
      case "publish":
        return this.#publish(message);
      case "bye":
        return this.tabGone(message.tab);
    }
  }

  /** A tab closed: its subscriptions go. */
  tabGone(tab) {
    this.#tabs.delete(tab);
    for (const [key, sub] of [...this.#subs]) if (sub.tab === tab) this.#unsubscribe(key);
  }

  /** The elected tab's new token (see Herald.setToken). */
  setToken(token) {
    if (!this.#closed) this.#connection.setToken(token);
  }

  close() {
    this.#closed = true;
    if (this.#rewindTimer !== null) this.#env.clearTimeout(this.#rewindTimer);
    this.#connection.close();
  }

  #subscribe({ tab, id, channel, since, offset, last }) {
    const key = `${tab}/${id}`;
    this.#tabs.add(tab);
    const known = this.#subs.get(key);
    const sub = known ?? { channel, event: null, last: Math.max(0, Math.floor(last ?? 0)), tab };
    this.#subs.set(key, sub);
    const followed = this.#book.get(channel);
    if (!followed) {
      this.#book.add(sub, since ?? undefined);
      this.#connection.scheduleSync();
      return;
    }
    followed.subscribers.add(sub);
    this.#rewind(channel, since ?? null, Number.isInteger(offset) ? offset : 0, sub.last);
  }

  /** Moves the hub's position in `channel` back to a joining tab's, when the tab needs more than the hub has. */
  #rewind(channel, since, offset, last) {
    const followed = this.#book.get(channel);
    const position = this.#book.resumeCursor(channel);
    if (since) {
      if (position && offset >= followed.lastOffset) return; // the hub is at or behind the tab
      followed.cursor = since;
      followed.streamCursor = null;
      followed.lastOffset = offset;
    } else if (last > 0) {
      followed.cursor = null;
      followed.streamCursor = null;
      followed.lastOffset = 0;
    } else {
      return; // live from now: what the hub follows already
    }
    if (this.#rewindTimer !== null) return;
    this.#rewindTimer = this.#env.setTimeout(() => {
      this.#rewindTimer = null;
      if (!this.#closed) this.#connection.restart();
    }, REWIND_GATHER_MS);
  }

  #unsubscribe(key) {
    const sub = this.#subs.get(key);
    if (!sub) return;
    this.#subs.delete(key);
    if (this.#book.remove(sub)) this.#connection.scheduleSync();
  }

  #tabsOf(channel) {
    const tabs = new Set();
    for (const sub of this.#subs.values()) if (sub.channel === channel) tabs.add(sub.tab);
    return tabs;
  }

  #deliver(envelope) {
    if (!envelope || typeof envelope.channel !== "string") return;
    if (!this.#book.accept(envelope)) return;
    this.#send(this.#tabsOf(envelope.channel), { type: "message", envelope });
  }

  #emit(name, payload) {
    if (name === "state") {
      this.#state = { state: payload.state, transport: payload.transport ?? null };
      this.#send(new Set(this.#tabs), { type: "state", ...this.#state });
    } else if (name === "reset") {
      this.#send(this.#tabsOf(payload.channel), { type: "reset", channel: payload.channel, transport: payload.transport });
    } else if (name === "error") {
      const error = errorFields(payload);
      const tabs = error.channel ? this.#tabsOf(error.channel) : new Set(this.#tabs);
      if (error.code === "channel_forbidden" && error.channel) {
        for (const [key, sub] of [...this.#subs]) if (sub.channel === error.channel) this.#subs.delete(key);
      }
      this.#send(tabs, { type: "error", error });
    }
  }

  /** Publishes for a tab: over the WebSocket when that is the open connection, else over HTTP (as Herald.publish). */
  #publish({ tab, req, channel, event, data }) {
    const transport = this.#connection.openTransport;
    let sent;
    if (transport?.canPublish) {
      sent = transport.publish(channel, event, data);
    } else {
      const body = { data: data === undefined ? null : data };
      if (event != null) body.event = event;
      const url = endpoint(this.#baseUrl, `/v1/channels/${channelPath(channel)}/messages`);
      const init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
      sent = requestJson(this.#env, url, init, this.#opts.requestTimeout);
    }
    const to = new Set([tab]);
    sent.then(
      (result) => this.#send(to, { type: "published", to: tab, req, result }),
      (error) => this.#send(to, { type: "published", to: tab, req, error: errorFields(error) }),
    );
  }
}
