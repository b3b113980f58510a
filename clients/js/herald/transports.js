// The four techniques, and what the client needs to know of them: their names in order of preference, what
// each needs from the runtime, and how to open one.
//
// A transport is one connection for every subscribed channel. It reads the book and reports to its `link`;
// the link ignores a transport once the client has moved on, so a late event of a closed connection is harmless.
// Each has `sync()` (the channel set changed) and `close()`; the WebSocket one also `authenticate()` (present a
// renewed token in place) and `publish()`.

import { PollTransport } from "./transports/poll.js";
import { SseTransport } from "./transports/sse.js";
import { WebSocketTransport } from "./transports/websocket.js";

/** The techniques, in the default order of preference. */
export const TRANSPORTS = Object.freeze(["websocket", "sse", "long-poll", "poll"]);

/** The global each technique needs, missing in some runtimes. */
export const REQUIRED_GLOBAL = { websocket: "WebSocket", sse: "EventSource", "long-poll": "fetch", poll: "fetch" };

const FACTORIES = {
  websocket: (link) => new WebSocketTransport(link),
  sse: (link) => new SseTransport(link),
  "long-poll": (link) => new PollTransport(link, { long: true }),
  poll: (link) => new PollTransport(link, { long: false }),
};

/** Opens a transport of `kind` for `link`; throws what its constructor throws. */
export function openTransport(kind, link) {
  return FACTORIES[kind](link);
}
