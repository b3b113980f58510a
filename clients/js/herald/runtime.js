// The browser globals the client uses, each replaceable through the options: how the Node tests drive it without
// a browser, and how the shared connection's hub (in a SharedWorker, without `document`) finds what it has.

/** The runtime for `options`: each global from the options when given, else from `globalThis`. */
export function resolveEnv(options) {
  const g = globalThis;
  return {
    WebSocket: options.WebSocket ?? g.WebSocket,
    EventSource: options.EventSource ?? g.EventSource,
    fetch: options.fetch ?? (g.fetch ? (...args) => g.fetch(...args) : undefined),
    AbortController: options.AbortController ?? g.AbortController,
    setTimeout: options.setTimeout ?? ((fn, ms) => g.setTimeout(fn, ms)),
    clearTimeout: options.clearTimeout ?? ((id) => g.clearTimeout(id)),
    random: options.random ?? Math.random,
    now: options.now ?? (() => Date.now()),
    document: options.document ?? g.document,
    window: options.window ?? g.window,
    // What sharing one connection between the tabs of an origin needs.
    SharedWorker: options.SharedWorker ?? g.SharedWorker,
    BroadcastChannel: options.BroadcastChannel ?? g.BroadcastChannel,
    locks: options.locks ?? g.navigator?.locks,
  };
}
