// The Server-Sent Events transport: one EventSource for every channel, resumed by the client itself (not the
// browser) so that backoff and fallback apply to it as to the others.

import { HeraldError } from "../error.js";
import { checkAccess, endpoint, parseJson, requestJson, withToken } from "../http.js";
import { CHANNEL_REFUSALS, findRefusedChannels } from "../refusals.js";
import { pollUrl } from "./poll.js";

/** The stream of `names` from the book's cursors; with `presence`, the members of its presence channels too. */
function sseUrl(baseUrl, names, book, token, presence = false) {
  const query = new URLSearchParams();
  for (const name of names) query.append("channel", name);
  query.append("envelope", "true");
  if (presence) query.append("presence", "true");
  for (const cursor of book.sinceList(names)) query.append("since", cursor);
  const last = book.replayCount(names);
  if (last > 0) query.append("last", String(last));
  // An EventSource cannot set headers: the token goes in the query (SECURITY.md, "Subscriber tokens").
  if (token) query.append("token", token);
  return `${endpoint(baseUrl, "/v1/sse")}?${query}`;
}

/**
 * The token goes in `?token=` (an EventSource cannot set headers). A new token, or a new channel set, means a new
 * stream from the cursors. An EventSource that cannot open shows no status, so one `fetch` of the same URL asks
 * the server why: a refused token or channel is then handled as such instead of as a broken transport.
 */
export class SseTransport {
  #link;
  #source = null;
  #generation = 0;

  constructor(link) {
    this.#link = link;
    this.#open();
  }

  /** The channel set or the token changed: a new stream, from the cursors. */
  sync() {
    this.close();
    this.#open();
  }

  close() {
    this.#generation++;
    const source = this.#source;
    this.#source = null;
    source?.close();
  }

  #open() {
    const link = this.#link;
    const names = link.channels();
    const followed = new Set(link.presenceChannels());
    const url = sseUrl(link.baseUrl, names, link.book, link.token(), names.some((name) => followed.has(name)));
    const source = new link.env.EventSource(url);
    this.#source = source;
    const generation = this.#generation;
    const live = () => this.#source === source;
    let opened = false;
    const end = () => {
      this.#source = null;
      source.close();
    };
    source.onopen = () => {
      if (!live()) return;
      opened = true;
      link.healthy();
      this.#learnPositions(names, live);
    };
    // envelope=true leaves the `event:` line out, so every message arrives here whatever its event.
    source.onmessage = (event) => {
      if (!live()) return;
      const envelope = parseJson(event.data);
      if (!envelope || typeof envelope !== "object") {
        link.error(new HeraldError("invalid_frame", "the server sent an event that is not a JSON envelope"));
        return;
      }
      link.noteStreamCursor(names, event.lastEventId);
      link.deliver(envelope);
    };
    source.addEventListener("herald.reset", (event) => {
      if (!live()) return;
      const channels = parseJson(event.data)?.channels;
      for (const name of Array.isArray(channels) ? channels : names) link.reset(name, false);
    });
    // Members of the channels whose presence the page follows (the stream also sends those of the others).
    source.addEventListener("herald.presence", (event) => {
      const body = parseJson(event.data);
      if (live() && followed.has(body?.channel)) link.presenceList(body.channel, body.members);
    });
    for (const [name, join] of [
      ["herald.join", true],
      ["herald.leave", false],
    ]) {
      source.addEventListener(name, (event) => {
        const body = parseJson(event.data);
        if (live() && followed.has(body?.channel)) link.presenceChange(body.channel, join, body.member);
      });
    }
    // The server's last word before it ends a stream, e.g. `token_expired`.
    source.addEventListener("herald.error", (event) => {
      if (!live()) return;
      const body = parseJson(event.data);
      end();
      link.failed(new HeraldError(body?.code ?? "stream_ended", body?.message ?? "the server ended the stream"));
    });
    // The browser would reconnect by itself, but without our backoff or fallback: take over.
    source.onerror = () => {
      if (!live()) return;
      end();
      if (opened || !link.env.fetch) link.failed(new HeraldError("stream_failed", "the event stream ended"));
      else this.#diagnose(url, names, () => this.#generation === generation);
    };
  }

  /** Why a stream could not open: a refusal the server explains, or else a failure of the transport. */
  async #diagnose(url, names, current) {
    const link = this.#link;
    const init = { headers: { Accept: "text/event-stream" } };
    const refusal = await checkAccess(link.env, url, init, link.opts.requestTimeout).catch(() => null);
    if (!current()) return;
    if (refusal === null) {
      link.failed(new HeraldError("stream_failed", "the event stream could not open"));
      return;
    }
    if (CHANNEL_REFUSALS.has(refusal.code)) {
      const token = link.token();
      const probe = (name) => sseUrl(link.baseUrl, [name], link.book, token);
      const refused = await findRefusedChannels(link, names, refusal, probe, init);
      if (!current()) return;
      if (refused.length > 0) {
        link.refusedChannels(refused);
        return;
      }
    }
    link.failed(refusal, { fatal: refusal.code === "transport_disabled" });
  }

  /**
   * EventSource hides the position a stream starts from (its first `id:` dispatches no event), so a channel
   * that stays quiet would have no cursor, and a new stream after a drop would skip what was published
   * meanwhile. One poll that waits for nothing tells those channels where they are. Without polling (disabled
   * on the server) the stream's first event gives the position instead.
   */
  async #learnPositions(names, live) {
    const link = this.#link;
    const { env, opts, book } = link;
    const missing = names.filter((name) => !book.resumeCursor(name));
    if (missing.length === 0 || !env.fetch) return;
    const url = pollUrl(link.baseUrl, missing, book, { wait: 0, limit: 1, last: 0 });
    try {
      const headers = withToken({ Accept: "application/json" }, link.token());
      const body = await requestJson(env, url, { headers }, opts.requestTimeout);
      if (live())
        link.noteStreamCursor(
          missing.filter((name) => !book.resumeCursor(name)),
          body?.cursor,
        );
    } catch {
      // Best effort, see above.
    }
  }
}
