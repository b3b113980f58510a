// The polling transports, long and short: one `/v1/poll` request at a time for every channel, the token in
// `Authorization`. The URL of a poll is also how the SSE transport learns where a quiet stream starts. The members
// of the channels whose presence the page follows are read every `pollInterval`, from their presence endpoint.

import { HeraldError } from "../error.js";
import { channelPath, endpoint, requestJson, withToken } from "../http.js";
import { CHANNEL_REFUSALS, findRefusedChannels } from "../refusals.js";

/** A poll of `names` from the book's cursors; `last` defaults to what their subscribers asked. */
export function pollUrl(baseUrl, names, book, { wait, limit, last = book.replayCount(names) }) {
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

/** Each request carries the token in `Authorization: Bearer`, so a renewed token serves from the next request. */
export class PollTransport {
  #link;
  #long;
  #generation = 0;
  #controller = null;
  #timer = null;
  #presenceTimer = null;
  /** Channels whose presence the server said it does not keep: not asked again by this transport. */
  #noPresence = new Set();

  constructor(link, { long }) {
    this.#link = link;
    this.#long = long;
    this.#poll(this.#generation, true);
    this.#readPresence(this.#generation);
  }

  /** The channel set changed: drop the request in flight and ask again at once, from the cursors. */
  sync() {
    this.#stop();
    this.#poll(this.#generation, true);
    this.#readPresence(this.#generation);
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
    if (this.#presenceTimer !== null) this.#link.env.clearTimeout(this.#presenceTimer);
    this.#presenceTimer = null;
  }

  /** Reads the members of every followed presence channel, then again after `pollInterval`. */
  async #readPresence(generation) {
    const link = this.#link;
    const { env, opts } = link;
    const wanted = new Set(link.channels());
    const names = link.presenceChannels().filter((name) => wanted.has(name) && !this.#noPresence.has(name));
    if (names.length === 0) return;
    for (const name of names) {
      const url = endpoint(link.baseUrl, `/v1/channels/${channelPath(name)}/presence`);
      try {
        const headers = withToken({ Accept: "application/json" }, link.token());
        const body = await requestJson(env, url, { headers }, opts.requestTimeout);
        if (generation !== this.#generation) return;
        link.presenceList(name, body?.members);
      } catch (error) {
        if (generation !== this.#generation) return;
        if (error.code === "presence_disabled") this.#noPresence.add(name);
        link.error(error);
      }
    }
    this.#presenceTimer = env.setTimeout(() => this.#readPresence(generation), opts.pollInterval);
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
      const headers = withToken({ Accept: "application/json" }, link.token());
      body = await requestJson(env, url, { headers }, wait * 1000 + opts.requestTimeout, controller);
      if (!body || !Array.isArray(body.messages))
        throw new HeraldError("invalid_response", "the poll answer has no messages");
    } catch (error) {
      if (generation !== this.#generation) return;
      if (error.code === "invalid_cursor") for (const name of names) link.reset(name, true);
      if (CHANNEL_REFUSALS.has(error.code)) {
        const headers = withToken({ Accept: "application/json" }, link.token());
        const probe = (name) => pollUrl(link.baseUrl, [name], link.book, { wait: 0, limit: 1, last: 0 });
        const refused = await findRefusedChannels(link, names, error, probe, { headers });
        if (generation !== this.#generation) return;
        if (refused.length > 0) {
          link.refusedChannels(refused);
          return;
        }
      }
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
